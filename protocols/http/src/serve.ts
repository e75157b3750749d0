// The reverse proxy. The gateway hands over one raw Duplex per client connection; all connections of a
// target run through one shared node:http Server (keep-alive, pipelining, chunked bodies and
// Expect: 100-continue come from node:http), and each request goes: identity → classification →
// decision → upstream (undici Pool, the gateway's own credential) → masking → client, recorded and
// audited once.
//
// Identity: one token per connection. The first request's token is verified and its principal kept
// for the connection (compared by digest, in constant time); a request with a different token gets
// 401 and the connection closes — the client opens a new connection for another identity.
import { createHash, timingSafeEqual } from 'node:crypto'
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Duplex, Readable } from 'node:stream'
import { Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import { createBrotliDecompress, createGunzip, createInflate } from 'node:zlib'
import type { AuditEvent, Decision, Estimator, Operation, Session, StatementAsSent, TargetConfig } from '@portcullis/core'
import { sentHttp } from './approval.ts'
import { httpEstimator } from './estimate.ts'
import { classifyHttp, findRoute, pathOnly, routeRules } from './classify.ts'
import { httpError, rawError, sendError, toHttpError, type HttpError } from './errors.ts'
import { collectSink, readableSink, UpstreamCall, type Headers, type Sink } from './forward.ts'
import { maskJsonText } from './json-mask.ts'
import { bodyKind, isJsonType, maskTextBody, unmaskable } from './inspect.ts'
import type { Route } from './profiles.ts'
import { SseMasker } from './sse.ts'
import { upstreamFor } from './upstream.ts'
import { scopeHttp } from './scope.ts'
import { upstreamCall } from './scope-upstream.ts'
import { mcpExchange } from './mcp/exchange.ts'

interface Conn {
  session: Session
  /** digest of the connection's token, set by its first request (pipelined ones wait on `verified`) */
  tokenDigest?: Buffer
  /** the header value that carried that token: the same value again is the same token, unhashed */
  tokenValue?: string
  verified?: Promise<unknown>
  /** `verified` has resolved: the token was accepted */
  accepted?: boolean
}

const conns = new WeakMap<object, Conn>()
const targetRoutes = new WeakMap<TargetConfig, Route[]>()

/** the target's route rules, compiled once per config generation */
function routesOf(target: TargetConfig): Route[] {
  let r = targetRoutes.get(target)
  if (!r) targetRoutes.set(target, (r = routeRules(target.options.routes)))
  return r
}
const servers = new WeakMap<TargetConfig, Server>()

export function serveHttp(client: Duplex, session: Session): Promise<void> {
  const server = serverFor(session.target)
  conns.set(client, { session })
  return new Promise<void>(resolve => {
    const onAbort = () => client.destroy()
    client.once('close', () => {
      session.signal.removeEventListener('abort', onAbort)
      resolve()
    })
    if (session.signal.aborted) {
      client.destroy()
      return
    }
    session.signal.addEventListener('abort', onAbort, { once: true })
    // the listener's socket may have been made with allowHalfOpen false, which ends our side at the
    // client's FIN, before node:http has answered: the HTTP server decides when to end instead
    ;(client as Duplex & { allowHalfOpen: boolean }).allowHalfOpen = true
    server.emit('connection', client)
    // A listener that sniffed the first bytes pushed them back and left the socket paused; node:http
    // would wait for fresh bytes forever. Flowing again delivers the pushed-back bytes first.
    if (client.readableLength > 0 || client.isPaused()) client.resume()
  })
}

function serverFor(target: TargetConfig): Server {
  let server = servers.get(target)
  if (server) return server
  const maxHeaderSize = typeof target.options.maxHeaderBytes === 'number' ? target.options.maxHeaderBytes : 16 * 1024
  server = createServer({ maxHeaderSize, requestTimeout: 0, keepAliveTimeout: target.limits.idleTimeoutMs || 5000 })
  // A client that sends its requests and then half-closes (FIN) still gets its answers: by default
  // node:http aborts the requests in flight on the client's FIN and ends the socket. With this set
  // it answers what it has read and ends the connection after the last response.
  ;(server as Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true
  server.on('request', (req: IncomingMessage, res: ServerResponse) => void handle(req, res, false))
  // answering 100 Continue is ours: only once the caller is known and the body is wanted
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => void handle(req, res, true))
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (!socket.writable) return socket.destroy()
    const tooLarge = err.code === 'HPE_HEADER_OVERFLOW'
    socket.end(tooLarge ? rawError(431, 'Request Header Fields Too Large', 'headers_too_large', 'request headers are too large') : rawError(400, 'Bad Request', 'bad_request', 'malformed HTTP request'))
  })
  servers.set(target, server)
  return server
}

