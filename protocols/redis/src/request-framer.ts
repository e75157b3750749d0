// Frames client requests: RESP arrays of bulk strings (what every client library sends) and inline
// lines (redis-cli's fallback, telnet). Arguments are views into the received bytes; nothing is
// decoded here. Bounds are enforced before any byte of a frame is buffered past them, so a
// hostile length cannot make us allocate.
import { ByteQueue, RespProtocolError, findCRLF, parseInteger, LF, CR } from './byte-queue.ts'
import { splitArgs } from './split-args.ts'

export interface RedisRequest {
  /** command name and arguments, views into the received bytes */
  args: Buffer[]
  /** the frame exactly as the client sent it */
  raw: Buffer
  inline: boolean
}

export interface RequestLimits {
  /** longest bulk string (target.limits.maxMessageBytes) */
  maxBulk: number
  /** most elements in one request array */
  maxArray: number
  /** longest inline command line */
  maxInline: number
}

export const DEFAULT_REQUEST_LIMITS: RequestLimits = { maxBulk: 512 * 1024 * 1024, maxArray: 1024 * 1024, maxInline: 64 * 1024 }

export class RequestFramer {
  private readonly q = new ByteQueue()
  private readonly limits: RequestLimits
  // an array frame in progress, resumed when more bytes come (offsets relative to q.start)
  private pending: { args: Buffer[]; count: number; pos: number } | undefined

  constructor(limits: Partial<RequestLimits> = {}) {
    this.limits = { ...DEFAULT_REQUEST_LIMITS, ...limits }
  }

  /** bytes buffered and not yet framed */
  get buffered(): number {
    return this.q.length
  }

  /** set once input was malformed: why. Nothing is framed after it */
  error: string | undefined

  /**
   * appends bytes and returns every complete request. Bad input throws RespProtocolError, unless
   * `onError` is given: then the requests framed before it are returned and `error` says why.
   */
  push(chunk: Buffer, onError: 'throw' | 'stop' = 'throw'): RedisRequest[] {
    if (this.error !== undefined) return []
    this.q.append(chunk)
    const out: RedisRequest[] = []
    try {
      for (;;) {
        if (this.q.length === 0) break
        const req = this.q.buf[this.q.start] === 0x2a /* '*' */ || this.pending ? this.array() : this.inline()
        if (req === undefined) break
        if (req !== null) out.push(req)
      }
    } catch (err) {
      if (onError === 'throw' || !(err instanceof RespProtocolError)) throw err
      this.error = err.message
    }
    return out
  }

  // undefined: need more bytes; null: an empty request that Redis ignores
  private array(): RedisRequest | null | undefined {
    const { buf, start, end } = this.q
    let p = this.pending
    if (!p) {
      const eol = findCRLF(buf, start + 1, end)
      if (eol === -1) {
        if (end - start > 32) throw new RespProtocolError('invalid multibulk length')
        return undefined
      }
      const count = parseInteger(buf, start + 1, eol)
      if (Number.isNaN(count)) throw new RespProtocolError('invalid multibulk length')
      if (count > this.limits.maxArray) throw new RespProtocolError(`multibulk length ${count} over the limit of ${this.limits.maxArray}`)
      if (count <= 0) {
        this.q.consume(eol + 2 - start)
        return null
      }
      p = this.pending = { args: [], count, pos: eol + 2 - start }
    }
    while (p.args.length < p.count) {
      const at = this.q.start + p.pos
      if (at >= this.q.end) return undefined
      if (this.q.buf[at] !== 0x24 /* '$' */) throw new RespProtocolError(`expected '$', got '${String.fromCharCode(this.q.buf[at]!)}'`)
      const eol = findCRLF(this.q.buf, at + 1, this.q.end)
      if (eol === -1) {
        if (this.q.end - at > 32) throw new RespProtocolError('invalid bulk length')
        return undefined
      }
      const len = parseInteger(this.q.buf, at + 1, eol)
      if (Number.isNaN(len) || len < 0) throw new RespProtocolError('invalid bulk length')
      if (len > this.limits.maxBulk) throw new RespProtocolError(`bulk length ${len} over the limit of ${this.limits.maxBulk}`)
      const dataEnd = eol + 2 + len
      if (dataEnd + 2 > this.q.end) return undefined
      if (this.q.buf[dataEnd] !== CR || this.q.buf[dataEnd + 1] !== LF) throw new RespProtocolError('bulk string not terminated by CRLF')
      p.args.push(this.q.buf.subarray(eol + 2, dataEnd))
      p.pos = dataEnd + 2 - this.q.start
    }
    const raw = this.q.buf.subarray(this.q.start, this.q.start + p.pos)
    this.q.consume(p.pos)
    this.pending = undefined
    return { args: p.args, raw, inline: false }
  }

  private inline(): RedisRequest | null | undefined {
    const { buf, start, end } = this.q
    const nl = buf.indexOf(LF, start)
    if (nl === -1 || nl >= end) {
      if (end - start > this.limits.maxInline) throw new RespProtocolError('too big inline request')
      return undefined
    }
    if (nl - start > this.limits.maxInline) throw new RespProtocolError('too big inline request')
    const lineEnd = nl > start && buf[nl - 1] === CR ? nl - 1 : nl
    const raw = buf.subarray(start, nl + 1)
    const line = buf.subarray(start, lineEnd)
    this.q.consume(nl + 1 - start)
    const args = splitArgs(line)
    if (args === undefined) throw new RespProtocolError('unbalanced quotes in request')
    if (args.length === 0) return null
    return { args, raw, inline: true }
  }
}
