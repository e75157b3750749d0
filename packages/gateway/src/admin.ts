// The admin HTTP API: approvals, live sessions, revocations, health and metrics. Authenticated with
// the same bearer tokens as the data path (core.authenticate); errors are JSON with stable codes:
//   { "error": { "code": "unauthenticated" | "forbidden" | "not_found" | "bad_request" |
//                        "method_not_allowed" | "conflict" | "payload_too_large" |
//                        "control_store_unavailable" (503) | "internal", "message" } }
// Who may do what:
//   GET /healthz                         anyone; says whether the control store answers (200 either
//                                        way: allowed traffic flows without it)
//   GET /metrics                         anyone when the admin listener is on loopback, else a valid
//                                        token (admin.metricsAuth: true|false overrides)
//   GET /api/approvals                   any valid token; lists the pending requests it may act on
//                                        (its groups are approvers) or that it made
//   GET /api/approvals/:id               one request in any state, to whoever may see it in the list
//   POST /api/approvals/:id/approve|deny core decides: approver groups only, never one's own request
//   POST /slack/interactions             Slack's button clicks (approvals.slack): Slack's request
//                                        signature, not a token; then the same approver rules
//   GET/DELETE /api/sessions, POST /api/revocations
//                                        members of admin.groups (default: [admins])
//   GET /api/recordings[/:day/:id], GET /api/audit
//                                        admin.groups or admin.auditors (api-records.ts)
//   /console/…                           the web console (console/), when admin.console is set;
//                                        its own sign-in and cookie, never a bearer token
// Who is an admin, approver or auditor is decided in access.ts, for the API and the console alike.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { once } from 'node:events'
import { approvalSummary, isPortcullisError, type Config, type Core, type Principal } from '@portcullis/core'
import { formatHostPort, isLoopback, parseHostPort } from './listen.ts'
import type { Logger } from './log.ts'
import { ADMIN_PAGE } from './admin-page.ts'
import { isAdmin, maySeeApproval } from './access.ts'
import { recordsApi } from './api-records.ts'
import { recordings } from './recordings.ts'
import { createConsole, type ConsoleSessionStore } from './console/index.ts'
import { SLACK_INTERACTIONS_PATH, type SlackApprovals } from './slack/index.ts'

export interface AdminOptions {
  core: Core
  listen: string
  /** config.admin; `groups` and `metricsAuth` are read when present */
  admin: NonNullable<Config['admin']>
  log: Logger
  /** where console sign-ins live (default: this process's memory) */
  consoleSessions?: ConsoleSessionStore
  /** /metrics' text (default: core.metrics.render()); a cluster worker answers for the whole host */
  metrics?: () => string | Promise<string>
  /** approvals.slack: Slack's interactivity requests (verified by signature, not by bearer token) */
  slack?: SlackApprovals
}

export interface AdminServer {
  url: string
  close(): Promise<void>
}

const MAX_BODY_BYTES = 64 * 1024
/** core's approval errors → HTTP status and our stable code */
const APPROVAL_ERRORS: Partial<Record<string, [number, string]>> = {
  APPROVAL_FORBIDDEN: [403, 'forbidden'],
  AUTH_FAILED: [403, 'forbidden'],
  TOKEN_EXPIRED: [403, 'forbidden'],
  REVOKED: [403, 'forbidden'],
  APPROVAL_NOT_FOUND: [404, 'not_found'],
  APPROVAL_NOT_PENDING: [409, 'conflict'],
  APPROVAL_ALREADY_COUNTED: [409, 'already_counted'],
  CONTROL_STORE_UNAVAILABLE: [503, 'control_store_unavailable'],
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
  ) {
    super(message)
  }
}

