// Frames replies from the upstream, RESP2 and RESP3, without decoding them: a reply's bytes are
// found by counting the values still owed (an aggregate of n adds n, a map or attribute 2n) and are
// handed on as one view of the received bytes. The scan resumes where it stopped when a reply
// arrives in pieces. Decoding (for masking) is separate: see reply.ts.
import { ByteQueue, RespProtocolError, findCRLF, parseInteger } from './byte-queue.ts'

export interface RedisReply {
  /** the reply exactly as the upstream sent it (attributes included) */
  raw: Buffer
  /** RESP type byte of the reply itself (after any attribute): '+', '-', '*', '>', '%', … */
  type: number
}

export class ReplyFramer {
  private readonly q = new ByteQueue()
  // scan state of the reply in progress, relative to q.start
  private pos = 0
  private owed = 1
  private type = -1
  // values owed when the top-level value itself starts (past any attribute before it)
  private valueOwed = 1

  constructor(private readonly maxBulk: number = 512 * 1024 * 1024) {}

  push(chunk: Buffer): RedisReply[] {
    this.q.append(chunk)
    const out: RedisReply[] = []
    while (this.q.length > 0 && this.scan()) {
      const raw = this.q.buf.subarray(this.q.start, this.q.start + this.pos)
      out.push({ raw, type: this.type })
      this.q.consume(this.pos)
      this.pos = 0
      this.owed = 1
      this.type = -1
      this.valueOwed = 1
    }
    return out
  }

  // true when a whole reply lies at the front of the queue
  private scan(): boolean {
    const { buf, start, end } = this.q
    while (this.owed > 0) {
      const at = start + this.pos
      if (at >= end) return false
      const t = buf[at]!
      const eol = findCRLF(buf, at + 1, end)
      if (eol === -1) {
        if (end - at > 64 * 1024 && t !== 0x2d && t !== 0x2b) throw new RespProtocolError('reply header too long')
        return false
      }
      // the type of the top-level value: the first byte that is not an attribute
      if (this.type === -1 && this.owed === this.valueOwed) {
        if (t === 0x7c) this.valueOwed = this.owed
        else this.type = t
      }
      switch (t) {
        case 0x2b: // '+' simple string
        case 0x2d: // '-' error
        case 0x3a: // ':' integer
        case 0x5f: // '_' null
        case 0x2c: // ',' double
        case 0x23: // '#' boolean
        case 0x28: // '(' big number
          this.pos = eol + 2 - start
          this.owed--
          break
        case 0x24: // '$' bulk string
        case 0x21: // '!' bulk error
        case 0x3d: { // '=' verbatim string
          const len = parseInteger(buf, at + 1, eol)
          if (Number.isNaN(len) || len < -1) throw new RespProtocolError('invalid bulk length in reply')
          if (len > this.maxBulk) throw new RespProtocolError(`reply bulk length ${len} over the limit of ${this.maxBulk}`)
          const next = len < 0 ? eol + 2 : eol + 2 + len + 2
          if (next > end) return false
          this.pos = next - start
          this.owed--
          break
        }
        case 0x2a: // '*' array
        case 0x7e: // '~' set
        case 0x3e: // '>' push
        case 0x25: // '%' map
        case 0x7c: { // '|' attribute: precedes the value it describes, which is still owed
          const n = parseInteger(buf, at + 1, eol)
          if (Number.isNaN(n) || n < -1) throw new RespProtocolError('invalid aggregate length in reply')
          const items = n < 0 ? 0 : t === 0x25 || t === 0x7c ? 2 * n : n
          this.pos = eol + 2 - start
          this.owed += items - (t === 0x7c ? 0 : 1)
          break
        }
        default:
          throw new RespProtocolError(`unexpected reply type byte 0x${t.toString(16)}`)
      }
    }
    return true
  }
}
