// Cuts a byte stream into whole Postgres messages. A message that arrived whole in one chunk is
// handed out as a subarray of that chunk (no copy); only messages split across chunks are joined,
// once, when their last byte has arrived (only that message is copied, not the chunk it ends in). The startup phase has no code byte (length first), and is
// bounded much lower than the rest: nothing has been authenticated yet.
import { PortcullisError } from '@portcullis/core/errors'

/** Postgres's MAX_STARTUP_PACKET_LENGTH (10,000 bytes) plus the length word: longer is closed on */
export const STARTUP_LIMIT = 10_000 + 4

/**
 * One message, as a range of the chunk it was read in: `raw` (a Buffer of just the message) is made
 * only when asked for. The hot path forwards a message by its range (flow-control.ts emitFrame) and
 * reads its bytes in place, so a reply's messages cost no Buffer view each.
 */
export class Frame {
  #raw: Buffer | undefined
  constructor(
    /** message code ('Q', 'D', …); 0 in the startup phase */
    readonly code: number,
    /** the buffer the message lies in, at [start, end) */
    readonly chunk: Buffer,
    readonly start: number,
    readonly end: number,
    /** offset of the body inside raw (5, or 4 for startup messages) */
    readonly bodyOffset: number,
    /** set on a run of `coalesce` messages: raw holds this many of them back to back */
    readonly count?: number,
  ) {}

  /** the whole message as it came, header included: forward this untouched */
  get raw(): Buffer {
    let raw = this.#raw
    if (raw === undefined) {
      const chunk = this.chunk
      raw = this.#raw = this.start === 0 && this.end === chunk.length ? chunk : chunk.subarray(this.start, this.end)
    }
    return raw
  }

  get length(): number {
    return this.end - this.start
  }

  /** the message's byte at offset i (0 is the code); undefined past its end, as raw[i] would be */
  at(i: number): number | undefined {
    const j = this.start + i
    return j < this.end ? this.chunk[j] : undefined
  }
}

export class Framer {
  private chunks: Buffer[] = []
  private size = 0
  /** bytes the message at the head of chunks needs; 0 while its header is incomplete */
  private needed = 0
  /** true while the next message has no code byte; a startup frame ends a push() */
  startup: boolean
  /** a message code handed out as runs (one Frame with `count`) rather than a Frame each */
  private readonly coalesce: number

  constructor(
    private readonly maxMessageBytes: number,
    opts: { startup?: boolean; coalesce?: number } = {},
  ) {
    this.startup = opts.startup ?? false
    this.coalesce = opts.coalesce ?? -1
  }

  get buffered(): number {
    return this.size
  }

  private checkLength(len: number): number {
    const limit = this.startup ? STARTUP_LIMIT : this.maxMessageBytes
    if (len < 4 || (this.startup && len < 8)) throw new PortcullisError('PROTOCOL_ERROR', `invalid message length ${len}`)
    if (len > limit) throw new PortcullisError('MESSAGE_TOO_LARGE', `message length ${len} exceeds the limit of ${limit} bytes`)
    return len + (this.startup ? 0 : 1)
  }

  /**
   * Appends a chunk and returns the whole messages it completes (appended to `into` when given: the
   * proxy's own queue, no array per read). Throws MESSAGE_TOO_LARGE or PROTOCOL_ERROR as soon as a
   * header shows a bad length, before the body is buffered.
   */
  push(chunk: Buffer, into?: Frame[]): Frame[] {
    if (chunk.length > 0) {
      this.chunks.push(chunk)
      this.size += chunk.length
    }
    if (this.needed === 0 && !this.startup && this.chunks.length > 1 && this.size >= 5) {
      // the header itself was split: read the length from its five bytes alone
      const head = Buffer.allocUnsafe(5)
      let got = 0
      for (const c of this.chunks) {
        got += c.copy(head, got, 0, Math.min(c.length, 5 - got))
        if (got === 5) break
      }
      this.needed = this.checkLength(head.readInt32BE(1))
    }
    // a split message: wait for all of it before joining
    if (this.needed > 0 && this.size < this.needed) return into ?? []
    const frames: Frame[] = into ?? []
    let buf: Buffer
    if (this.chunks.length === 1) buf = this.chunks[0]
    else if (this.needed > 0 && !this.startup) {
      // copy only the split message; the bytes after it stay a view of the chunk they came in
      const msg = Buffer.allocUnsafe(this.needed)
      const tail: Buffer[] = []
      let got = 0
      for (const c of this.chunks) {
        if (got < this.needed) {
          const n = c.copy(msg, got, 0, Math.min(c.length, this.needed - got))
          got += n
          if (n < c.length) tail.push(c.subarray(n))
        } else tail.push(c)
      }
      frames.push(new Frame(msg[0]!, msg, 0, msg.length, 5))
      buf = tail.length === 0 ? Buffer.alloc(0) : tail.length === 1 ? tail[0] : Buffer.concat(tail)
    } else buf = Buffer.concat(this.chunks, this.size)
    // emptied in place: a new array per read batch was a tenth of a query's garbage
    this.chunks.length = 0
    this.size = 0
    this.needed = 0
    let off = 0
    // a big result is thousands of DataRows per chunk: one Frame per run of them, not per row
    let runStart = 0
    let runCount = 0
    for (;;) {
      const header = this.startup ? 4 : 5
      if (buf.length - off < header) break
      const total = this.checkLength(buf.readInt32BE(off + header - 4))
      if (buf.length - off < total) {
        this.needed = total
        break
      }
      const code = this.startup ? 0 : buf[off]
      if (code === this.coalesce) {
        if (runCount === 0) runStart = off
        runCount++
        off += total
        continue
      }
      if (runCount > 0) {
        frames.push(new Frame(this.coalesce, buf, runStart, off, 5, runCount))
        runCount = 0
      }
      frames.push(new Frame(code, buf, off, off + total, header))
      off += total
      if (this.startup) {
        // the caller decides what follows (TLS bytes after SSLRequest, a second startup packet)
        this.startup = false
        break
      }
    }
    if (runCount > 0) frames.push(new Frame(this.coalesce, buf, runStart, off, 5, runCount))
    if (off < buf.length) {
      const rest = buf.subarray(off)
      this.chunks.push(rest)
      this.size = rest.length
    }
    return frames
  }

  /** returns buffered bytes (e.g. to hand them to TLS) and forgets them */
  drain(): Buffer | undefined {
    if (this.size === 0) return undefined
    const b = Buffer.concat(this.chunks, this.size)
    this.chunks = []
    this.size = 0
    this.needed = 0
    return b
  }
}
