// One request, phase by phase: identity (identity.ts) → intake (intake.ts: the body read when it is
// inspected, classified, recorded) → decision (allow, block, or an approval: held, or deferred with
// 202) → the session's scope (scope.ts) → forwarding upstream (forward.ts) → the response relay
// (relay.ts). Errors are answered once (errors.ts) and the request audited once, here.
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AuditEvent, Session } from '@portcullis/core'
import { decide, sentHttp } from './approval.ts'
import { pathOnly, type FoundRoute } from './classify.ts'
import { httpError, sendError, toHttpError, type HttpError } from './errors.ts'
import { httpEstimator } from './estimate.ts'
import { CLIENT_GONE, forward, Upstreamed } from './forward.ts'
import { conns, identify, knownToken } from './identity.ts'
import { intake } from './intake.ts'
import { mcpExchange } from './mcp/exchange.ts'
import { relay, type Stats } from './relay.ts'
import { scopeHttp } from './scope.ts'
import { upstreamCall } from './scope-upstream.ts'

export async function handle(req: IncomingMessage, res: ServerResponse, expectsContinue: boolean): Promise<void> {
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
  // what the request counts for its audit event; the MCP exchange (its own request and response
  // paths) counts into the same
  const stats: Stats = { requestBytes: 0, responseBytes: 0, masked: 0 }
  const up = new Upstreamed()
  res.once('close', () => {
    if (!res.writableFinished) up.abort(CLIENT_GONE())
  })
  try {
    if (!knownToken(conn, req)) await identify(conn, req)
    // remote MCP servers: JSON-RPC aware, message by message (mcp/exchange.ts)
    if (target.options.profile === 'mcp') return await mcpExchange({ req, res, session, event, up, expectsContinue, stats })
    const { found, withBody, op, raw, parsed } = await intake(req, res, session, expectsContinue, event, stats)

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
    const scoped = await applyScope(session, found, method, path, raw, parsed)
    const { upstreamPath, scopedBody, respond } = scoped
    const call = await forward({ req, res, session, method, upstreamPath, raw: scoped.raw, parsed: scoped.parsed, withBody, scopedBody, masks, readsAnswer: respond !== undefined, expectsContinue, up, stats })
    await relay({ res, session, method, call, masks, respond, stats })
  } catch (caught) {
    // an upload that broke its cap aborts the upstream request: answer with why it was aborted
    const err = up.reason !== undefined && !res.headersSent ? up.reason : caught
    const e: HttpError = toHttpError(err)
    event.error = e.code
    if (e.status === 403 && event.decision === undefined) event.decision = 'block'
    if (!res.headersSent) session.record('error', { status: e.status, code: e.code, message: e.message })
    sendError(res, e)
  } finally {
    event.bytes = stats.requestBytes + stats.responseBytes
    event.masked = stats.masked
    event.durationMs = Date.now() - started
    session.audit(event)
  }
}

interface Scoped {
  raw: Buffer | undefined
  parsed: unknown
  upstreamPath: string
  /** the body is the scope's, re-serialised */
  scopedBody: boolean
  /** the scope reads the upstream's answer (an object it created, a list to filter) */
  respond: ((json: unknown) => Promise<unknown>) | undefined
}

/** the session's scope (scope.ts): a filter AND-ed on, a namespace set, ids checked, or a refusal */
async function applyScope(session: Session, found: FoundRoute, method: string, path: string, raw: Buffer | undefined, parsed: unknown): Promise<Scoped> {
  const out: Scoped = { raw, parsed, upstreamPath: path, scopedBody: false, respond: undefined }
  if (!session.scope) return out
  const outcome = await scopeHttp({ profile: found.profile, operation: found.route?.operation, method, path, params: found.params, body: parsed }, session.scope, upstreamCall(session), session.objects)
  if (outcome && 'refuse' in outcome) {
    session.record('event', { event: 'scope-refused', reason: outcome.refuse })
    throw httpError(403, 'scope_refused', outcome.refuse)
  }
  if (outcome) {
    if (outcome.body !== undefined) {
      out.parsed = outcome.body
      out.raw = Buffer.from(JSON.stringify(outcome.body))
      out.scopedBody = true
    }
    if (outcome.path !== undefined) out.upstreamPath = outcome.path
    out.respond = outcome.respond
    session.record('event', { event: 'scope-applied', applied: outcome.applied, ...(outcome.body !== undefined ? { body: out.raw } : {}), ...(outcome.path !== undefined ? { path: out.upstreamPath } : {}) })
  }
  return out
}
