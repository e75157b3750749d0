// Reading .pcr files: a chunked frame source (no whole-file read, no copy or object per frame)
// shared by the verifier and readRecording.
import { type FileHandle, open } from 'node:fs/promises'
import { FRAME_HEADER, HASH_BYTES, MAGIC, MAX_FRAME, TYPE_NAMES, unpackr, type RecordEntry } from './format.ts'

const READ_SIZE = 4 * 1024 * 1024

export type WalkEnd =
  | { kind: 'clean' }
  /** the file ends inside a frame (or inside the magic) */
  | { kind: 'partial'; offset: number; message: string }
  /** bytes that are not a frame: a bad magic, a damaged length header, an unknown type */
  | { kind: 'malformed'; offset: number; message: string }

const FRAME = 0
const NEED_MORE = 1
const END = 2

/** After next() returns FRAME, buf[start, end) is one whole frame (header … hash) at file `offset`. */
export class FrameSource {
  buf = Buffer.allocUnsafe(READ_SIZE)
  start = 0
  end = 0
  type = 0
  offset = 0
  result: WalkEnd = { kind: 'clean' }
  private have = 0
  private base = 0
  private at = 0
  private eof = false
  private started = false

  private constructor(private readonly fh: FileHandle) {}

  static async open(file: string): Promise<FrameSource> {
    const src = new FrameSource(await open(file, 'r'))
    await src.fill()
    return src
  }

  close(): Promise<void> {
    return this.fh.close()
  }

  /**
   * Slides the unread tail to the front (growing the buffer for a big frame) and reads more. The 32
   * bytes before the tail come along: they are the previous frame's hash, which the verifier hashes
   * in one slice with the next frame.
   */
  async fill(): Promise<void> {
    const rest = this.have - this.at
    const keep = Math.min(this.at, HASH_BYTES)
    const len = rest >= FRAME_HEADER ? this.buf.readUInt32BE(this.at) : 0
    const need = keep + FRAME_HEADER + (len <= MAX_FRAME ? len : 0)
    if (need > this.buf.length) {
      const bigger = Buffer.allocUnsafe(need)
      this.buf.copy(bigger, 0, this.at - keep, this.have)
      this.buf = bigger
    } else if (this.at > keep) this.buf.copy(this.buf, 0, this.at - keep, this.have)
    this.base += this.at - keep
    this.have = rest + keep
    this.at = keep
    while (!this.eof && this.have < this.buf.length) {
      const { bytesRead } = await this.fh.read(this.buf, this.have, this.buf.length - this.have, this.base + this.have)
      if (bytesRead === 0) this.eof = true
      this.have += bytesRead
    }
  }

  next(): typeof FRAME | typeof NEED_MORE | typeof END {
    const buf = this.buf
    const rest = this.have - this.at
    if (!this.started) {
      if (rest < MAGIC.length) {
        if (!this.eof) return NEED_MORE
        this.result = buf.subarray(0, rest).equals(MAGIC.subarray(0, rest))
          ? { kind: 'partial', offset: 0, message: 'the file ends inside the magic' }
          : { kind: 'malformed', offset: 0, message: 'not a Portcullis recording (bad magic)' }
        return END
      }
      if (!buf.subarray(0, MAGIC.length).equals(MAGIC)) {
        this.result = { kind: 'malformed', offset: 0, message: 'not a Portcullis recording (bad magic)' }
        return END
      }
      this.started = true
      this.at = MAGIC.length
      return this.next()
    }
    const offset = this.base + this.at
    if (rest === 0 && this.eof) {
      this.result = { kind: 'clean' }
      return END
    }
    if (rest < FRAME_HEADER) {
      if (!this.eof) return NEED_MORE
      this.result = { kind: 'partial', offset, message: `the file ends inside a record header (${rest} of ${FRAME_HEADER} bytes)` }
      return END
    }
    const len = buf.readUInt32BE(this.at)
    if (~len >>> 0 !== buf.readUInt32BE(this.at + 4) || len < 1 + HASH_BYTES || len > MAX_FRAME) {
      this.result = { kind: 'malformed', offset, message: 'record header is damaged (length and its complement disagree)' }
      return END
    }
    if (rest < FRAME_HEADER + len) {
      if (!this.eof) return NEED_MORE
      this.result = { kind: 'partial', offset, message: `the file ends inside a record (${rest} of ${FRAME_HEADER + len} bytes)` }
      return END
    }
    const type = buf[this.at + FRAME_HEADER]
    if (TYPE_NAMES[type] === undefined) {
      this.result = { kind: 'malformed', offset, message: `unknown record type ${type}` }
      return END
    }
    this.start = this.at
    this.end = this.at + FRAME_HEADER + len
    this.type = type
    this.offset = offset
    this.at = this.end
    return FRAME
  }
}

export { FRAME, NEED_MORE, END }

/** Decodes one frame's body: [index, time, payload]. */
export function decodeFrame(buf: Buffer, start: number, end: number, type: number): RecordEntry {
  const body = unpackr.unpack(buf.subarray(start + FRAME_HEADER + 1, end - HASH_BYTES)) as [number, number, Record<string, unknown>]
  return { index: body[0], type: TYPE_NAMES[type]!, time: body[1], payload: body[2] ?? {} }
}

/**
 * Every complete record in file order, header and seal included. A crashed writer's partial last
 * record ends the iteration quietly: what was flushed stays readable; a body that does not decode
 * comes as `{ undecodable: reason }`. Reading is not verifying (use verifyRecording); a file that is
 * not a recording at all throws.
 */
export async function* readRecording(file: string): AsyncGenerator<RecordEntry> {
  const src = await FrameSource.open(file)
  try {
    let position = 0
    for (;;) {
      const r = src.next()
      if (r === FRAME) {
        let entry: RecordEntry
        try {
          entry = decodeFrame(src.buf, src.start, src.end, src.type)
        } catch (err) {
          // a damaged body: say so in place and go on, so a transcript of a tampered file still reads
          entry = { index: position, type: TYPE_NAMES[src.type]!, time: 0, payload: { undecodable: (err as Error).message } }
        }
        position++
        yield entry
      } else if (r === NEED_MORE) await src.fill()
      else {
        if (src.result.kind === 'malformed' && src.result.offset === 0) throw new Error(`${file}: ${src.result.message}`)
        return
      }
    }
  } finally {
    await src.close()
  }
}
