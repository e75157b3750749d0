// What the MCP server sends, message by message, before any of it reaches the agent: the answer to
// the client's request (a tools/list filtered by policy and checked against the pinned definitions;
// every result and error masked), its notifications (known ones passed, masked), and its own
// requests (sampling, elicitation, roots, ping: decided by the rules; refused ones answered to the
// server with a JSON-RPC error and never shown to the client). Each message is re-serialized from
// what was inspected: the client parses exactly what the gateway checked.
import type { Decision, MaskPlan, Session } from '@portcullis/core'
import { httpError } from '../errors.ts'
import { unmaskedType } from '../inspect.ts'
import { maskJson } from '../json-mask.ts'
import { upstreamFor } from '../upstream.ts'
import { callOperation, operation, pinOperation } from './classify.ts'
import { rpcError, RPC, toMessage, type JsonRpcId } from './jsonrpc.ts'
import { MAX_TOOLS, rememberTool, SERVER_REQUEST_CLASS, toolDef, type McpSessionState, type ServerState, type ToolDef } from './state.ts'

export interface ServerSide {
  session: Session
  /** the MCP endpoint: the upstream URL's path, which the client called too */
  path: string
  state: McpSessionState
  server: ServerState
  masks: MaskPlan
  /** the request this stream or body answers (POST); none for the GET stream */
  expect?: { id: JsonRpcId; method: string }
  /** headers a gateway answer to a server request carries (session id, protocol version) */
  sessionHeaders: Record<string, string>
  /** values masked so far */
  masked: number
}

const SERVER_NOTIFICATIONS = new Set([
  'notifications/message',
  'notifications/progress',
  'notifications/cancelled',
  'notifications/tools/list_changed',
  'notifications/resources/list_changed',
  'notifications/resources/updated',
  'notifications/prompts/list_changed',
  'notifications/elicitation/complete',
])

/** server requests passed to the client and not yet answered, per MCP session, at most */
const MAX_FORWARDED = 1024

function mask(ctx: ServerSide, v: unknown): unknown {
  if (v === undefined || ctx.masks.empty) return v
  const r = maskJson(v, ctx.masks)
  ctx.masked += r.count
  return r.value
}

/** a message the client is not sent: recorded (masked) with why */
function dropped(ctx: ServerSide, reason: string, obj: unknown, event = 'mcp-dropped', extra: Record<string, unknown> = {}): undefined {
  const masked = mask(ctx, obj)
  ctx.session.record('event', { event, reason, ...extra, message: Buffer.from(JSON.stringify(masked) ?? 'null') })
  return undefined
}

/**
 * Binary content in a result (image and audio data, resource blobs) is base64 no detector can read:
 * under a mask plan it is refused, like a binary HTTP body, unless the target lets its media type
 * through (options.unmaskedResponseTypes). Returns the media type refused, if any.
 */
function unreadable(ctx: ServerSide, result: unknown): string | undefined {
  if (ctx.masks.empty || !result || typeof result !== 'object') return undefined
  const r = result as { content?: unknown; contents?: unknown }
  const items = [...(Array.isArray(r.content) ? r.content : []), ...(Array.isArray(r.contents) ? r.contents : [])]
  for (const item of items) {
    if (!item || typeof item !== 'object') continue
    const it = item as { data?: unknown; blob?: unknown; mimeType?: unknown; resource?: { blob?: unknown; mimeType?: unknown } }
    const blob = it.data !== undefined || it.blob !== undefined ? it : it.resource?.blob !== undefined ? it.resource : undefined
    if (!blob) continue
    const type = typeof blob.mimeType === 'string' ? blob.mimeType : 'application/octet-stream'
    if (!unmaskedType(type, ctx.session.target)) return type
  }
  return undefined
}

