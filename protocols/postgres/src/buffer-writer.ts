// Builds one Postgres message: code byte, int32 length (filled in by finish), fields.
export class BufferWriter {
  private buf: Buffer
  private len = 0

  constructor(size = 256) {
    this.buf = Buffer.allocUnsafe(size)
  }

  private ensure(n: number): void {
    if (this.len + n <= this.buf.length) return
    const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.len + n))
    this.buf.copy(next, 0, 0, this.len)
    this.buf = next
  }

  int8(v: number): this {
    this.ensure(1)
    this.buf[this.len++] = v
    return this
  }

  int16(v: number): this {
    this.ensure(2)
    this.buf.writeInt16BE(v, this.len)
    this.len += 2
    return this
  }

  int32(v: number): this {
    this.ensure(4)
    this.buf.writeInt32BE(v, this.len)
    this.len += 4
    return this
  }

  cstring(s: string): this {
    const n = Buffer.byteLength(s)
    this.ensure(n + 1)
    this.buf.write(s, this.len)
    this.len += n
    this.buf[this.len++] = 0
    return this
  }

  bytes(b: Uint8Array): this {
    this.ensure(b.length)
    this.buf.set(b, this.len)
    this.len += b.length
    return this
  }

  /** a message with a code byte ('Q', 'E', …) */
  message(code: string): Buffer {
    const out = Buffer.allocUnsafe(5 + this.len)
    out[0] = code.charCodeAt(0)
    out.writeInt32BE(4 + this.len, 1)
    this.buf.copy(out, 5, 0, this.len)
    this.len = 0
    return out
  }

  /** a startup-phase message: no code byte */
  startup(): Buffer {
    const out = Buffer.allocUnsafe(4 + this.len)
    out.writeInt32BE(4 + this.len, 0)
    this.buf.copy(out, 4, 0, this.len)
    this.len = 0
    return out
  }
}
