// The `mcp` profile: a remote MCP server (Streamable HTTP) behind the gateway. Each POST carries one
// JSON-RPC message, classified (classify.ts), decided by the core's policy like any HTTP request
// (approval included: wait, or in defer mode a JSON-RPC error carrying the request id), sent with
// the target's own credential; the answer — one JSON body or an SSE stream — goes to the client
// message by message (server-messages.ts). GET opens the server's own SSE stream (decided as a
// session operation, inspected the same way); DELETE ends the MCP session.
import type { IncomingMessage, ServerResponse } from 'node:http'
import { StringDecoder } from 'node:string_decoder'
import { createParser, type EventSourceMessage } from 'eventsource-parser'
import { PortcullisError, type AuditEvent, type Decision, type Session } from '@portcullis/core'
import { canonicalPath } from '../classify.ts'
import { httpError } from '../errors.ts'
import { collectSink, readableSink, UpstreamCall } from '../forward.ts'
import { isJsonType, maskTextBody } from '../inspect.ts'
import { maskJson } from '../json-mask.ts'
import { decide } from '../approval.ts'
import { readBody } from '../body.ts'
import type { Upstreamed } from '../forward.ts'
import { recordable, responseHeaders, upstreamHeaders } from '../headers.ts'
import { tokenHeader } from '../identity.ts'
import { upstreamFor } from '../upstream.ts'
import { classifyMessage, operation, sentOf, type Classified } from './classify.ts'
import { repeatedKey, rpcError, RPC, toMessage, type JsonRpcId } from './jsonrpc.ts'
import { pinned, serverMessage, type ServerSide } from './server-messages.ts'
import { bindSession, forgetSession, knownSession, newSession, serverState, statelessSession, type McpSessionState } from './state.ts'

const CANCELLED = () => httpError(403, 'approval_withdrawn', 'approval withdrawn: the client cancelled the request (notifications/cancelled)')

export interface McpCall {
  req: IncomingMessage
  res: ServerResponse
  session: Session
  event: Partial<AuditEvent>
  up: Upstreamed
  expectsContinue: boolean
  stats: { requestBytes: number; responseBytes: number; masked: number }
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name]
  return typeof v === 'string' ? v : undefined
}

/** the gateway's own JSON-RPC answer (a refusal), recorded as sent */
function answer(c: McpCall, status: number, body: string, error: string): void {
  c.event.error = error
  const buf = Buffer.from(body)
  c.res.writeHead(status, { 'content-type': 'application/json', 'content-length': buf.length })
  c.res.end(buf)
  c.stats.responseBytes += buf.length
  c.session.record('response', { status, body: buf })
}

