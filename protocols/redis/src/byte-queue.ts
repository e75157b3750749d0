// Bytes received but not yet framed. A chunk that arrives on an empty queue is used as is (the
// common case: whole frames per read, framed straight out of the socket's buffer). Appending never
// writes over bytes already handed out as views: it writes past `end` of a buffer the queue owns,
// or moves the tail into a fresh buffer, so frames sliced earlier stay intact (zero-copy slices).
const EMPTY = Buffer.alloc(0)

export class ByteQueue {
  buf: Buffer = EMPTY
  start = 0
  end = 0
  private owned = false

  get length(): number {
    return this.end - this.start
  }

  append(chunk: Buffer): void {
    if (chunk.length === 0) return
    if (this.start === this.end) {
      this.buf = chunk
      this.start = 0
      this.end = chunk.length
      this.owned = false
      return
    }
    if (this.owned && this.end + chunk.length <= this.buf.length) {
      chunk.copy(this.buf, this.end)
      this.end += chunk.length
      return
    }
    // grow geometrically so that a large frame arriving in many reads costs O(n) copies in all
    const size = this.end - this.start + chunk.length
    const next = Buffer.allocUnsafe(Math.max(size * 2, 16 * 1024))
    this.buf.copy(next, 0, this.start, this.end)
    chunk.copy(next, size - chunk.length)
    this.buf = next
    this.start = 0
    this.end = size
    this.owned = true
  }

  /** drops n framed bytes from the front */
  consume(n: number): void {
    this.start += n
    if (this.start >= this.end) {
      this.buf = EMPTY
      this.start = this.end = 0
      this.owned = false
    }
  }
}

export class RespProtocolError extends Error {
  constructor(why: string) {
    super(why)
    this.name = 'RespProtocolError'
  }
}

export const CR = 0x0d
export const LF = 0x0a

/** position of the '\r' of the next CRLF at or after `from`, or -1 */
export function findCRLF(buf: Buffer, from: number, end: number): number {
  let i = buf.indexOf(CR, from)
  while (i !== -1 && i + 1 < end) {
    if (buf[i + 1] === LF) return i
    i = buf.indexOf(CR, i + 1)
  }
  return -1
}

/** strict decimal integer from buf[from, to); NaN when not one */
export function parseInteger(buf: Buffer, from: number, to: number): number {
  if (from >= to || to - from > 20) return NaN
  let i = from
  let neg = false
  if (buf[i] === 0x2d) {
    neg = true
    i++
    if (i === to) return NaN
  }
  let n = 0
  for (; i < to; i++) {
    const c = buf[i]! - 0x30
    if (c < 0 || c > 9) return NaN
    n = n * 10 + c
  }
  return neg ? -n : n
}
