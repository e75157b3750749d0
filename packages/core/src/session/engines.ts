// The masking and recording engines live in masking/ and recording/. This file names the part of
// their API the session uses, so the session compiles against the contract and not their internals.
import { PortcullisError } from '../errors.ts'
import * as masking from '../masking/index.ts'
import * as recording from '../recording/index.ts'
import type { MaskMethod, MaskPlan, Principal, Protocol, RecordType } from '../types.ts'
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

interface MaskingApi {
  compileMaskPlan(
    rules: MaskingRuleEntry[],
    ctx: { target: string; subject: string; groups: string[] },
    opts: { hashKey: Buffer },
  ): MaskPlan
  EMPTY_MASK_PLAN: MaskPlan
}

interface RecordingApi {
  openRecorder(opts: RecorderOptions): SessionRecorder
}

const maskingApi = masking as unknown as Partial<MaskingApi>
const recordingApi = recording as unknown as Partial<RecordingApi>

/** Masks nothing: used before authentication and when no masking rule applies. */
const NOTHING_MASKED: MaskPlan = {
  empty: true,
  forColumn: () => undefined,
  forField: () => undefined,
  forKey: () => undefined,
  hasDetectors: false,
  detectorMethod: 'redact' as MaskMethod,
  apply: (method, value) => (method === 'null' ? null : method === 'redact' ? '[redacted]' : value),
  scan: text => ({ text, count: 0 }),
  maxMatchLength: 0,
}

export function emptyMaskPlan(): MaskPlan {
  return maskingApi.EMPTY_MASK_PLAN ?? NOTHING_MASKED
}

export function compileMasks(
  rules: MaskingRuleEntry[],
  ctx: { target: string; subject: string; groups: string[] },
  hashKey: Buffer,
): MaskPlan {
  if (typeof maskingApi.compileMaskPlan !== 'function') {
    // Fail closed: masking rules exist but no engine to apply them.
    if (rules.length > 0) throw new PortcullisError('CONFIG_INVALID', 'masking rules are configured but the masking engine is unavailable')
    return emptyMaskPlan()
  }
  return maskingApi.compileMaskPlan(rules, ctx, { hashKey })
}

export function openRecorder(opts: RecorderOptions): SessionRecorder | undefined {
  if (typeof recordingApi.openRecorder !== 'function') return undefined
  return recordingApi.openRecorder(opts)
}
