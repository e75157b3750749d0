// verifyRecording: walks the chain once, hashing each frame as it streams past; decodes only the
// header and the seal.
import { createHash, createHmac, hash as oneShotHash, timingSafeEqual, verify as cryptoVerify, type KeyObject } from 'node:crypto'
import { GENESIS, HASH_BYTES, TYPE_CODES, sealMessage, type RecordingHeader, type SealPayload } from './format.ts'
import { END, FrameSource, NEED_MORE, decodeFrame } from './reader.ts'

export interface VerifyResult {
  /**
   * intact: sealed, chain whole, signature valid when a key was given · tampered: a record was changed,
   * dropped, swapped or added, or the signature is bad or missing · truncated: the file ends inside a
   * record · unsealed: ends cleanly after a whole record but has no seal (a writer that crashed)
   */
  status: 'intact' | 'tampered' | 'truncated' | 'unsealed'
  /** records that verified (header and seal included) */
  records: number
  /** where it went wrong: record number (0 is the header) and byte offset of that record */
  problem?: { record: number; offset: number; message: string }
  header?: RecordingHeader
  /** checked only when a key was given */
  signature?: 'valid' | 'invalid' | 'absent'
  /** seal facts: why the session ended, records the recorder had to drop */
  seal?: { reason?: string; dropped?: number; failed?: string; time: number }
}

export interface VerifyOptions {
  hmacKey?: Buffer
  publicKey?: KeyObject
}

export async function verifyRecording(file: string, opts: VerifyOptions = {}): Promise<VerifyResult> {
  const src = await FrameSource.open(file)
  let records = 0
  let header: RecordingHeader | undefined
  let seal: SealPayload | undefined
  let sealTime = 0
  let sealRecord = -1
  let sealOffset = 0
  const result = (status: VerifyResult['status'], problem?: VerifyResult['problem']): VerifyResult => {
    const r: VerifyResult = { status, records }
    if (problem) r.problem = problem
    if (header) r.header = header
    return r
  }
  try {
    for (;;) {
      const step = src.next()
      if (step === NEED_MORE) {
        await src.fill()
        continue
      }
      if (step === END) break
      const { buf, start, end, offset } = src
      if (seal !== undefined) {
        return result('tampered', { record: records, offset, message: `record ${records} follows the seal` })
      }
      const hashAt = end - HASH_BYTES
      // Past the first frame, the 32 bytes before `start` are the previous frame's stored hash (the
      // frame source keeps them across reads), which matched the computed one: hash the contiguous
      // slice in one shot. A latin1 string compared in place allocates nothing per record.
      const h =
        records === 0
          ? createHash('sha256').update(GENESIS).update(buf.subarray(start, hashAt)).digest('binary')
          : oneShotHash('sha256', buf.subarray(start - HASH_BYTES, hashAt), 'binary')
      if (!sameBytes(h, buf, hashAt)) {
        return result('tampered', {
          record: records,
          offset,
          message: `record ${records} does not match the hash chain (changed, dropped, reordered or inserted records)`,
        })
      }
      if (records === 0 || src.type === TYPE_CODES.seal) {
        let entry
        try {
          entry = decodeFrame(buf, start, end, src.type)
        } catch {
          return result('tampered', { record: records, offset, message: `record ${records} does not decode` })
        }
        if (records === 0) {
          const p = entry.payload as unknown as RecordingHeader
          if (src.type !== TYPE_CODES['session-start'] || p.magic !== 'portcullis-recording') {
            return result('tampered', { record: 0, offset, message: 'the first record is not a recording header' })
          }
          header = p
        }
        if (src.type === TYPE_CODES.seal) {
          seal = entry.payload as unknown as SealPayload
          sealTime = entry.time
          sealRecord = records
          sealOffset = offset
          const prev = buf.subarray(start - HASH_BYTES, start)
          if (seal.records !== records || !Buffer.isBuffer(seal.lastHash) || !seal.lastHash.equals(prev)) {
            return result('tampered', { record: records, offset, message: 'the seal does not match the records before it' })
          }
        }
      }
      records++
    }
    const end = src.result
    if (end.kind === 'malformed') {
      return result('tampered', { record: records, offset: end.offset, message: end.offset === 0 ? end.message : `record ${records}: ${end.message}` })
    }
    if (end.kind === 'partial') {
      return result('truncated', { record: records, offset: end.offset, message: `record ${records}: ${end.message}` })
    }
    if (header === undefined) return result('truncated', { record: 0, offset: 8, message: 'the file holds no header record' })
    if (seal === undefined) return result('unsealed')

    const r = result('intact')
    r.seal = { time: sealTime }
    if (seal.reason !== undefined) r.seal.reason = seal.reason
    if (seal.dropped !== undefined) r.seal.dropped = seal.dropped
    if (seal.failed !== undefined) r.seal.failed = seal.failed
    if (opts.hmacKey !== undefined || opts.publicKey !== undefined) {
      const msg = sealMessage(seal.lastHash, seal.records)
      let sig: 'valid' | 'invalid' | 'absent' = 'valid'
      if (opts.hmacKey !== undefined) {
        if (!Buffer.isBuffer(seal.hmac)) sig = 'absent'
        else {
          const want = createHmac('sha256', opts.hmacKey).update(msg).digest()
          if (seal.hmac.length !== want.length || !timingSafeEqual(seal.hmac, want)) sig = 'invalid'
        }
      }
      if (opts.publicKey !== undefined && sig === 'valid') {
        if (!Buffer.isBuffer(seal.ed25519)) sig = 'absent'
        else if (!cryptoVerify(null, msg, opts.publicKey, seal.ed25519)) sig = 'invalid'
      }
      r.signature = sig
      if (sig !== 'valid') {
        r.status = 'tampered'
        r.problem = {
          record: sealRecord,
          offset: sealOffset,
          message: sig === 'absent' ? 'the seal carries no signature for the given key' : 'the seal signature does not verify',
        }
      }
    }
    return r
  } finally {
    await src.close()
  }
}


function sameBytes(latin1: string, buf: Buffer, at: number): boolean {
  for (let i = 0; i < HASH_BYTES; i++) if (latin1.charCodeAt(i) !== buf[at + i]) return false
  return true
}
