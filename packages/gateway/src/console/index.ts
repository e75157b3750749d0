// The web console, served by the admin listener under /console/: sign-in with the configured OIDC
// issuer, a server-side session behind an HttpOnly cookie, and pages rendered on the server (htmx
// refreshes parts of them). Every state-changing request is a POST that must carry the session's
// CSRF token and, when the browser sends one, an Origin equal to the console's own.
import { timingSafeEqual } from 'node:crypto'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { ConsoleConfig, Core } from '@portcullis/core'
import { rolesOf, type Roles } from '../access.ts'
import { isLoopback } from '../listen.ts'
import type { Logger } from '../log.ts'
import type { Recordings } from '../recordings.ts'
import { approvalList, approvalsPage, decide } from './approvals.ts'
import { ASSETS } from './assets.ts'
import { html, type Html } from './html.ts'
import { mayOpen, PAGES, plainPage, type PageContext, type PageName } from './layout.ts'
import { oidcLogin } from './oidc.ts'
import { policyPage } from './policy.ts'
import { auditPage, recordingsPage, replayPage } from './records.ts'
import { endSessions, sessionList, sessionsPage } from './sessions.ts'
import { MemoryConsoleSessionStore, newId, type ConsoleSession, type ConsoleSessionStore } from './session-store.ts'

export { MemoryConsoleSessionStore, type ConsoleSessionStore } from './session-store.ts'

export interface ConsoleOptions {
  core: Core
  config: ConsoleConfig
  /** the admin listener's own URL, known once it listens (the default public URL) */
  adminUrl: () => string
  recordings: Recordings
  log: Logger
  store?: ConsoleSessionStore
}

export interface WebConsole {
  /** false: not a console path (the admin API goes on) */
  handle(req: IncomingMessage, res: ServerResponse, url: URL): Promise<boolean>
}

/** a session lasts at most this long unless admin.console.sessionTtl says otherwise (the ID token may end it sooner) */
export const DEFAULT_SESSION_TTL_MS = 8 * 3600_000
const MAX_FORM_BYTES = 64 * 1024

const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'same-origin',
  'x-frame-options': 'DENY',
  'cache-control': 'no-store',
}

class Refusal extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message)
  }
}

