// One request to the upstream through undici's dispatch(): no Readable, no promise per chunk. The
// head resolves `head`; the body goes to a sink chosen then (the client's response, a collector, or
// a Readable for the paths that transform it). Chunks that arrive before the sink is attached (the
// head and the first body bytes often come in one read) wait in a short queue.
//
// forward() (at the end) is the phase that builds and sends the request: request-side masking, a
// streamed upload under its cap, the headers the upstream may see, the gateway's own credential.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { Readable, Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { util, type Dispatcher } from 'undici'
import type { MaskPlan, Session } from '@portcullis/core'
import { httpError } from './errors.ts'
import { upstreamHeaders } from './headers.ts'
import { maskJsonText } from './json-mask.ts'
import type { Stats } from './relay.ts'
import { upstreamFor } from './upstream.ts'

export type Headers = Record<string, string | string[]>

export interface Head {
  status: number
  /** lower-case names; repeated headers as arrays */
  headers: Headers
}

/** where a response body goes */
export interface Sink {
  /** false: the upstream pauses until the call's resume() */
  data(chunk: Buffer): boolean
  end(): void
  error(err: Error): void
}

export class UpstreamCall implements Dispatcher.DispatchHandlers {
  readonly head: Promise<Head>
  private resolveHead!: (h: Head) => void
  private rejectHead!: (e: Error) => void
  private headed = false
  private abortFn: ((err?: Error) => void) | undefined
  private abortReason: Error | undefined
  private resumeFn: (() => void) | undefined
  private sink: Sink | undefined
  private queue: Buffer[] | undefined
  private ended = false
  private failure: Error | undefined
  /** set once the upstream call has ended, one way or the other */
  done = false

  constructor() {
    this.head = new Promise<Head>((resolve, reject) => {
      this.resolveHead = resolve
      this.rejectHead = reject
    })
  }

  /** stops the upstream request (before or after it was sent); its error becomes `reason` */
  abort(reason: Error): void {
    if (this.done) return
    if (this.abortFn) this.abortFn(reason)
    else this.abortReason ??= reason
  }

  resume(): void {
    this.resumeFn?.()
  }

  /** the body's destination, once the head has been looked at */
  attach(sink: Sink): void {
    this.sink = sink
    const q = this.queue
    this.queue = undefined
    // a full destination asks for resume() itself once it drains
    if (q) for (const c of q) sink.data(c)
    if (this.failure) sink.error(this.failure)
    else if (this.ended) sink.end()
  }

  onConnect(abort: (err?: Error) => void): void {
    if (this.abortReason) abort(this.abortReason)
    else this.abortFn = abort
  }

  onHeaders(status: number, raw: Buffer[] | string[] | null, resume: () => void): boolean {
    // 1xx: informational, the answer is still to come
    if (status < 200) return true
    this.resumeFn = resume
    this.headed = true
    // lower-case names, utf8 values, repeats as arrays: what undici's request() gives
    this.resolveHead({ status, headers: raw ? (util.parseHeaders(raw) as Headers) : {} })
    return true
  }

  onData(chunk: Buffer): boolean {
    if (this.sink) return this.sink.data(chunk)
    ;(this.queue ??= []).push(chunk)
    return true
  }

  onComplete(): void {
    this.done = true
    if (this.sink) this.sink.end()
    else this.ended = true
  }

  onError(err: Error): void {
    this.done = true
    if (!this.headed) {
      this.headed = true
      this.rejectHead(err)
      return
    }
    if (this.sink) this.sink.error(err)
    else this.failure = err
  }
}

/** a sink that is a Readable, for the paths that pipe the body through transforms */
export function readableSink(call: UpstreamCall): { body: Readable; sink: Sink } {
  const body = new Readable({
    read() {
      call.resume()
    },
    destroy(err, cb) {
      if (!call.done) call.abort(err ?? Object.assign(new Error('response body destroyed'), { code: 'UND_ERR_ABORTED' }))
      cb(err)
    },
  })
  const sink: Sink = {
    data: chunk => body.push(chunk),
    end: () => body.push(null),
    error: err => body.destroy(err),
  }
  return { body, sink }
}

