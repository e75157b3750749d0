// The .pcr framing, shared by the writer and the readers. FORMAT.md is the prose version.
import { Packr, RESET_BUFFER_MODE, Unpackr } from 'msgpackr'
import type { RecordType } from '../types.ts'

/** 'PCR', format version 1, then bytes that any text-mode mangling (CRLF, 7-bit) would change */
export const MAGIC = Buffer.from([0x50, 0x43, 0x52, 0x01, 0x0d, 0x0a, 0x1a, 0x0a])
export const FORMAT_VERSION = 1
/** u32 length + u32 complement of the length */
export const FRAME_HEADER = 8
export const HASH_BYTES = 32
/** a frame's length covers type byte + body + hash; anything larger is not a frame we wrote */
export const MAX_FRAME = 256 * 1024 * 1024
export const GENESIS = Buffer.alloc(HASH_BYTES)
export const SEAL_CONTEXT = Buffer.from('portcullis-seal-v1\0')

export const TYPE_CODES: Record<RecordType, number> = {
  'session-start': 1,
  request: 2,
  decision: 3,
  response: 4,
  error: 5,
  event: 6,
  'session-end': 7,
  seal: 8,
}
export const TYPE_NAMES: readonly (RecordType | undefined)[] = (() => {
  const names: (RecordType | undefined)[] = []
  for (const [name, code] of Object.entries(TYPE_CODES)) names[code] = name as RecordType
  return names
})()

/** Plain msgpack (no msgpackr record extension) so any msgpack reader can decode a body alone. */
export const packr = new Packr({ useRecords: false })
/**
 * Encodes into the packer's own reused buffer: the result is valid until the next call, which is
 * all the recorder needs (it copies the body into its batch at once) and saves an allocation per record.
 */
export function packTransient(value: unknown): Buffer {
  return packr.pack(value, RESET_BUFFER_MODE)
}
/** copyBuffers: payload Buffers must outlive the read buffer they were decoded from */
export const unpackr = new Unpackr({ useRecords: false, mapsAsObjects: true, copyBuffers: true })

export interface RecordingHeader {
  magic: 'portcullis-recording'
  version: number
  sessionId: string
  target: string
  protocol: string
  principal: { subject: string; groups: string[]; issuer: string; expiresAt?: number }
  /** ISO time the recording started */
  start: string
}

export interface SealPayload {
  /** records before the seal (header included) */
  records: number
  /** chain hash of the last record before the seal */
  lastHash: Buffer
  reason?: string
  /** records dropped while the recorder was failed or over its buffer bound */
  dropped?: number
  failed?: string
  hmac?: Buffer
  ed25519?: Buffer
}

export interface RecordEntry {
  index: number
  type: RecordType
  /** ms since epoch */
  time: number
  payload: Record<string, unknown>
}

/** What a seal signature covers: context, chain hash before the seal, and the record count. */
export function sealMessage(lastHash: Buffer, records: number): Buffer {
  const msg = Buffer.alloc(SEAL_CONTEXT.length + HASH_BYTES + 8)
  SEAL_CONTEXT.copy(msg, 0)
  lastHash.copy(msg, SEAL_CONTEXT.length)
  msg.writeBigUInt64BE(BigInt(records), SEAL_CONTEXT.length + HASH_BYTES)
  return msg
}