export function createConsole(opts: ConsoleOptions): WebConsole {
  const { core, log, recordings } = opts
  const store = opts.store ?? new MemoryConsoleSessionStore()
  const base = () => (opts.config.url ?? opts.adminUrl()).replace(/\/+$/, '')
  const origin = () => new URL(base()).origin
  const secure = () => {
    const u = new URL(base())
    // Secure everywhere but plain http on this host: a browser drops a Secure cookie over http
    return u.protocol === 'https:' || !isLoopback(u.hostname.replace(/^\[|\]$/g, ''))
  }
  const cookieName = () => (secure() ? '__Host-portcullis_console' : 'portcullis_console')
  const loginCookie = () => (secure() ? '__Host-portcullis_login' : 'portcullis_login')
  const login = oidcLogin(core, opts.config, () => `${base()}/console/callback`)
  const ttl = opts.config.sessionTtl ?? DEFAULT_SESSION_TTL_MS
  let warned = false
  /** plain http beyond loopback: the cookie is Secure, so a browser would never send it back */
  const warnInsecure = () => {
    if (warned || !secure() || new URL(base()).protocol === 'https:') return
    warned = true
    log.warn({ url: base() }, 'the console is reached over plain http beyond loopback: its Secure cookie will not come back; set admin.console.url to the https address in front of it')
  }

  function setCookie(res: ServerResponse, name: string, value: string, maxAgeS: number): void {
    const attrs = [`${name}=${value}`, 'Path=/', 'HttpOnly', 'SameSite=Lax', `Max-Age=${Math.max(0, Math.floor(maxAgeS))}`]
    if (secure()) attrs.push('Secure')
    const prev = res.getHeader('set-cookie')
    res.setHeader('set-cookie', [...(Array.isArray(prev) ? prev : prev ? [String(prev)] : []), attrs.join('; ')])
  }

  function send(res: ServerResponse, status: number, body: Html | string, headers: Record<string, string> = {}): void {
    const text = String(body)
    res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'content-length': Buffer.byteLength(text), ...SECURITY_HEADERS, ...headers })
    res.end(text)
  }

  function redirect(res: ServerResponse, to: string): void {
    res.writeHead(303, { location: to, ...SECURITY_HEADERS, 'content-length': 0 })
    res.end()
  }

  async function signedIn(req: IncomingMessage): Promise<{ id: string; session: ConsoleSession } | undefined> {
    const id = cookie(req, cookieName())
    if (!id) return undefined
    const session = await store.get(id)
    if (!session) return undefined
    const p = session.principal
    // a revocation ends console sessions too, as it ends data-path sessions
    if (core.revocations().some((r) => r.subject === p.subject && r.jti === undefined)) {
      await store.delete(id)
      return undefined
    }
    return { id, session }
  }

  function checkCsrf(req: IncomingMessage, session: ConsoleSession, form: URLSearchParams): void {
    const o = req.headers.origin
    if (o !== undefined && o !== origin()) throw new Refusal(403, 'cross-origin request refused')
    const site = req.headers['sec-fetch-site']
    if (site !== undefined && site !== 'same-origin' && site !== 'none') throw new Refusal(403, 'cross-site request refused')
    const given = (req.headers['x-csrf-token'] as string | undefined) ?? form.get('_csrf') ?? ''
    const a = Buffer.from(given)
    const b = Buffer.from(session.csrf)
    if (a.length !== b.length || !timingSafeEqual(a, b)) throw new Refusal(403, 'missing or wrong CSRF token')
  }

  function forbidden(res: ServerResponse, ctx: PageContext | undefined, why: string): void {
    send(
      res,
      403,
      plainPage(
        'Not allowed',
        html`<h1>Not allowed</h1><p id="forbidden">${why}</p>${
          ctx
            ? html`<p>Signed in as <strong>${ctx.principal.subject}</strong>${ctx.principal.groups.length ? ` [${ctx.principal.groups.join(', ')}]` : ' (no groups)'}.</p>
<form method="post" action="/console/logout"><input type="hidden" name="_csrf" value="${ctx.csrf}"><button type="submit">Sign out</button></form>`
            : ''
        }`,
      ),
    )
  }

  async function startLogin(res: ServerResponse, returnTo: string): Promise<void> {
    warnInsecure()
    let started
    try {
      started = await login.start(returnTo)
    } catch (err) {
      log.warn({ err: (err as Error).message, issuer: opts.config.issuer }, 'console sign-in cannot start')
      throw new Refusal(503, `the identity provider cannot be reached: ${(err as Error).message}`)
    }
    const { url, login: pending } = started
    const id = newId()
    await store.putLogin(id, pending)
    setCookie(res, loginCookie(), id, 600)
    res.writeHead(303, { location: url.href, ...SECURITY_HEADERS, 'content-length': 0 })
    res.end()
  }

  async function callback(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const id = cookie(req, loginCookie())
    const pending = id ? await store.takeLogin(id) : undefined
    setCookie(res, loginCookie(), '', 0)
    if (!pending) throw new Refusal(400, 'this sign-in is unknown or too old: start again')
    let principal
    try {
      // the URL the issuer redirected to, on our public base (state, code, iss are in its query)
      principal = await login.finish(new URL(`${base()}/console/callback${url.search}`), pending)
    } catch (err) {
      log.warn({ err: (err as Error).message }, 'console sign-in failed')
      throw new Refusal(400, `sign-in failed: ${(err as Error).message}`)
    }
    const now = Date.now()
    const session: ConsoleSession = {
      principal,
      csrf: newId(),
      created: now,
      expires: Math.min(principal.expiresAt ?? now + ttl, now + ttl),
    }
    const sid = newId()
    await store.put(sid, session)
    setCookie(res, cookieName(), sid, (session.expires - now) / 1000)
    log.info({ subject: principal.subject, groups: principal.groups }, 'console sign-in')
    redirect(res, safeReturn(pending.returnTo))
  }

  async function route(req: IncomingMessage, res: ServerResponse, url: URL): Promise<void> {
    const method = req.method ?? 'GET'
    const path = url.pathname.replace(/\/+$/, '') || '/'
    const asset = ASSETS.get(url.pathname)
    if (asset) {
      if (method !== 'GET' && method !== 'HEAD') throw new Refusal(405, 'GET only')
      res.writeHead(200, { 'content-type': asset.type, 'content-length': asset.body.length, 'cache-control': 'public, max-age=31536000, immutable', 'x-content-type-options': 'nosniff' })
      return void res.end(method === 'HEAD' ? undefined : asset.body)
    }
    if (path === '/console/login' && method === 'GET') return startLogin(res, url.searchParams.get('next') ?? '/console/')
    if (path === '/console/callback' && method === 'GET') return callback(req, res, url)
    if (path === '/console/signed-out' && method === 'GET')
      return send(res, 200, plainPage('Signed out', html`<h1>Signed out</h1><p><a href="/console/login">Sign in again</a></p>`))

    const current = await signedIn(req)
    if (!current) {
      if (method === 'GET' && !req.headers['hx-request']) return startLogin(res, url.pathname + url.search)
      // an open page whose session ended: htmx leaves a 401 unswapped, so tell it to go and sign in
      if (req.headers['hx-request']) res.setHeader('hx-redirect', '/console/login')
      throw new Refusal(401, 'not signed in')
    }
    const form = method === 'POST' ? await readForm(req) : new URLSearchParams()
    const ctx: PageContext = { principal: current.session.principal, roles: rolesOf(current.session.principal, core.config), csrf: current.session.csrf }
    if (method === 'POST') checkCsrf(req, current.session, form)
    else if (method !== 'GET' && method !== 'HEAD') throw new Refusal(405, 'GET or POST only')

    if (path === '/console/logout' && method === 'POST') {
      await store.delete(current.id)
      setCookie(res, cookieName(), '', 0)
      log.info({ subject: ctx.principal.subject }, 'console sign-out')
      return redirect(res, '/console/signed-out')
    }
    const parts = path.split('/').filter(Boolean).slice(1)
    const name = (parts[0] ?? '') as PageName | ''
    if (name === '') {
      const first = PAGES.find((p) => p.may(ctx.roles))
      if (!first) return forbidden(res, ctx, 'Your groups give you no role in this console (admins, approvers or auditors).')
      return redirect(res, `/console/${first.name}`)
    }
    if (!PAGES.some((p) => p.name === name)) throw new Refusal(404, 'no such page')
    if (!mayOpen(name, ctx.roles)) return forbidden(res, ctx, `Your groups do not open the ${name} page.`)
    const hx = req.headers['hx-request'] === 'true'

    switch (name) {
      case 'approvals': {
        if (parts.length === 1 && method === 'GET') return send(res, 200, await approvalsPage(core, ctx))
        if (parts.length === 2 && parts[1] === 'list' && method === 'GET') return send(res, 200, await approvalList(core, ctx))
        if (parts.length === 3 && parts[2] === 'decide' && method === 'POST') {
          const id = decodeURIComponent(parts[1]!)
          const flash = await decide(core, ctx, id, form)
          log.info({ approval: id, by: ctx.principal.subject, ok: flash.ok, via: 'console' }, 'approval decided')
          return hx ? send(res, 200, await approvalList(core, ctx, flash)) : redirect(res, '/console/approvals')
        }
        break
      }
      case 'sessions': {
        if (parts.length === 1 && method === 'GET') return send(res, 200, await sessionsPage(core, ctx))
        if (parts.length === 2 && parts[1] === 'list' && method === 'GET') return send(res, 200, await sessionList(core, ctx))
        if (parts.length === 2 && (parts[1] === 'end' || parts[1] === 'end-subject') && method === 'POST') {
          if (!ctx.roles.admin) return forbidden(res, ctx, 'Only admins end sessions.')
          const flash = await endSessions(core, ctx, parts[1] === 'end' ? 'one' : 'subject', form)
          log.info({ by: ctx.principal.subject, what: parts[1], ok: flash.ok, via: 'console' }, 'sessions ended')
          return hx ? send(res, 200, await sessionList(core, ctx, flash)) : redirect(res, '/console/sessions')
        }
        break
      }
      case 'recordings': {
        if (parts.length === 1 && method === 'GET') return send(res, 200, await recordingsPage(recordings, ctx, url.searchParams))
        if (parts.length === 3 && method === 'GET') {
          const p = await replayPage(recordings, ctx, decodeURIComponent(parts[1]!), decodeURIComponent(parts[2]!))
          if (!p) throw new Refusal(404, 'no such recording')
          return send(res, 200, p)
        }
        break
      }
      case 'audit':
        if (parts.length === 1 && method === 'GET') return send(res, 200, await auditPage(core, ctx, url.searchParams))
        break
      case 'policy':
        if (parts.length === 1) return send(res, 200, await policyPage(core, ctx, method === 'POST' ? form : undefined))
        break
    }
    throw new Refusal(404, 'no such page')
  }

  return {
    async handle(req, res, url) {
      if (url.pathname !== '/console' && !url.pathname.startsWith('/console/')) return false
      try {
        await route(req, res, url)
      } catch (err) {
        if (!(err instanceof Refusal)) throw err
        send(res, err.status, plainPage('Refused', html`<h1>${err.status === 404 ? 'Not found' : 'Refused'}</h1><p id="refusal">${err.message}</p>`))
      }
      return true
    },
  }
}

/** only a path on this console: never an absolute URL the login could be sent on to */
function safeReturn(to: string): string {
  return to.startsWith('/console/') && !to.startsWith('//') && !to.includes('\\') ? to : '/console/'
}

function cookie(req: IncomingMessage, name: string): string | undefined {
  const header = req.headers.cookie
  if (!header) return undefined
  for (const part of header.split(';')) {
    const i = part.indexOf('=')
    if (i > 0 && part.slice(0, i).trim() === name) return part.slice(i + 1).trim() || undefined
  }
  return undefined
}

async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase()
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > MAX_FORM_BYTES) throw new Refusal(413, `form over ${MAX_FORM_BYTES} bytes`)
    chunks.push(chunk)
  }
  if (size === 0) return new URLSearchParams()
  if (type !== 'application/x-www-form-urlencoded') throw new Refusal(415, 'forms only (application/x-www-form-urlencoded)')
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'))
}
