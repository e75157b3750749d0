// Messages queued for one socket write (and one record). Untouched messages are ranges of the chunk
// they were read in, usually back to back: those are handed out as a view of that chunk, no copy.
// A batch that mixes chunks or holds rewritten messages is built in one buffer the box keeps and
// reuses once the socket has taken the bytes: a fresh buffer per batch costs a page fault per
// 4 KiB on first touch and leaves garbage for the collector, both more than the copy.

/** a built batch's buffer is kept for the next one up to this size (bigger ones are let go) */
const KEEP_BYTES = 320 * 1024
const MIN_BYTES = 16 * 1024

export class Outbox {
  /** the contiguous range being extended: [runStart, runEnd) of `run`'s ArrayBuffer */
  private run: Buffer | undefined
  private runStart = 0
  private runEnd = 0
  /** bytes copied so far: [0, pos) of `buf` */
  private buf: Buffer | undefined
  /** the buffer of the batch last taken, until release() or lendToWrite() */
  private lent: Buffer | undefined
  /** buffers of batches a socket still writes, oldest first */
  private readonly writing: Buffer[] = []
  private spare: Buffer | undefined
  /** the size of recent batches: a new buffer is made this big, not grown per message */
  private hint = MIN_BYTES
  pos = 0
  bytes = 0

  /** queues the whole of `buf` */
  add(buf: Buffer): void {
    this.addRange(buf, 0, buf.length)
  }

  /** queues buf[start, end) without making a view of it when it extends the run */
  addRange(buf: Buffer, start: number, end: number): void {
    const n = end - start
    if (n <= 0) return
    this.bytes += n
    const at = buf.byteOffset + start
    if (this.pos === 0) {
      const run = this.run
      if (run === undefined) {
        this.run = buf
        this.runStart = at
        this.runEnd = at + n
        return
      }
      if (run.buffer === buf.buffer && at === this.runEnd) {
        this.runEnd += n
        return
      }
      this.copyRun()
    }
    const out = this.room(n)
    buf.copy(out, this.pos, start, end)
    this.pos += n
  }

  /**
   * The buffer to write `n` bytes into at `pos`, for a message built in place; commit(n) queues
   * them. Nothing else may be added in between.
   */
  reserve(n: number): Buffer {
    if (this.pos === 0 && this.run !== undefined) this.copyRun()
    return this.room(n)
  }

  commit(n: number): void {
    this.pos += n
    this.bytes += n
  }

  private copyRun(): void {
    const run = this.run!
    const n = this.runEnd - this.runStart
    const out = this.room(n)
    out.set(new Uint8Array(run.buffer, this.runStart, n), this.pos)
    this.pos += n
    this.run = undefined
  }

  private room(n: number): Buffer {
    const need = this.pos + n
    let out = this.buf
    if (out === undefined) {
      const spare = this.spare
      this.spare = undefined
      out = spare !== undefined && spare.length >= need ? spare : Buffer.allocUnsafeSlow(Math.max(this.hint, need, spare === undefined ? 0 : spare.length * 2))
      this.buf = out
    } else if (need > out.length) {
      const grown = Buffer.allocUnsafeSlow(Math.max(out.length * 2, need))
      out.copy(grown, 0, 0, this.pos)
      this.buf = out = grown
    }
    return out
  }

  /**
   * Everything queued as one Buffer, and empties the box; undefined when empty. A built batch is a
   * view of the box's buffer: call release() once the socket and the recorder are done with it.
   */
  take(): Buffer | undefined {
    this.bytes = 0
    if (this.pos === 0) {
      const run = this.run
      if (run === undefined) return undefined
      this.run = undefined
      const n = this.runEnd - this.runStart
      return run.byteOffset === this.runStart && run.length === n ? run : Buffer.from(run.buffer, this.runStart, n)
    }
    if (this.run !== undefined) this.copyRun()
    const out = this.buf!.subarray(0, this.pos)
    if (this.pos > this.hint) this.hint = Math.min(this.pos + (this.pos >> 2), KEEP_BYTES)
    this.lent = this.buf
    this.buf = undefined
    this.pos = 0
    return out
  }

  /**
   * After take(): `reusable` when nothing holds the batch any longer (the socket wrote it through
   * and the recorder copied it); otherwise its buffer is left to them and a new one is taken.
   */
  release(reusable: boolean): void {
    const lent = this.lent
    this.lent = undefined
    if (reusable && lent !== undefined && lent.length <= KEEP_BYTES) this.spare = lent
  }

  /**
   * After take(), for a socket write: the callback to pass to write() when the batch was built in
   * the box's buffer (which comes back when the socket has written it), else undefined. A socket
   * behind its reader holds several batches: each buffer returns in write order.
   */
  lendToWrite(): (() => void) | undefined {
    const lent = this.lent
    if (lent === undefined) return undefined
    this.lent = undefined
    this.writing.push(lent)
    return this.written
  }

  private readonly written = (): void => {
    const buf = this.writing.shift()
    if (buf !== undefined && buf.length <= KEEP_BYTES) this.spare = buf
  }
}