export async function mcpExchange(c: McpCall): Promise<void> {
  const { req, session } = c
  const target = session.target
  const method = (req.method ?? 'GET').toUpperCase()
  // one endpoint: upstream.url is the MCP endpoint, and the client calls the same path here. The
  // policy decides on the message, not the path, so no other path of the server's host (an admin
  // API beside the MCP one, `/mcp/../admin`) is reachable with the target's credential
  const path = upstreamFor(target).prefix || '/'
  if (canonicalPath(req.url ?? '/') !== path) {
    session.record('request', { method, path: req.url, headers: recordable(req.headers, tokenHeader(target)) })
    return answer(c, 404, rpcError(null, RPC.INVALID_REQUEST, `the MCP endpoint is ${path}`), 'not_found')
  }
  // no scope field applies to an MCP server (check-config says so); one that slipped through is
  // not silently ignored
  if (session.scope) {
    session.record('request', { method, path, headers: recordable(req.headers, tokenHeader(target)) })
    return answer(c, 403, rpcError(null, RPC.POLICY_BLOCKED, 'this target has a scope, which the mcp profile cannot enforce; refused'), 'scope_refused')
  }
  const subject = session.principal!.subject
  const sid = header(req, 'mcp-session-id')
  // an MCP session is bound to the subject that initialized it through this gateway: another
  // caller presenting its id is not let into it
  const known = sid !== undefined ? knownSession(target, sid, subject) : undefined
  if (sid !== undefined && !known) {
    session.record('request', { method, path, headers: recordable(req.headers, tokenHeader(target)) })
    // what a Streamable HTTP server answers for a session it does not hold (the client starts a new
    // one); said plainly, since here it also means "initialized on another worker or instance"
    return answer(c, 404, rpcError(null, RPC.INVALID_REQUEST, 'MCP session not found on this gateway instance (ended, another caller\'s, or initialized on another worker or gateway: MCP proxy state is per process); send initialize to start a new session'), 'mcp_session_unknown')
  }
  if (method === 'GET' || method === 'DELETE') return sessionRequest(c, method, path, known ?? statelessSession(target, subject), sid)
  if (method !== 'POST') {
    session.record('request', { method, path, headers: recordable(req.headers, tokenHeader(target)) })
    return answer(c, 405, rpcError(null, RPC.INVALID_REQUEST, `${method} is not an MCP Streamable HTTP method`), 'method_not_allowed')
  }
  if (!isJsonType(req.headers['content-type'])) return answer(c, 415, rpcError(null, RPC.INVALID_REQUEST, 'an MCP message is application/json'), 'unsupported_media_type')
  if (c.expectsContinue) c.res.writeContinue()
  const raw = await readBody(req, target.limits.maxMessageBytes)
  c.stats.requestBytes = raw.length
  session.record('request', { method, path, headers: recordable(req.headers, tokenHeader(target)), body: raw })
  const text = raw.toString('utf8')
  let value: unknown
  let repeated: string | undefined
  try {
    value = JSON.parse(text)
    repeated = repeatedKey(text)
  } catch {
    return answer(c, 400, rpcError(null, -32700, 'parse error: the body is not one JSON value'), 'bad_request')
  }
  if (Array.isArray(value)) return answer(c, 400, rpcError(null, RPC.INVALID_REQUEST, 'JSON-RPC batches are not accepted: send one message per request'), 'mcp_batch_refused')
  const msg = toMessage(value)
  if ('invalid' in msg) return answer(c, 400, rpcError(null, RPC.INVALID_REQUEST, msg.invalid), 'bad_request')
  const id: JsonRpcId | null = msg.kind === 'request' ? msg.id : null
  // a request is answered with a JSON-RPC error the client's SDK hands to the caller; a
  // notification or a client's response has no id to answer to: an HTTP error
  const refusedStatus = (http: number) => (id === null ? http : 200)
  if (repeated !== undefined) return answer(c, refusedStatus(400), rpcError(id, RPC.INVALID_REQUEST, `key "${repeated}" appears twice in one object; refused`), 'mcp_repeated_key')
  const state = known ?? (msg.kind === 'request' && msg.method === 'initialize' ? newSession(subject) : statelessSession(target, subject))
  const server = serverState(target)
  const masks = session.masks
  c.event.statement = msg.kind === 'response' ? 'response' : msg.method
  const classified = classifyMessage(msg, { target, path, state, server, masks })
  if ('refuse' in classified) {
    c.event.decision = 'block'
    return answer(c, refusedStatus(400), rpcError(id, classified.refuse.code, classified.refuse.message), 'mcp_refused')
  }
  const { op } = classified
  c.event.class = op.class
  c.event.resources = op.resources
  c.event.fingerprint = op.fingerprint
  c.event.statement = op.statement
  if (classified.tool) {
    const pin = await pinned({ session, path, server, masks }, classified.tool)
    if (!pin.ok) {
      c.event.decision = 'block'
      return answer(c, refusedStatus(403), rpcError(id, RPC.TOOL_CHANGED, pin.message, pin.data), 'tool_changed')
    }
  }
  let decision: Decision
  if (msg.kind === 'request') {
    state.held.set(msg.id, c.up)
    try {
      decision = await decided(c, classified)
    } catch (err) {
      // withdrawn by the client's own notifications/cancelled: the held POST is answered like the
      // other refusals, a JSON-RPC error to its id (a client gone away is not answered at all)
      const why = c.up.reason as { code?: string; message: string } | undefined
      if (why?.code !== 'approval_withdrawn' || !(err instanceof PortcullisError) || err.code !== 'APPROVAL_WITHDRAWN') throw err
      c.event.decision = 'block'
      const approvalId = err.details.approvalId as string | undefined
      return answer(c, 200, rpcError(id, RPC.POLICY_BLOCKED, why.message, { status: 'withdrawn', ...(approvalId ? { approvalId } : {}) }), 'approval_withdrawn')
    } finally {
      state.held.delete(msg.id)
    }
  } else decision = await decided(c, classified)
  if (!allowed(c, decision, id)) return
  // the client gave up on a request of its own: one still held for approval is withdrawn (the
  // server is told too, as the client meant it to be)
  if (msg.kind === 'notification' && msg.method === 'notifications/cancelled') {
    const requestId = msg.params?.requestId
    if (typeof requestId === 'string' || typeof requestId === 'number') state.held.get(requestId)?.abort(CANCELLED())
  }
  const sessionHeaders: Record<string, string> = {}
  if (sid !== undefined) sessionHeaders['mcp-session-id'] = sid
  const version = header(req, 'mcp-protocol-version')
  if (version !== undefined) sessionHeaders['mcp-protocol-version'] = version
  let body = raw
  // options.maskRequests: what the agent hands a third-party server (a tool's or a prompt's
  // arguments, its answer to a sampling or elicitation request) masked before the server sees it;
  // the envelope (method, tool name, id) untouched
  if (target.options.maskRequests === true && !decision.masks.empty) {
    const holder = (msg.kind === 'response' ? value : (value as { params?: unknown }).params) as Record<string, unknown> | undefined
    const key = msg.kind === 'response' ? 'result' : 'arguments'
    const part = holder?.[key]
    if (part !== null && typeof part === 'object') {
      const r = maskJson(part, decision.masks)
      if (r.count > 0) {
        holder![key] = r.value
        c.stats.masked += r.count
        body = Buffer.from(JSON.stringify(value))
        session.record('event', { event: 'request-masked', masked: r.count, body })
      }
    }
  }
  const call = await send(c, 'POST', path, body)
  const head = await call.head
  // the server's session id for this caller: later requests must carry it and come from the same subject
  const given = head.headers['mcp-session-id']
  if (msg.kind === 'request' && msg.method === 'initialize' && head.status === 200 && typeof given === 'string') {
    bindSession(target, given, state)
    sessionHeaders['mcp-session-id'] = given
  }
  const side: ServerSide = { session, path, state, server, masks: decision.masks, sessionHeaders, masked: 0, ...(msg.kind === 'request' ? { expect: { id: msg.id, method: msg.method } } : {}) }
  try {
    await relay(c, call, head, side)
  } finally {
    c.stats.masked += side.masked
  }
}

