// The MCP server: Streamable HTTP (the MCP specification's transport) from the official SDK, behind
// the gateway's listener. The gateway hands over one raw connection at a time; all connections of a
// target run through one node:http Server, and an MCP session (Mcp-Session-Id) outlives the
// connection that started it, so sessions live here, per target name, bound to their principal.
//
// Identity: every request carries Authorization: Bearer <JWT>, verified by the connection's
// session (the core's identity, as everywhere else); without one, or with a bad one, the answer is
// 401 with RFC 9728's WWW-Authenticate: Bearer resource_metadata=…, whose document names the
// configured issuers, so an MCP client knows where to get a token. Several callers may share one
// keep-alive connection: each gets a session of its own (see Conn).
import { createHash, timingSafeEqual } from 'node:crypto'
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import { isInitializeRequest } from '@modelcontextprotocol/sdk/types.js'
import { isPortcullisError, type Peers, type Principal, type Session, type TargetConfig } from '@portcullis/core'
import { adoptConnection } from '@portcullis/http'
import { McpSession } from './session.ts'
import { num } from './context.ts'

interface Caller {
  session: Session
  /** digest of the token last verified for this caller (the same token again is not re-verified) */
  tokenDigest?: Buffer
}

interface Conn {
  /** the session the gateway opened for the connection: the first caller's */
  main: Session
  /**
   * one session per caller (issuer + subject) on this connection: HTTP clients pool keep-alive
   * connections per origin, so one connection may carry several principals' requests; each gets a
   * session of its own (its own recording, audit lines and expiry), none another's
   */
  callers: Map<string, Caller>
}

/** callers past this many on one connection get 401 (and the connection closes) */
const MAX_CALLERS = 16

const conns = new WeakMap<object, Conn>()
const servers = new WeakMap<TargetConfig, Server>()
/** live MCP sessions per target name (a reload keeps them; the new config's tools come with new sessions) */
const sessions = new Map<string, Map<string, McpSession>>()

const METADATA = '/.well-known/oauth-protected-resource'

export function serveMcp(client: Duplex, session: Session): Promise<void> {
  const server = serverFor(session.target)
  const conn: Conn = { main: session, callers: new Map() }
  conns.set(client, conn)
  return new Promise<void>((resolve) => {
    const onAbort = () => client.destroy()
    client.once('close', () => {
      session.signal.removeEventListener('abort', onAbort)
      // the sessions this connection opened for further callers end with it (the gateway ends the main one)
      for (const c of conn.callers.values()) if (c.session !== session) void c.session.close('connection closed')
      resolve()
    })
    if (session.signal.aborted) return void client.destroy()
    session.signal.addEventListener('abort', onAbort, { once: true })
    adoptConnection(server, client)
  })
}

function serverFor(target: TargetConfig): Server {
  let server = servers.get(target)
  if (server) return server
  server = createServer({ requestTimeout: 0, keepAliveTimeout: target.limits.idleTimeoutMs || 5000 })
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) json(res, 500, { error: 'internal error' })
      else res.destroy()
    })
  })
  servers.set(target, server)
  return server
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text), ...headers })
  res.end(text)
}

const mcpPath = (t: TargetConfig) => (typeof t.options.path === 'string' ? t.options.path : '/mcp')

/** the resource's own URL: configured, or what the client used to reach it */
function resourceUrl(t: TargetConfig, req: IncomingMessage): string {
  if (typeof t.options.resource === 'string') return t.options.resource
  const host = /^[A-Za-z0-9.\-:[\]]{1,255}$/.test(req.headers.host ?? '') ? req.headers.host! : t.listen
  return `${t.tls ? 'https' : 'http'}://${host}${mcpPath(t)}`
}

function metadataUrl(t: TargetConfig, req: IncomingMessage): string {
  const r = new URL(resourceUrl(t, req))
  return `${r.origin}${METADATA}${r.pathname === '/' ? '' : r.pathname}`
}

/** RFC 9728 §2: the protected resource's metadata */
function metadata(t: TargetConfig, req: IncomingMessage, peers: Peers | undefined): Record<string, unknown> {
  const servers = Array.isArray(t.options.authorizationServers) ? t.options.authorizationServers : (peers?.issuers() ?? [])
  return {
    resource: resourceUrl(t, req),
    authorization_servers: servers,
    bearer_methods_supported: ['header'],
    resource_name: `Portcullis MCP (${t.name})`,
    ...(Array.isArray(t.options.scopes) ? { scopes_supported: t.options.scopes } : {}),
  }
}