/** one JSON value from the server → the text to pass on, or undefined to pass nothing */
export async function serverMessage(ctx: ServerSide, value: unknown): Promise<string | undefined> {
  // the client sends no batches through the gateway, so no batch answer is expected either
  if (Array.isArray(value)) throw httpError(502, 'upstream_unreadable', 'the MCP server sent a JSON-RPC batch, which the gateway does not pass')
  const msg = toMessage(value)
  const obj = value as Record<string, unknown>
  if ('invalid' in msg) return dropped(ctx, msg.invalid, value)
  if (msg.kind === 'response') {
    // an answer to another request than this one would be matched by the client to a call it did
    // not make through this exchange (and skip its filtering and masking)
    if (!ctx.expect || ctx.expect.id !== msg.id) return dropped(ctx, 'a response to no request of this exchange', value)
    if ('result' in obj) {
      const binary = unreadable(ctx, obj.result)
      if (binary !== undefined) {
        dropped(ctx, `binary ${binary} content cannot be masked`, value)
        return rpcError(msg.id, RPC.POLICY_BLOCKED, `the result holds ${binary} content, which the gateway cannot mask; refused under this session's masking rules`)
      }
      if (ctx.expect.method === 'tools/list') await filterTools(ctx, msg.result)
      obj.result = mask(ctx, obj.result)
    } else obj.error = mask(ctx, obj.error)
    return JSON.stringify(obj)
  }
  if (msg.kind === 'notification') {
    if (!SERVER_NOTIFICATIONS.has(msg.method)) return dropped(ctx, `unknown server notification ${msg.method}`, value)
    obj.params = mask(ctx, obj.params)
    return JSON.stringify(obj)
  }
  const decision = serverRequestDecision(ctx, msg.method)
  if (decision?.action === 'allow') {
    if (ctx.state.forwarded.size >= MAX_FORWARDED) ctx.state.forwarded.clear()
    ctx.state.forwarded.add(msg.id)
    obj.params = mask(ctx, obj.params)
    return JSON.stringify(obj)
  }
  const reason = decision ? decision.reason : SERVER_REQUEST_CLASS[msg.method] ? 'needs an approval, which a server request cannot wait for' : `server request ${msg.method} is not one the gateway knows`
  const t = ctx.session.target
  dropped(ctx, reason, value, 'mcp-server-request-refused', { method: msg.method })
  ctx.session.audit({ target: t.name, protocol: 'http', class: SERVER_REQUEST_CLASS[msg.method] ?? 'admin', statement: `${msg.method} (server request)`, decision: 'block', rule: decision?.rule ?? null, error: 'server_request_refused' })
  await answerServer(ctx, rpcError(msg.id, RPC.SERVER_REQUEST_REFUSED, `refused by the gateway: ${reason}`))
  return undefined
}

function serverRequestDecision(ctx: ServerSide, method: string): Decision | undefined {
  const cls = SERVER_REQUEST_CLASS[method]
  if (!cls) return undefined
  const op = operation(cls, `${method} (server request)`, [], { operation: method, profile: 'mcp', direction: 'server' }, undefined)
  return ctx.session.decideNow(op)
}

/** the gateway's own answer to a server request: POSTed to the server on the client's MCP session */
async function answerServer(ctx: ServerSide, body: string): Promise<void> {
  const target = ctx.session.target
  const upstream = upstreamFor(target)
  const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...ctx.sessionHeaders }
  const auth = target.upstream.auth
  if (auth) headers[auth.header.toLowerCase()] = auth.value.replace('{secret}', await ctx.session.secret(auth.secret))
  const res = await upstream.pool.request({ method: 'POST', path: ctx.path, headers, body })
  // the server says 202 Accepted; what it says is not the client's to see
  await res.body.dump()
  ctx.session.record('event', { event: 'mcp-answered-server', body: Buffer.from(body), status: res.statusCode })
}

/**
 * A tools/list result, in place: each tool's definition remembered (its annotations classify later
 * calls), pinned on first sight, and shown only when it still matches its pin and the policy would
 * not block a call to it. What this client was shown is what it may call.
 */