/** GET (the server's SSE stream) and DELETE (end of the MCP session): session operations */
async function sessionRequest(c: McpCall, method: 'GET' | 'DELETE', path: string, state: McpSessionState, sid: string | undefined): Promise<void> {
  const { session, req } = c
  const target = session.target
  session.record('request', { method, path, headers: recordable(req.headers, tokenHeader(target)) })
  const statement = method === 'GET' ? 'GET (server stream)' : 'DELETE (end session)'
  const op = operation('session', statement, [], { method, path, operation: method === 'GET' ? 'stream' : 'terminate', profile: 'mcp' }, undefined)
  c.event.class = op.class
  c.event.statement = statement
  c.event.fingerprint = op.fingerprint
  const decision = await decided(c, { op, sent: sentOf(statement, undefined, session.masks) })
  if (!allowed(c, decision, null)) return
  const sessionHeaders: Record<string, string> = {}
  if (sid !== undefined) sessionHeaders['mcp-session-id'] = sid
  const version = header(req, 'mcp-protocol-version')
  if (version !== undefined) sessionHeaders['mcp-protocol-version'] = version
  const call = await send(c, method, path, undefined)
  const head = await call.head
  if (method === 'DELETE' && head.status < 300 && sid !== undefined) forgetSession(target, sid)
  const side: ServerSide = { session, path, state, server: serverState(target), masks: decision.masks, sessionHeaders, masked: 0 }
  try {
    await relay(c, call, head, side)
  } finally {
    c.stats.masked += side.masked
  }
}

async function decided(c: McpCall, { op, sent }: Pick<Classified, 'op' | 'sent'>): Promise<Decision> {
  const now = c.session.decideNow(op)
  return now ?? (await decide(c.session, op, c.up, c.req.socket, sent))
}

/** true when the decision lets the message go on; otherwise the refusal is answered */
function allowed(c: McpCall, d: Decision, id: JsonRpcId | null): boolean {
  const { event } = c
  if (d.deferred && d.approvalId) {
    event.decision = 'approve'
    event.approvalId = d.approvalId
    const data = { approvalId: d.approvalId, status: 'pending', poll: `/api/approvals/${d.approvalId}`, wait: `portcullis approvals wait ${d.approvalId}` }
    answer(c, id === null ? 202 : 200, rpcError(id, RPC.APPROVAL_PENDING, `approval pending: request ${d.approvalId}; send the same call again once it is approved`, data), 'approval_pending')
    return false
  }
  event.decision = d.action
  event.rule = d.rule
  if (d.approvalId !== undefined) event.approvalId = d.approvalId
  if (d.action === 'allow') return true
  const data: Record<string, unknown> = { rule: d.rule }
  if (d.approvalId) data.approvalId = d.approvalId
  answer(c, id === null ? 403 : 200, rpcError(id, RPC.POLICY_BLOCKED, d.reason || 'blocked by policy', data), 'policy_blocked')
  return false
}

/** the message to the server, with the target's credential (never the caller's) */
async function send(c: McpCall, method: string, path: string, body: Buffer | undefined): Promise<UpstreamCall> {
  const { req, session } = c
  const target = session.target
  const headers = upstreamHeaders(req, target, true)
  // inspected whole: an encoding the gateway would have to undo is not asked for
  delete headers['accept-encoding']
  if (body) {
    headers['content-length'] = String(body.length)
    delete headers['transfer-encoding']
  }
  const auth = target.upstream.auth
  if (auth) headers[auth.header.toLowerCase()] = auth.value.replace('{secret}', await session.secret(auth.secret))
  if (c.up.reason) throw c.up.reason
  const upstream = upstreamFor(target)
  const call = (c.up.call = new UpstreamCall())
  upstream.pool.dispatch({ method: method as 'POST', path, headers, body }, call)
  return call
}