/** RFC 6750 §3 with RFC 9728 §5.1's resource_metadata; the description names no secret */
function unauthorized(res: ServerResponse, t: TargetConfig, req: IncomingMessage, error?: string, description?: string, close = false): void {
  const params = [`resource_metadata="${metadataUrl(t, req)}"`]
  if (error) params.push(`error="${error}"`)
  if (description) params.push(`error_description="${description.replace(/["\\\r\n]/g, ' ')}"`)
  json(res, 401, { error: error ?? 'unauthorized', ...(description ? { error_description: description } : {}) }, {
    'www-authenticate': `Bearer ${params.join(', ')}`,
    ...(close ? { connection: 'close' } : {}),
  })
}

function digest(token: string): Buffer {
  return createHash('sha256').update(token).digest()
}

/**
 * which caller a token claims to be (issuer and subject, read without verifying): it only picks the
 * session to verify the token on; that session's verification is what counts, and a session never
 * changes its subject, so a token that lies about its subject is refused there
 */
function claimedCaller(token: string): string {
  try {
    const payload = JSON.parse(Buffer.from(token.split('.')[1] ?? '', 'base64url').toString('utf8')) as { iss?: unknown; sub?: unknown }
    return `${String(payload.iss)}\n${String(payload.sub)}`
  } catch {
    return ''
  }
}

class TooManyCallers extends Error {}

async function authenticate(conn: Conn, token: string): Promise<{ principal: Principal; session: Session }> {
  const d = digest(token)
  const key = claimedCaller(token)
  let c = conn.callers.get(key)
  if (c?.tokenDigest && c.session.principal && timingSafeEqual(d, c.tokenDigest)) {
    c.session.assertAlive()
    return { principal: c.session.principal, session: c.session }
  }
  let opened = false
  if (!c) {
    if (conn.main.principal === undefined) c = { session: conn.main }
    else {
      if (conn.callers.size >= MAX_CALLERS || !conn.main.peers) throw new TooManyCallers('too many identities on one connection')
      c = { session: conn.main.peers.openSession(conn.main.target, conn.main.remote) }
      opened = true
    }
  }
  try {
    const principal = await c.session.authenticate(token)
    c.tokenDigest = d
    conn.callers.set(key, c)
    return { principal, session: c.session }
  } catch (err) {
    // a session opened for a token that failed holds nothing: closed at once
    if (opened) void c.session.close('authentication failed')
    throw err
  }
}

async function readBody(req: IncomingMessage, max: number): Promise<Buffer | undefined> {
  const chunks: Buffer[] = []
  let n = 0
  for await (const c of req as AsyncIterable<Buffer>) {
    n += c.length
    if (n > max) return undefined
    chunks.push(c)
  }
  return Buffer.concat(chunks)
}