export async function startAdmin(opts: AdminOptions): Promise<AdminServer> {
  const { core, log } = opts
  const { host, port } = parseHostPort(opts.listen)
  const metricsAuth = opts.admin.metricsAuth ?? !isLoopback(host)
  let url = ''
  const recs = recordings(core)
  const records = recordsApi(core, recs)
  const web = opts.admin.console
    ? createConsole({ core, config: opts.admin.console, adminUrl: () => url, recordings: recs, log, ...(opts.consoleSessions ? { store: opts.consoleSessions } : {}) })
    : undefined

  async function principalOf(req: IncomingMessage): Promise<Principal> {
    const header = req.headers.authorization
    const m = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null
    if (!m) throw new HttpError(401, 'unauthenticated', 'a bearer token is required')
    try {
      return await core.authenticate(m[1]!)
    } catch (err) {
      // The reason names what was wrong with the token (expired, issuer…), never the token itself.
      throw new HttpError(401, 'unauthenticated', isPortcullisError(err) ? err.message : 'invalid token')
    }
  }

  async function requireAdmin(req: IncomingMessage): Promise<Principal> {
    const p = await principalOf(req)
    if (!isAdmin(p, core.config)) {
      throw new HttpError(403, 'forbidden', `requires membership of ${(core.config.admin?.groups ?? ['admins']).join(' or ')}`)
    }
    return p
  }

  /** the admin API's answer while the control store is away: 503, a stable code, nothing half done */
  function assertStore(): void {
    const h = core.control.health()
    if (!h.ok) throw new HttpError(503, 'control_store_unavailable', `the control store (${h.kind}) is unavailable`)
  }

  async function control<T>(fn: () => Promise<T>): Promise<T> {
    try {
      return await fn()
    } catch (err) {
      if (isPortcullisError(err, 'CONTROL_STORE_UNAVAILABLE'))
        throw new HttpError(503, 'control_store_unavailable', err.message)
      throw err
    }
  }

  async function route(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://admin')
    const path = url.pathname.replace(/\/+$/, '') || '/'
    const method = req.method ?? 'GET'
    const parts = path.split('/').filter(Boolean)

    if (path === '/healthz') {
      allow(method, ['GET', 'HEAD'])
      const store = core.control.health()
      const audit = core.auditFailure()
      return json(res, 200, {
        status: store.ok && !audit ? 'ok' : 'degraded',
        instance: core.instance,
        controlStore: { kind: store.kind, ok: store.ok, ...(store.error ? { error: store.error } : {}) },
        // operations are refused while the audit log cannot be written
        audit: audit ? { ok: false, error: audit.message } : { ok: true },
      })
    }
    if (path === '/metrics') {
      allow(method, ['GET'])
      if (metricsAuth) await principalOf(req)
      const text = await (opts.metrics ?? (() => core.metrics.render()))()
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' })
      return void res.end(text)
    }
    if (web && (await web.handle(req, res, url))) return
    if (path === '/') {
      allow(method, ['GET'])
      // with a console configured, people sign in there; the token page stays for setups without one
      if (web) {
        res.writeHead(303, { location: '/console/', 'content-length': 0 })
        return void res.end()
      }
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' })
      return void res.end(ADMIN_PAGE)
    }
    if (path === SLACK_INTERACTIONS_PATH && opts.slack) return opts.slack.handle(req, res)
    if (parts[0] !== 'api') throw new HttpError(404, 'not_found', `no such endpoint: ${path}`)
    const answer = await records(method, parts, url, () => principalOf(req))
    if (answer) {
      if (answer.status === 405) res.setHeader('allow', 'GET')
      return json(res, answer.status, answer.body)
    }

    // /api/approvals[/:id/(approve|deny)]
    if (parts[1] === 'approvals') {
      if (parts.length === 2) {
        allow(method, ['GET'])
        const p = await principalOf(req)
        // the mirror may be stale while the store is away: say so rather than show an old queue
        assertStore()
        const visible = core.approvals
          .list()
          .filter((a) => a.status === 'pending')
          .filter((a) => maySeeApproval(p, a, core.config))
        return json(res, 200, { approvals: visible.map(approvalSummary) })
      }
      if (parts.length === 3) {
        allow(method, ['GET'])
        const p = await principalOf(req)
        assertStore()
        const id = decodeURIComponent(parts[2]!)
        const a = await control(() => core.approvals.fetch(id))
        // one answer for unknown and not yours: ids are not to be probed
        if (!a || !maySeeApproval(p, a, core.config))
          throw new HttpError(404, 'not_found', `no approval request ${id}`)
        return json(res, 200, { approval: { ...approvalSummary(a), ...(a.reason ? { reason: a.reason } : {}) } })
      }
      if (parts.length === 4 && (parts[3] === 'approve' || parts[3] === 'deny')) {
        allow(method, ['POST'])
        const p = await principalOf(req)
        const id = decodeURIComponent(parts[2]!)
        const body = await readJson(req)
        // bounded: it goes into the request, the recording and the audit line
        const reason = typeof body.reason === 'string' ? body.reason.slice(0, 1000) : undefined
        try {
          assertStore()
          const done = parts[3] === 'approve' ? await core.approvals.approve(id, p, reason) : await core.approvals.deny(id, p, reason)
          log.info({ approval: id, by: p.subject, status: done.status, votes: done.approvals?.length ?? 0, minApprovals: done.minApprovals ?? 1 }, done.status === 'pending' ? 'approval vote counted' : 'approval decided')
          return json(res, 200, { approval: approvalSummary(done) })
        } catch (err) {
          if (isPortcullisError(err)) {
            const [status, code] = APPROVAL_ERRORS[err.code] ?? [409, 'conflict']
            throw new HttpError(status, code, err.message)
          }
          throw err
        }
      }
    }

    // /api/sessions[/:id]
    if (parts[1] === 'sessions') {
      if (parts.length === 2 && method === 'GET') {
        await requireAdmin(req)
        return json(res, 200, { sessions: await control(() => core.control.sessions()) })
      }
      if (parts.length === 2 && method === 'DELETE') {
        const p = await requireAdmin(req)
        const subject = url.searchParams.get('subject')
        if (!subject) throw new HttpError(400, 'bad_request', 'DELETE /api/sessions needs ?subject=')
        const killed = await control(() => core.control.killSubject(subject, `killed by ${p.subject}`))
        log.info({ subject, killed, by: p.subject }, 'sessions killed')
        return json(res, 200, { killed })
      }
      if (parts.length === 3) {
        allow(method, ['DELETE'])
        const p = await requireAdmin(req)
        const id = decodeURIComponent(parts[2]!)
        if (!(await control(() => core.control.kill(id, `killed by ${p.subject}`)))) throw new HttpError(404, 'not_found', `no live session ${id}`)
        log.info({ session: id, by: p.subject }, 'session killed')
        return json(res, 200, { killed: 1 })
      }
      allow(method, ['GET', 'DELETE'])
    }

    if (parts[1] === 'revocations' && parts.length === 2) {
      allow(method, ['POST'])
      const p = await requireAdmin(req)
      const body = await readJson(req)
      const subject = typeof body.subject === 'string' && body.subject ? body.subject : undefined
      const jti = typeof body.jti === 'string' && body.jti ? body.jti : undefined
      if (!subject && !jti) throw new HttpError(400, 'bad_request', 'give "subject" or "jti"')
      const entry = { ...(subject ? { subject } : {}), ...(jti ? { jti } : {}) }
      // applied here even when the store is away (revoking fails safe); the 503 says it did not spread
      await control(() => core.control.revoke(entry))
      log.info({ ...entry, by: p.subject }, 'revoked')
      return json(res, 200, { revoked: entry })
    }
    throw new HttpError(404, 'not_found', `no such endpoint: ${path}`)
  }

  const server = createServer((req, res) => {
    route(req, res).catch((err) => {
      if (err instanceof HttpError) {
        if (err.status === 405) res.setHeader('allow', err.message.replace(/^.*: /, ''))
        return json(res, err.status, { error: { code: err.code, message: err.message } })
      }
      log.error({ err, path: req.url }, 'admin request failed')
      json(res, 500, { error: { code: 'internal', message: 'internal error' } })
    })
  })
  server.listen(port, host)
  await Promise.race([once(server, 'listening'), once(server, 'error').then(([e]) => Promise.reject(e))])
  const addr = server.address()
  const actual = { host, port: addr && typeof addr === 'object' ? addr.port : port }
  url = `http://${formatHostPort(actual)}`
  log.info({ url }, 'admin API listening')
  return {
    url,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve())
        server.closeAllConnections()
      }),
  }
}

function allow(method: string, methods: string[]): void {
  if (!methods.includes(method)) throw new HttpError(405, 'method_not_allowed', `allowed: ${methods.join(', ')}`)
}

function json(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > MAX_BODY_BYTES) throw new HttpError(413, 'payload_too_large', `body over ${MAX_BODY_BYTES} bytes`)
    chunks.push(chunk)
  }
  if (size === 0) return {}
  try {
    const value: unknown = JSON.parse(Buffer.concat(chunks).toString('utf8'))
    if (value && typeof value === 'object' && !Array.isArray(value)) return value as Record<string, unknown>
  } catch {
    // fall through to the error below
  }
  throw new HttpError(400, 'bad_request', 'body must be a JSON object')
}