// hop-by-hop headers (RFC 9110 §7.6.1) and those the gateway sets itself
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host', 'expect'])
// a server that honours these would run another method than the one classified
const METHOD_OVERRIDE = ['x-http-method-override', 'x-http-method', 'x-method-override']
const CREDENTIAL = new Set(['authorization', 'cookie', 'proxy-authorization', 'x-api-key', 'api-key'])

export function tokenHeader(target: TargetConfig): string {
  return typeof target.options.tokenHeader === 'string' ? target.options.tokenHeader.toLowerCase() : 'authorization'
}

function tokenFrom(req: IncomingMessage, header: string): string | undefined {
  const v = req.headers[header]
  const s = Array.isArray(v) ? v[0] : v
  if (!s) return undefined
  const m = /^\s*Bearer\s+(\S+)\s*$/i.exec(s)
  if (m) return m[1]
  return header === 'authorization' ? undefined : s.trim() || undefined
}

/**
 * The connection's own, already accepted token again (the keep-alive case): no digest, no promise.
 * Expiry and revocation are still checked, on every request. The value compared against is the one
 * this same connection presented, so the comparison's timing tells the client nothing it did not send.
 */
function knownToken(conn: Conn, req: IncomingMessage): boolean {
  if (conn.accepted !== true || conn.tokenValue === undefined || req.headers[tokenHeader(conn.session.target)] !== conn.tokenValue) return false
  conn.session.assertAlive()
  return true
}

async function identify(conn: Conn, req: IncomingMessage): Promise<void> {
  const { session } = conn
  const header = tokenHeader(session.target)
  const value = req.headers[header]
  // Keep-alive clients send the header of the connection's first request again and again: that is
  // the token already verified, no digest needed. The value compared against is the one this same
  // connection presented, so the comparison's timing tells the client nothing it did not send.
  if (conn.tokenValue !== undefined && value === conn.tokenValue) {
    await conn.verified
    conn.accepted = true
    session.assertAlive()
    return
  }
  const token = tokenFrom(req, header)
  if (!token) throw httpError(401, 'unauthenticated', 'a bearer token is required')
  const digest = createHash('sha256').update(token).digest()
  if (!conn.tokenDigest) {
    conn.tokenDigest = digest
    if (typeof value === 'string') conn.tokenValue = value
    conn.verified = session.authenticate(token)
  } else if (!timingSafeEqual(conn.tokenDigest, digest)) {
    throw httpError(401, 'unauthenticated', 'one token per connection: open a new connection for another token', { close: true })
  }
  // a refused token refuses every request that presented it; the connection then closes
  await conn.verified
  conn.accepted = true
  session.assertAlive()
}

function hasBody(req: IncomingMessage): boolean {
  return req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0
}

/**
 * The whole of a readable, at most `limit` bytes: past it the source is destroyed and `tooLarge()`
 * rejects. Events rather than an async iterator: no iterator and promise per chunk on the hot path.
 */
function collect(source: Readable, limit: number, tooLarge: () => Error): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => new Collector(source, limit, tooLarge, resolve, reject))
}

/** listeners of one collect(): methods bound once, not closures per call */
class Collector {
  private readonly parts: Buffer[] = []
  private n = 0
  private readonly data = this.onData.bind(this)
  private readonly end = this.onEnd.bind(this)
  private readonly error = this.done.bind(this)
  private readonly close = this.onClose.bind(this)

  constructor(
    private readonly source: Readable,
    private readonly limit: number,
    private readonly tooLarge: () => Error,
    private readonly resolve: (b: Buffer) => void,
    private readonly reject: (e: Error) => void,
  ) {
    if (source.destroyed) {
      this.onClose()
      return
    }
    source.on('data', this.data)
    source.once('end', this.end)
    source.once('error', this.error)
    source.once('close', this.close)
  }