/** the server's answer to the client: an SSE stream event by event, a JSON-RPC body, or other text masked */
async function relay(c: McpCall, call: UpstreamCall, head: Awaited<UpstreamCall['head']>, side: ServerSide): Promise<void> {
  const { res, session } = c
  const target = session.target
  const status = head.status
  const out = responseHeaders(head.headers)
  const ctype = String(head.headers['content-type'] ?? '')
  const ce = String(head.headers['content-encoding'] ?? '').trim().toLowerCase()
  if (ce !== '' && ce !== 'identity') {
    call.abort(httpError(502, 'upstream_unreadable', `cannot inspect a ${ce}-encoded response`))
    throw httpError(502, 'upstream_unreadable', `cannot inspect a ${ce}-encoded response`)
  }
  delete out['content-length']
  if (/^\s*text\/event-stream\b/i.test(ctype)) return relayStream(c, call, status, out, side)
  const limit = target.limits.maxMessageBytes
  const collected = collectSink(call, limit, () => httpError(502, 'response_too_large', `the upstream response is larger than the inspection limit (${limit} bytes)`))
  call.attach(collected.sink)
  let body = await collected.body
  if (body.length > 0) {
    let value: unknown
    let json = false
    if (isJsonType(ctype)) {
      try {
        value = JSON.parse(body.toString('utf8'))
        json = !('invalid' in toMessage(value)) || Array.isArray(value)
      } catch {
        json = false
      }
    }
    if (json) {
      const text = await serverMessage(side, value)
      // a message that may not reach the client (a stray answer) leaves the request unanswered
      body = Buffer.from(text ?? rpcError(side.expect?.id ?? null, RPC.INVALID_REQUEST, 'the MCP server sent no answer the gateway could pass'))
    } else {
      const r = maskTextBody(body, ctype, side.masks)
      side.masked += r.count
      body = r.body
    }
  }
  out['content-length'] = String(body.length)
  res.writeHead(status, out)
  res.end(body)
  c.stats.responseBytes += body.length
  session.record('response', { status, headers: out, body })
}

const EVENT_NAME = /^[\w.-]{1,64}$/

/** one SSE event as sent on to the client: rebuilt from what was inspected */
function eventText(e: EventSourceMessage, data: string): string {
  let s = ''
  if (e.event && EVENT_NAME.test(e.event)) s += `event: ${e.event}\n`
  if (e.id !== undefined) s += `id: ${e.id}\n`
  return s + `data: ${data}\n\n`
}

async function relayStream(c: McpCall, call: UpstreamCall, status: number, out: Record<string, string | string[]>, side: ServerSide): Promise<void> {
  const { res, session } = c
  const limit = session.target.limits.maxMessageBytes
  const events: EventSourceMessage[] = []
  // the SDK's own client parses SSE with this parser: the gateway reads the stream as it will
  const parser = createParser({ onEvent: e => void events.push(e) })
  const decoder = new StringDecoder('utf8')
  session.record('response', { status, headers: out, streaming: true })
  res.writeHead(status, out)
  const { body, sink } = readableSink(call)
  call.attach(sink)
  let unread = 0
  const flush = async () => {
    for (const e of events.splice(0)) {
      unread = 0
      const text = await streamEvent(side, e)
      if (text === undefined) continue
      const buf = Buffer.from(text)
      c.stats.responseBytes += buf.length
      session.record('response', { status, event: buf })
      if (!res.write(buf)) await new Promise<void>(resolve => res.once('drain', resolve))
    }
  }
  for await (const chunk of body as AsyncIterable<Buffer>) {
    unread += chunk.length
    parser.feed(decoder.write(chunk))
    if (events.length === 0 && unread > limit) throw httpError(502, 'response_too_large', 'server-sent event larger than the inspection limit')
    await flush()
  }
  parser.feed(decoder.end())
  await flush()
  res.end()
}

async function streamEvent(side: ServerSide, e: EventSourceMessage): Promise<string | undefined> {
  // a priming event (an id for resuming, no message) carries nothing to inspect
  if (e.data === '') return eventText(e, '')
  let value: unknown
  try {
    value = JSON.parse(e.data)
  } catch {
    // not a message: there is no telling what the client would make of it (fail closed)
    throw httpError(502, 'upstream_unreadable', 'the MCP server sent an event that is not JSON')
  }
  const text = await serverMessage(side, value)
  return text === undefined ? undefined : eventText(e, text)
}
