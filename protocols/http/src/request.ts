// One request, phase by phase: identity → intake (the body read when it is inspected, classified,
// recorded) → decision (allow, block, or an approval: held or deferred with 202) → the session's scope
// → forwarding upstream (request-side masking, streamed uploads under their cap, the gateway's own
// credential) → the response relay (relay.ts); errors answered once, audited once.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { Transform } from 'node:stream'
import { pipeline } from 'node:stream/promises'
import type { AuditEvent, TargetConfig } from '@portcullis/core'
import { decide, sentHttp } from './approval.ts'
import { hasBody, readBody } from './body.ts'
import { classifyHttp, findRoute, pathOnly, routeRules } from './classify.ts'
import { httpError, sendError, toHttpError, type HttpError } from './errors.ts'
import { httpEstimator } from './estimate.ts'
import { CLIENT_GONE, UpstreamCall, Upstreamed } from './forward.ts'
import { recordable, upstreamHeaders } from './headers.ts'
import { conns, identify, knownToken, tokenHeader } from './identity.ts'
import { isJsonType } from './inspect.ts'
import { maskJsonText } from './json-mask.ts'
import { mcpExchange } from './mcp/exchange.ts'
import type { Route } from './profiles.ts'
import { relay, type Stats } from './relay.ts'
import { scopeHttp } from './scope.ts'
import { upstreamCall } from './scope-upstream.ts'
import { upstreamFor } from './upstream.ts'

const targetRoutes = new WeakMap<TargetConfig, Route[]>()

/** the target's route rules, compiled once per config generation */
function routesOf(target: TargetConfig): Route[] {
  let r = targetRoutes.get(target)
  if (!r) targetRoutes.set(target, (r = routeRules(target.options.routes)))
  return r
}

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
      stats.requestBytes = raw.length
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
