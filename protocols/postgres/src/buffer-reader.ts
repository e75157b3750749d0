// Reads Postgres wire types (big-endian integers, NUL-terminated strings) from one message body.
// Out-of-bounds reads throw a PROTOCOL_ERROR rather than returning garbage: malformed input must
// end the session with a reason, never crash the process.
import { PortcullisError } from '@portcullis/core/errors'

export class BufferReader {
  offset: number
  constructor(
    readonly buffer: Buffer,
    offset = 0,
    readonly end = buffer.length,
  ) {
    this.offset = offset
  }

  get remaining(): number {
    return this.end - this.offset
  }

  private need(n: number): void {
    if (n < 0 || this.offset + n > this.end) throw new PortcullisError('PROTOCOL_ERROR', 'message is shorter than its fields')
  }

  int8(): number {
    this.need(1)
    return this.buffer[this.offset++]
  }

  int16(): number {
    this.need(2)
    const v = this.buffer.readInt16BE(this.offset)
    this.offset += 2
    return v
  }

  /**
   * A count (of columns, parameters, format codes): Postgres and libpq read these 16 bits unsigned
   * (pq_getmsgint, pqGetInt), so a count of 32768 or more is that many, not a negative number that
   * would skip the fields Postgres then reads
   */
  uint16(): number {
    this.need(2)
    const v = this.buffer.readUInt16BE(this.offset)
    this.offset += 2
    return v
  }

  int32(): number {
    this.need(4)
    const v = this.buffer.readInt32BE(this.offset)
    this.offset += 4
    return v
  }

  cstring(): string {
    const nul = this.buffer.indexOf(0, this.offset)
    if (nul < 0 || nul >= this.end) throw new PortcullisError('PROTOCOL_ERROR', 'string is not NUL-terminated')
    const s = this.buffer.toString('utf8', this.offset, nul)
    this.offset = nul + 1
    return s
  }

  /** a view, not a copy */
  bytes(n: number): Buffer {
    this.need(n)
    const b = this.buffer.subarray(this.offset, this.offset + n)
    this.offset += n
    return b
  }

  rest(): Buffer {
    return this.bytes(this.remaining)
  }
}
