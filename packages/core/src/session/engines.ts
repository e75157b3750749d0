// The masking and recording engines live in masking/ and recording/. This file names the part of
// their API the session uses, so the session compiles against the contract and not their internals.
import { compileMaskPlan, EMPTY_MASK_PLAN } from '../masking/index.ts'
import * as recording from '../recording/index.ts'
import type { MaskPlan, Principal, Protocol, RecordType } from '../types.ts'
import type { MaskingRuleEntry } from '../config/types.ts'

export interface SessionRecorder {
  readonly path: string
  readonly failed: Error | undefined
  readonly backlog: number
  record(type: RecordType, payload: Record<string, unknown>): void
  close(reason?: string): Promise<void>
}

export interface RecorderOptions {
  dir: string
  sessionId: string
  target: string
  protocol: Protocol
  principal: Principal
  sign?: { hmacKey?: Buffer }
}

interface RecordingApi {
  openRecorder(opts: RecorderOptions): SessionRecorder
}

const recordingApi = recording as unknown as Partial<RecordingApi>

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

export function openRecorder(opts: RecorderOptions): SessionRecorder | undefined {
  if (typeof recordingApi.openRecorder !== 'function') return undefined
  return recordingApi.openRecorder(opts)
}