  private done(err: Error | undefined, body?: Buffer): void {
    const s = this.source
    s.off('data', this.data)
    s.off('end', this.end)
    s.off('error', this.error)
    s.off('close', this.close)
    if (err) this.reject(err)
    else this.resolve(body!)
  }

  private onData(chunk: Buffer): void {
    this.n += chunk.length
    if (this.n > this.limit) {
      this.source.destroy()
      return this.done(this.tooLarge())
    }
    this.parts.push(chunk)
  }

  private onEnd(): void {
    this.done(undefined, this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.n))
  }

  /** closed before its end: the peer went away mid-body */
  private onClose(): void {
    this.done(Object.assign(new Error('premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }))
  }
}

export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0)
  const tooLarge = () => httpError(413, 'payload_too_large', `request body is larger than ${limit} bytes`, { close: true })
  if (declared > limit) return Promise.reject(tooLarge())
  return collect(req, limit, tooLarge)
}

/** headers as recorded: credentials never */
export function recordable(headers: IncomingHttpHeaders, token: string): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  for (const k in headers) {
    const v = headers[k]
    if (v !== undefined && !CREDENTIAL.has(k) && k !== token && !k.includes('token') && !k.includes('secret')) out[k] = v
  }
  return out
}

const DECODABLE = ['gzip', 'deflate', 'br']

/** headers never forwarded upstream for this target: hop-by-hop, the caller's credentials, overrides */
const upstreamDrops = new WeakMap<TargetConfig, Set<string>>()
function upstreamDrop(target: TargetConfig): Set<string> {
  let drop = upstreamDrops.get(target)
  if (drop) return drop
  drop = new Set(HOP)
  drop.add(tokenHeader(target))
  drop.add('authorization')
  for (const h of METHOD_OVERRIDE) drop.add(h)
  if (target.upstream.auth) drop.add(target.upstream.auth.header.toLowerCase())
  upstreamDrops.set(target, drop)
  return drop
}

/** the header names a Connection header lists (hop-by-hop for this message only) */
function connectionListed(conn: string | string[] | undefined): Set<string> | undefined {
  if (typeof conn !== 'string') return undefined
  // peers send the same value ('keep-alive') message after message: shared, read-only
  let out = listedCache.get(conn)
  if (out) return out
  out = new Set<string>()
  for (const name of conn.split(',')) out.add(name.trim().toLowerCase())
  if (listedCache.size >= 256) listedCache.clear()
  listedCache.set(conn, out)
  return out
}
const listedCache = new Map<string, Set<string>>()

/** the encodings of an Accept-Encoding value the gateway can decode before it inspects ('' for none) */
function decodableEncodings(value: string): string {
  let out = acceptedCache.get(value)
  if (out !== undefined) return out
  out = value
    .split(',')
    .map(s => s.trim())
    .filter(s => DECODABLE.includes(s.split(';')[0].trim().toLowerCase()))
    .join(', ')
  if (acceptedCache.size >= 256) acceptedCache.clear()
  acceptedCache.set(value, out)
  return out
}
const acceptedCache = new Map<string, string>()

export function upstreamHeaders(req: IncomingMessage, target: TargetConfig, inspecting: boolean): Record<string, string | string[]> {
  const drop = upstreamDrop(target)
  const listed = connectionListed(req.headers.connection)
  const out: Record<string, string | string[]> = {}
  const h = req.headers
  for (const k in h) {
    const v = h[k]
    if (v !== undefined && !drop.has(k) && !listed?.has(k)) out[k] = v
  }
  if (inspecting) {
    // a byte range of a masked body would cut a value where no detector sees it (half an address
    // per request): under a mask plan the whole body is asked for, and masked as a whole
    delete out.range
    delete out['if-range']
  }
  if (inspecting && out['accept-encoding']) {
    // only encodings the gateway can decode before it inspects the response
    const accepted = decodableEncodings(String(out['accept-encoding']))
    if (accepted !== '') out['accept-encoding'] = accepted
    else delete out['accept-encoding']
  }
  return out
}