async function filterTools(ctx: ServerSide, result: unknown): Promise<void> {
  const tools = (result as { tools?: unknown } | null)?.tools
  if (!Array.isArray(tools)) throw httpError(502, 'upstream_unreadable', 'the MCP server answered tools/list without a tools array')
  const kept: unknown[] = []
  const { session } = ctx
  session.holdDecisions?.()
  try {
    for (const raw of tools) {
      const def = toolDef(raw)
      if (!def) {
        dropped(ctx, 'a tool without a name', raw)
        continue
      }
      rememberTool(ctx.server, def)
      if (!(await pinned(ctx, def)).ok) continue
      // a preview: nothing recorded or counted for calls that may never be made (the call, when
      // made, is decided like any request)
      if (session.wouldDecide(callOperation(session.target, ctx.path, def)).action === 'block') continue
      // a server listing tools without end does not grow this session's memory: past the bound a
      // new tool is not shown (and so cannot be called)
      if (!ctx.state.listed.has(def.name) && ctx.state.listed.size >= MAX_TOOLS) continue
      ctx.state.listed.add(def.name)
      kept.push(raw)
    }
  } finally {
    session.releaseDecisions?.()
  }
  ;(result as { tools: unknown[] }).tools = kept
}

export type PinCheck = { ok: true } | { ok: false; message: string; data: Record<string, unknown> }

/**
 * The tool's definition against its pin. First sight pins it. A changed one (description, schema)
 * asks for an approval of the change — always deferred: a tools/list is not held for a human — and
 * is blocked until one is given; approved, the new definition is pinned. Every blocked sight of a
 * change is recorded and audited.
 */
export async function pinned(ctx: Pick<ServerSide, 'session' | 'path' | 'server' | 'masks'>, def: ToolDef): Promise<PinCheck> {
  const { session, server } = ctx
  const pin = server.pinned.get(def.name)
  if (pin === undefined) {
    // pins are never forgotten (a forgotten pin would be re-pinned unseen): past the bound a new
    // tool is not pinned, and not shown
    if (server.pinned.size >= MAX_TOOLS) return { ok: false, message: `tool ${def.name}: this server has more tools than the gateway pins (${MAX_TOOLS})`, data: { tool: def.name } }
    server.pinned.set(def.name, def.hash)
    session.record('event', { event: 'mcp-tool-pinned', tool: def.name, hash: def.hash })
    return { ok: true }
  }
  if (pin === def.hash) return { ok: true }
  const p = pinOperation(ctx.path, def, ctx.masks)
  const d = session.decideNow(p.op) ?? (await session.decide(p.op, { defer: true, sent: p.sent }))
  const t = session.target
  const audit = { target: t.name, protocol: 'http' as const, class: p.op.class, resources: p.op.resources, fingerprint: p.op.fingerprint, rule: d.rule, ...(d.approvalId ? { approvalId: d.approvalId } : {}) }
  if (d.action === 'allow') {
    server.pinned.set(def.name, def.hash)
    session.record('event', { event: 'mcp-tool-repinned', tool: def.name, from: pin, hash: def.hash, approvalId: d.approvalId })
    session.audit({ ...audit, statement: p.op.statement, decision: 'allow' })
    return { ok: true }
  }
  session.record('event', { event: 'mcp-tool-changed', tool: def.name, pinned: pin, seen: def.hash, approvalId: d.approvalId })
  session.audit({ ...audit, statement: `tools/changed ${def.name}`, decision: d.deferred ? 'approve' : 'block', error: 'tool_changed' })
  const message = d.deferred
    ? `tool ${def.name} changed since it was pinned; blocked until the change is approved (request ${d.approvalId})`
    : `tool ${def.name} changed since it was pinned; blocked (${d.reason})`
  return { ok: false, message, data: { tool: def.name, rule: d.rule, ...(d.approvalId ? { approvalId: d.approvalId, poll: `/api/approvals/${d.approvalId}` } : {}) } }
}
