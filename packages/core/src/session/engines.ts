// The session's view of the masking and recording engines (masking/, recording/): one place that
// decides when a plan is compiled and how a recorder is opened.
import { compileMaskPlan, EMPTY_MASK_PLAN } from '../masking/index.ts'
import { openRecorder as openFileRecorder, type Recorder, type RecorderOptions } from '../recording/index.ts'
import type { MaskPlan } from '../types.ts'
import type { MaskingRuleEntry } from '../config/types.ts'

export type SessionRecorder = Recorder

export function emptyMaskPlan(): MaskPlan {
  return EMPTY_MASK_PLAN
}

export function compileMasks(
  rules: MaskingRuleEntry[],
  ctx: { target: string; subject: string; groups: string[] },
  hashKey: Buffer,
): MaskPlan {
  if (rules.length === 0) return EMPTY_MASK_PLAN
  return compileMaskPlan(rules, ctx, { hashKey })
}

export function openRecorder(opts: RecorderOptions): SessionRecorder {
  return openFileRecorder(opts)
}