export function responseHeaders(headers: Headers): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  const listed = connectionListed(headers.connection)
  for (const k in headers) {
    const v = headers[k]
    if (v !== undefined && !HOP.has(k) && !listed?.has(k)) out[k] = v
  }
  return out
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

/** decide when an approval is asked for, honouring approvalMode: 'wait' holds the request, 'defer' answers 202 at once */
export function decide(session: Session, op: Operation, up: Upstreamed, socket: Duplex, sent: () => StatementAsSent, estimator?: Estimator): Promise<Decision> {
  const est = estimator ? { estimator } : {}
  // defer: the core answers at once with the pending request; the same request sent again runs once approved
  if (session.target.options.approvalMode === 'defer') return session.decide(op, { defer: true, sent, ...est })
  // a client that goes away withdraws its pending approval
  const controller = (up.controller = new AbortController())
  if (up.reason) controller.abort(up.reason)
  // A FIN is a half-close as far as answering goes (what was sent is answered), but a request held
  // for a human is withdrawn by it: TCP cannot tell "done sending" from "gone", and an approval
  // granted for a client that left would run a write nobody waits for. The client, if still
  // there, gets the refusal.
  const onEnd = () => controller.abort(CLIENT_ENDED())
  if (socket.readableEnded) onEnd()
  else socket.once('end', onEnd)
  return session.decide(op, { signal: controller.signal, sent, ...est }).finally(() => socket.off('end', onEnd))
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

const CLIENT_ENDED = () => httpError(403, 'policy_blocked', 'approval withdrawn: the client closed its side of the connection while the request waited for approval')
const CLIENT_GONE = () => Object.assign(new Error('the client went away'), { code: 'UND_ERR_ABORTED' })

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

async function handle(req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): Promise<void> {
  const conn = conns.get(req.socket)
  if (!conn) {
    res.destroy()
    return
  }
  const { session } = conn
  const target = session.target
  const started = Date.now()
  const method = (req.method ?? 'GET').toUpperCase()
  const path = req.url ?? '/'
  const event: Partial<AuditEvent> = { target: target.name, protocol: 'http', statement: `${method} ${pathOnly(path)}` }
  let requestBytes = 0
  let responseBytes = 0
  let masked = 0
  // what the MCP exchange counts (it has its own request and response paths)
  const stats = { requestBytes: 0, responseBytes: 0, masked: 0 }
  const up = new Upstreamed()
  res.once('close', () => {
    if (!res.writableFinished) up.abort(CLIENT_GONE())
  })
  try {
    if (!knownToken(conn, req)) await identify(conn, req)
    const profile = target.options.profile as string | undefined
    // remote MCP servers: JSON-RPC aware, message by message (mcp/exchange.ts)
    if (profile === 'mcp') return await mcpExchange({ req, res, session, event, up, expectsContinue, stats })
    const routes = routesOf(target)
    const found = findRoute({ method, path, profile, routes })
    const route = found.route
    const ct = req.headers['content-type']
    const withBody = hasBody(req)
    const inspectBody = withBody && route?.body !== 'stream' && (route?.body === 'json' || isJsonType(ct))
    let raw: Buffer | undefined
    let parsed: unknown
    if (inspectBody) {
      if (expectsContinue) res.writeContinue()
      raw = await readBody(req, target.limits.maxMessageBytes)
      requestBytes = raw.length
      if (raw.length > 0) {
        try {
          parsed = JSON.parse(raw.toString('utf8'))
        } catch {
          throw httpError(400, 'bad_request', 'request body is not valid JSON')
        }
      }
    }
    const op = classifyHttp({ method, path, body: parsed, rawBody: raw, profile, routes, found })
    if (op.error) throw httpError(400, 'bad_request', op.error)
    event.class = op.class
    event.resources = op.resources
    event.fingerprint = op.fingerprint
    event.statement = op.statement
    session.record('request', { method, path, headers: recordable(req.headers, tokenHeader(target)), ...(raw ? { body: raw } : withBody ? { streamed: true } : {}) })

    // the blast radius (estimate.ts): a Qdrant delete by filter, a Pinecone deleteAll
    const estimator = httpEstimator(session, op, parsed)
    const now = estimator && session.estimates?.(estimator.facts) ? session.decideNow(op, { estimator }) : session.decideNow(op)
    const decision = now ?? (await decide(session, op, up, req.socket, () => sentHttp(method, path, raw, withBody, session.masks), estimator))
    if (decision.deferred && decision.approvalId) {
      event.decision = 'approve'
      event.approvalId = decision.approvalId
      const body = JSON.stringify({
        approval: { id: decision.approvalId, status: 'pending', poll: `/api/approvals/${decision.approvalId}`, wait: `portcullis approvals wait ${decision.approvalId}` },
      })
      res.writeHead(202, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
      res.end(body)
      return
    }
    event.decision = decision.action
    event.rule = decision.rule
    if (decision.approvalId !== undefined) event.approvalId = decision.approvalId
    if (decision.action !== 'allow') {
      const details: Record<string, unknown> = { rule: decision.rule }
      if (decision.approvalId) details.approvalId = decision.approvalId
      throw httpError(403, 'policy_blocked', decision.reason || 'blocked by policy', { details })
    }
    const masks = decision.masks
    const inspecting = !masks.empty

    // the session's scope (scope.ts): a filter AND-ed on, a namespace set, ids checked, or a refusal
    let upstreamPath = path
    let scopedBody = false
    // the scope reads the upstream's answer (an object it created, a list to filter)
    let respond: ((json: unknown) => Promise<unknown>) | undefined
    if (session.scope) {
      const outcome = await scopeHttp({ profile: found.profile, operation: route?.operation, method, path, params: found.params, body: parsed }, session.scope, upstreamCall(session), session.objects)
      if (outcome && 'refuse' in outcome) {
        session.record('event', { event: 'scope-refused', reason: outcome.refuse })
        throw httpError(403, 'scope_refused', outcome.refuse)
      }
      if (outcome) {
        if (outcome.body !== undefined) {
          parsed = outcome.body
          raw = Buffer.from(JSON.stringify(outcome.body))
          scopedBody = true
        }
        if (outcome.path !== undefined) upstreamPath = outcome.path
        respond = outcome.respond
        session.record('event', { event: 'scope-applied', applied: outcome.applied, ...(outcome.body !== undefined ? { body: raw } : {}), ...(outcome.path !== undefined ? { path: upstreamPath } : {}) })
      }
    }

    // request-side masking (e.g. emails in prompts before they reach the LLM)
    let outBody: Buffer | Transform | undefined = raw
    if (raw && parsed !== undefined && target.options.maskRequests === true && inspecting) {
      // in place: the rest of the request goes upstream byte for byte (numbers, escapes, order)
      const r = maskJsonText(raw.toString('utf8'), masks, true)
      if (r.count > 0) {
        masked += r.count
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
          requestBytes += chunk.length
          if (requestBytes > cap) cb(tooLarge)
          else cb(null, chunk)
        },
      })
      pipeline(req, outBody).catch(err => up.abort(err))
    }

    const headers = upstreamHeaders(req, target, inspecting || respond !== undefined)
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
        responseBytes = s.bytes
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
          const count = counter(n => (responseBytes += n))
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
            responseBytes = sink!.bytes
          }
        }
      } finally {
        masked += masker.masked
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
      masked += r.count
      body = r.body
    }
    outHeaders['content-length'] = String(body.length)
    res.writeHead(status, outHeaders)
    responseBytes = body.length
    res.end(body)
    // recorded once the answer is on its way: encoding and hashing it need not delay the client
    session.record('response', { status, headers: outHeaders, body })
  } catch (caught) {
    // an upload that broke its cap aborts the upstream request: answer with why it was aborted
    const err = up.reason !== undefined && !res.headersSent ? up.reason : caught
    const e: HttpError = toHttpError(err)
    event.error = e.code
    if (e.status === 403 && event.decision === undefined) event.decision = 'block'
    if (!res.headersSent) session.record('error', { status: e.status, code: e.code, message: e.message })
    sendError(res, e)
  } finally {
    event.bytes = requestBytes + responseBytes + stats.requestBytes + stats.responseBytes
    event.masked = masked + stats.masked
    event.durationMs = Date.now() - started
    session.audit(event)
  }
}
