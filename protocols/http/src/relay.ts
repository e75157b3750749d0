// The response relay: the upstream's answer back to the client. Pass-through (bytes as they came,
// backpressure end to end, textual bodies kept for the recording up to a cap), masked server-sent
// events (event by event, as they come), or JSON and text decoded, bounded and inspected whole; a
// scope that must read the answer (what it created, a list to filter) gets it whole and as JSON.
import type { ServerResponse } from 'node:http'
import { Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib'
import type { MaskPlan, Session, TargetConfig } from '@portcullis/core'
import { collect } from './body.ts'
import { httpError } from './errors.ts'
import { collectSink, readableSink, type Sink, type UpstreamCall } from './forward.ts'
import { responseHeaders } from './headers.ts'
import { bodyKind, isJsonType, maskTextBody, unmaskable } from './inspect.ts'
import { SseMasker } from './sse.ts'

/** what one request counts for its audit event (the MCP exchange counts into the same shape) */
export interface Stats {
  requestBytes: number
  responseBytes: number
  masked: number
}

export interface Relay {
  res: ServerResponse
  session: Session
  method: string
  call: UpstreamCall
  masks: MaskPlan
  /** the scope reads the upstream's answer (an object it created, a list to filter) */
  respond: ((json: unknown) => Promise<unknown>) | undefined
  stats: Stats
}

export async function relay({ res, session, method, call, masks, respond, stats }: Relay): Promise<void> {
  const target = session.target
  const inspecting = !masks.empty
  const answer = await call.head
  const status = answer.status
  const outHeaders = responseHeaders(answer.headers)
  const ctype = String(answer.headers['content-type'] ?? '')
  const noBody = method === 'HEAD' || status === 204 || status === 304

  const kind = bodyKind(ctype, target)
  // a successful answer the scope must read: JSON, whole, or nothing reaches the client
  const scoped = respond !== undefined && !noBody && status >= 200 && status < 300
  if (scoped && !isJsonType(ctype)) {
    const e = httpError(502, 'upstream_unreadable', `the upstream answered ${ctype.split(';')[0] || 'untyped'} where the scope needs JSON to know what it created or lists; refused`)
    call.abort(e)
    throw e
  }
  if (inspecting && !noBody && kind === 'refused') {
    // fail closed: bytes the gateway cannot read are not sent under a mask plan (inspect.ts)
    call.abort(unmaskable(ctype))
    throw unmaskable(ctype)
  }
  if (!scoped && (!inspecting || noBody || kind === 'unmasked')) {
    // pass-through: bytes as they came. Textual bodies are also kept for the recording, up to a cap
    // (as sent: still encoded when the upstream compressed them)
    const cap = kind === 'sse' || kind === 'text' ? recordCap(target) : 0
    res.writeHead(status, outHeaders)
    let sink: ResponseSink | undefined
    try {
      await new Promise<void>((resolve, reject) => {
        sink = new ResponseSink(res, call, cap, err => (err ? reject(err) : resolve()))
        call.attach(sink)
      })
    } finally {
      const s = sink!
      stats.responseBytes = s.bytes
      const truncated = s.bytes > s.keptBytes
      const body = cap > 0 ? (s.kept.length === 1 ? s.kept[0] : Buffer.concat(s.kept, s.keptBytes)) : undefined
      session.record('response', { status, headers: outHeaders, bytes: s.bytes, ...(body ? { body } : {}), ...(truncated ? { truncated } : {}) })
    }
    return
  }
  const decode = decoder(answer.headers['content-encoding'] as string | undefined)
  const ce = String(answer.headers['content-encoding'] ?? '').trim().toLowerCase()
  if (ce && ce !== 'identity' && !decode) {
    call.abort(httpError(502, 'upstream_unreadable', `cannot inspect a ${ce}-encoded response`))
    throw httpError(502, 'upstream_unreadable', `cannot inspect a ${ce}-encoded response`)
  }
  delete outHeaders['content-encoding']
  delete outHeaders['content-length']

  if (kind === 'sse') {
    const masker = new SseMasker(masks, {
      maxEventBytes: target.limits.maxMessageBytes,
      onBatch: (batch, n) => session.record('response', { status, batch, ...(n > 0 ? { masked: n } : {}) }),
    })
    session.record('response', { status, headers: outHeaders, streaming: true })
    res.writeHead(status, outHeaders)
    try {
      if (decode) {
        const { body: source, sink } = readableSink(call)
        call.attach(sink)
        const count = counter(n => (stats.responseBytes += n))
        await pipeline(source, decode, masker, count, res)
      } else {
        // the masker fed from the upstream's chunks directly: what each chunk makes safe goes out at once
        let sink: SseSink | undefined
        try {
          await new Promise<void>((resolve, reject) => {
            sink = new SseSink(res, call, masker, err => (err ? reject(err) : resolve()))
            call.attach(sink)
          })
        } finally {
          stats.responseBytes = sink!.bytes
        }
      }
    } finally {
      stats.masked += masker.masked
    }
    return
  }

  // JSON and text: decoded, bounded, inspected whole
  const limit = target.limits.maxMessageBytes
  const tooLarge = () => httpError(502, 'response_too_large', `the upstream response is larger than the inspection limit (${limit} bytes)`)
  let body: Buffer
  if (decode) {
    const { body: source, sink } = readableSink(call)
    call.attach(sink)
    // pipe() does not carry an upstream error on: destroy the decoder with it, or the read would hang
    source.once('error', err => decode.destroy(err))
    body = await collect(source.pipe(decode), limit, () => {
      source.destroy()
      return tooLarge()
    })
  } else {
    const c = collectSink(call, limit, tooLarge)
    call.attach(c.sink)
    body = await c.body
  }
  if (scoped) {
    let json: unknown
    try {
      json = JSON.parse(body.toString('utf8'))
    } catch {
      throw httpError(502, 'upstream_unreadable', 'the upstream answered JSON that does not parse where the scope needs to read it; refused')
    }
    const replaced = await respond!(json)
    if (replaced !== undefined) {
      body = Buffer.from(JSON.stringify(replaced))
      session.record('event', { event: 'scope-applied', applied: 'the answer filtered to the scope' })
    }
  }
  if (inspecting) {
    const r = maskTextBody(body, ctype, masks)
    stats.masked += r.count
    body = r.body
  }
  outHeaders['content-length'] = String(body.length)
  res.writeHead(status, outHeaders)
  stats.responseBytes = body.length
  res.end(body)
  // recorded once the answer is on its way: encoding and hashing it need not delay the client
  session.record('response', { status, headers: outHeaders, body })
}

/** how much of a pass-through textual response is copied into the recording */
function recordCap(target: TargetConfig): number {
  const v = target.options.recordBodyBytes
  return typeof v === 'number' && v >= 0 ? v : Math.min(1 << 20, target.limits.maxMessageBytes)
}

function decoder(encoding: string | undefined): Transform | undefined {
  switch ((encoding ?? '').trim().toLowerCase()) {
    case 'gzip':
    case 'x-gzip':
      return createGunzip()
    case 'deflate':
      return createInflate()
    case 'br':
      return createBrotliDecompress()
    default:
      return undefined
  }
}

function counter(onBytes: (n: number, chunk: Buffer) => void): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, cb) {
      onBytes(chunk.length, chunk)
      cb(null, chunk)
    },
  })
}