/** the whole body, at most `limit` bytes; past it the call is aborted and `tooLarge()` rejects */
export function collectSink(call: UpstreamCall, limit: number, tooLarge: () => Error): { body: Promise<Buffer>; sink: Sink } {
  let resolve!: (b: Buffer) => void
  let reject!: (e: Error) => void
  const body = new Promise<Buffer>((res, rej) => {
    resolve = res
    reject = rej
  })
  const parts: Buffer[] = []
  let n = 0
  let over = false
  const sink: Sink = {
    data(chunk) {
      if (over) return true
      n += chunk.length
      if (n > limit) {
        over = true
        const e = tooLarge()
        call.abort(e)
        reject(e)
        return true
      }
      parts.push(chunk)
      return true
    },
    end() {
      if (!over) resolve(parts.length === 1 ? parts[0] : Buffer.concat(parts, n))
    },
    error(err) {
      if (!over) reject(err)
    },
  }
  return { body, sink }
}

/** one request's upstream side: the call, once it exists, and an abort that may come first */
export class Upstreamed {
  call: UpstreamCall | undefined
  /** why the request was cut short (client gone, upload over its cap) */
  reason: Error | undefined
  /** the approval wait, when there is one: the client going away withdraws it */
  controller: AbortController | undefined

  abort(reason: Error): void {
    if (this.reason) return
    this.reason = reason
    this.call?.abort(reason)
    this.controller?.abort(reason)
  }
}

/** the reason an upstream call is aborted when the client's response closed before it finished */
export const CLIENT_GONE = () => Object.assign(new Error('the client went away'), { code: 'UND_ERR_ABORTED' })

/** what forwarding a request needs: the request as decided and scoped */
export interface Forward {
  req: IncomingMessage
  res: ServerResponse
  session: Session
  method: string
  /** the path sent upstream (the scope may have rewritten it) */
  upstreamPath: string
  raw: Buffer | undefined
  parsed: unknown
  withBody: boolean
  /** the body is the scope's, re-serialised */
  scopedBody: boolean
  masks: MaskPlan
  /** the scope reads the answer: asked for whole and decodable, like a masked one */
  readsAnswer: boolean
  expectsContinue: boolean
  up: Upstreamed
  stats: Stats
}

/**
 * The request upstream: masked in place where maskRequests says so, a streamed upload sent on as it
 * comes (under maxUploadBytes), the headers the upstream may see plus the gateway's own credential.
 */
export async function forward({ req, res, session, method, upstreamPath, raw, parsed, withBody, scopedBody, masks, readsAnswer, expectsContinue, up, stats }: Forward): Promise<UpstreamCall> {
  const target = session.target
  const inspecting = !masks.empty
  // request-side masking (e.g. emails in prompts before they reach the LLM)
  let outBody: Buffer | Transform | undefined = raw
  if (raw && parsed !== undefined && target.options.maskRequests === true && inspecting) {
    // in place: the rest of the request goes upstream byte for byte (numbers, escapes, order)
    const r = maskJsonText(raw.toString('utf8'), masks, true)
    if (r.count > 0) {
      stats.masked += r.count
      outBody = Buffer.from(r.text)
    }
  }
  if (!raw && withBody) {
    // streamed uploads are not held to maxMessageBytes (nothing buffers them) but may have a cap
    const cap = typeof target.options.maxUploadBytes === 'number' ? target.options.maxUploadBytes : Infinity
    const tooLarge = httpError(413, 'payload_too_large', `upload is larger than ${cap} bytes`, { close: true })
    if (Number(req.headers['content-length'] ?? 0) > cap) throw tooLarge
    if (expectsContinue) res.writeContinue()
    outBody = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        stats.requestBytes += chunk.length
        if (stats.requestBytes > cap) cb(tooLarge)
        else cb(null, chunk)
      },
    })
    pipeline(req, outBody).catch(err => up.abort(err))
  }

  const headers = upstreamHeaders(req, target, inspecting || readsAnswer)
  if (scopedBody) headers['content-type'] = 'application/json'
  if (Buffer.isBuffer(outBody)) {
    headers['content-length'] = String(outBody.length)
    delete headers['transfer-encoding']
  }
  const auth = target.upstream.auth
  if (auth) headers[auth.header.toLowerCase()] = auth.value.replace('{secret}', await session.secret(auth.secret))
  if (up.reason) throw up.reason

  const upstream = upstreamFor(target)
  const call = (up.call = new UpstreamCall())
  upstream.pool.dispatch({ method: method as 'GET', path: upstream.prefix + upstreamPath, headers, body: outBody }, call)
  return call
}