const rpcError = (res: ServerResponse, status: number, code: number, message: string, headers: Record<string, string> = {}) =>
  json(res, status, { jsonrpc: '2.0', error: { code, message }, id: null }, headers)

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const conn = conns.get(req.socket)
  if (!conn) return void res.destroy()
  const t = conn.main.target
  const url = new URL(req.url ?? '/', 'http://portcullis')
  if (url.pathname === METADATA || url.pathname === METADATA + mcpPath(t)) {
    if (req.method !== 'GET' && req.method !== 'HEAD') return json(res, 405, { error: 'method not allowed' }, { allow: 'GET' })
    return json(res, 200, metadata(t, req, conn.main.peers), { 'cache-control': 'max-age=300' })
  }
  if (url.pathname !== mcpPath(t)) return json(res, 404, { error: 'not found' })

  const m = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(req.headers.authorization ?? '')
  if (!m) return unauthorized(res, t, req)
  let principal: Principal
  let session: Session
  try {
    ;({ principal, session } = await authenticate(conn, m[1]!))
  } catch (err) {
    const code = isPortcullisError(err) ? err.code : 'AUTH_FAILED'
    return unauthorized(res, t, req, 'invalid_token', code === 'TOKEN_EXPIRED' ? 'token expired' : (err as Error).message, err instanceof TooManyCallers)
  }
  const token = m[1]!
  if (!session.peers) return rpcError(res, 503, -32603, 'this gateway does not serve MCP targets')

  if (t.options.stateless === true) return statelessRequest(req, res, t, session, principal, token)
  const live = sessions.get(t.name) ?? new Map<string, McpSession>()
  sessions.set(t.name, live)
  const sid = req.headers['mcp-session-id']
  if (req.method === 'GET') return json(res, 405, { error: 'no server-initiated stream: use POST' }, { allow: 'POST, DELETE' })
  let s: McpSession | undefined
  if (typeof sid === 'string') {
    s = live.get(sid)
    // another's session and no session get the same answer
    if (!s || !s.owns(principal)) return rpcError(res, 404, -32001, 'Session not found')
    s.refresh(token, principal)
  }
  let body: unknown
  if (req.method === 'POST') {
    const raw = await readBody(req, num(t.options, 'maxRequestBytes', 1024 * 1024))
    if (!raw) return rpcError(res, 413, -32600, 'request too large', { connection: 'close' })
    // requests are recorded as sent (the token travels in a header, which is not recorded)
    session.record('request', { method: 'POST', ...(s ? { mcpSession: s.id } : {}), body: raw })
    try {
      body = JSON.parse(raw.toString('utf8'))
    } catch {
      return rpcError(res, 400, -32700, 'Parse error')
    }
    if (!s) {
      if (!isInitializeRequest(body)) return rpcError(res, 400, -32000, 'Bad Request: no valid session ID provided')
      if (live.size >= num(t.options, 'maxSessions', 256)) return rpcError(res, 503, -32000, 'too many MCP sessions on this target')
      s = await McpSession.open({ target: t, peers: session.peers, principal, token, onClosed: (id) => live.delete(id), register: (id, x) => live.set(id, x) })
    }
  } else if (!s) {
    return rpcError(res, 400, -32000, 'Bad Request: no valid session ID provided')
  }
  recordResponses(res, session)
  // the SDK passes req.auth to every handler as authInfo
  ;(req as IncomingMessage & { auth?: unknown }).auth = { token: 'held by portcullis', clientId: principal.subject, scopes: [] }
  await s.transport.handleRequest(req, res, body)
}

/**
 * options.stateless: every POST is a whole MCP exchange of its own (the SDK's stateless mode): the
 * caller's tools are listed for it, it runs, and what it opened closes when its response ends. No
 * state outlives the request, so with workers > 1 or several gateways behind a balancer any of them
 * serves any request; what must be shared (approval requests, for check_approval and defer mode)
 * is in the control store already.
 */
async function statelessRequest(req: IncomingMessage, res: ServerResponse, t: TargetConfig, session: Session, principal: Principal, token: string): Promise<void> {
  // no session to end and no server stream without a session
  if (req.method !== 'POST') return json(res, 405, { error: 'stateless MCP target: use POST' }, { allow: 'POST' })
  const raw = await readBody(req, num(t.options, 'maxRequestBytes', 1024 * 1024))
  if (!raw) return rpcError(res, 413, -32600, 'request too large', { connection: 'close' })
  session.record('request', { method: 'POST', body: raw })
  let body: unknown
  try {
    body = JSON.parse(raw.toString('utf8'))
  } catch {
    return rpcError(res, 400, -32700, 'Parse error')
  }
  const s = await McpSession.open({ target: t, peers: session.peers!, principal, token, stateless: true, onClosed: () => {}, register: () => {} })
  res.once('close', () => s.close('request done'))
  recordResponses(res, session)
  ;(req as IncomingMessage & { auth?: unknown }).auth = { token: 'held by portcullis', clientId: principal.subject, scopes: [] }
  await s.transport.handleRequest(req, res, body)
}

/** every byte sent back is recorded, as it was sent (the codecs behind the tools have masked it) */
function recordResponses(res: ServerResponse, session: Session): void {
  const write = res.write.bind(res) as (...a: unknown[]) => boolean
  const end = res.end.bind(res) as (...a: unknown[]) => ServerResponse
  const rec = (chunk: unknown) => {
    if (typeof chunk === 'string' || Buffer.isBuffer(chunk)) session.record('response', { status: res.statusCode, body: Buffer.from(chunk as string) })
  }
  res.write = ((chunk: unknown, ...rest: unknown[]) => {
    rec(chunk)
    return write(chunk, ...rest)
  }) as typeof res.write
  res.end = ((chunk?: unknown, ...rest: unknown[]) => {
    if (typeof chunk !== 'function') rec(chunk)
    return end(chunk, ...rest)
  }) as typeof res.end
}

/** ends every MCP session of a target (tests, shutdown) */
export function closeMcpSessions(target?: string): void {
  for (const [name, live] of sessions) if (!target || name === target) for (const s of [...live.values()]) s.close('closed')
}