/** pass-through: upstream bytes to the client as they come, backpressure end to end */
class ResponseSink implements Sink {
  bytes = 0
  readonly kept: Buffer[] = []
  keptBytes = 0
  private readonly onDrain = () => this.call.resume()

  constructor(
    private readonly res: ServerResponse,
    private readonly call: UpstreamCall,
    private readonly cap: number,
    private readonly settle: (err?: Error) => void,
  ) {}

  data(chunk: Buffer): boolean {
    const n = chunk.length
    this.bytes += n
    if (this.keptBytes < this.cap) {
      const part = this.keptBytes + n > this.cap ? chunk.subarray(0, this.cap - this.keptBytes) : chunk
      this.kept.push(part)
      this.keptBytes += part.length
    }
    // node:http corks the socket until the next tick: the head and the chunks of one read go in one write
    if (this.res.write(chunk)) return true
    this.res.once('drain', this.onDrain)
    return false
  }

  end(): void {
    this.res.end()
    this.settle()
  }

  error(err: Error): void {
    this.settle(err)
  }
}

/** masked server-sent events: each upstream chunk through the masker, its output to the client */
class SseSink implements Sink {
  bytes = 0
  private readonly onDrain = () => this.call.resume()

  constructor(
    private readonly res: ServerResponse,
    private readonly call: UpstreamCall,
    private readonly masker: SseMasker,
    private readonly settle: (err?: Error) => void,
  ) {}

  data(chunk: Buffer): boolean {
    let out: string
    try {
      out = this.masker.maskChunk(chunk)
    } catch (err) {
      this.call.abort(err as Error)
      this.settle(err as Error)
      return true
    }
    return out === '' || this.send(out)
  }

  private send(out: string): boolean {
    const buf = Buffer.from(out, 'utf8')
    this.bytes += buf.length
    if (this.res.write(buf)) return true
    this.res.once('drain', this.onDrain)
    return false
  }

  end(): void {
    const out = this.masker.maskEnd()
    if (out !== '') this.send(out)
    this.res.end()
    this.settle()
  }

  error(err: Error): void {
    this.settle(err)
  }
}
