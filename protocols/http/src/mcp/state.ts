// What the MCP proxy remembers, in this gateway process:
//   per server (target name + upstream URL, so a config reload keeps it): each tool's definition as
//   last seen in a tools/list, and the pinned hash of its name, description and inputSchema;
//   per MCP session (Mcp-Session-Id, bound to the subject that initialized it): the tool names this
//   client was shown, and the ids of the server's requests passed to it (a client answer must
//   match one). Both are bounded; the oldest MCP session is forgotten first.
import { createHash } from 'node:crypto'
import { matchName, type OperationClass, type TargetConfig, CLASSES } from '@portcullis/core'
import type { JsonRpcId } from './jsonrpc.ts'

export interface ToolDef {
  name: string
  /** sha256 (hex) of the canonical JSON of { name, description, inputSchema } */
  hash: string
  readOnly: boolean
  destructive: boolean
  /** as the server sent it (shown to the approver of a change) */
  definition: Record<string, unknown>
}

export interface ServerState {
  latest: Map<string, ToolDef>
  pinned: Map<string, string>
}

export interface McpSessionState {
  subject: string
  /** tools/list results shown to this client, by tool name */
  listed: Set<string>
  /** ids of server requests passed to the client, awaiting its answer */
  forwarded: Set<JsonRpcId>
  /** the client's requests being decided (an approval may hold them): notifications/cancelled withdraws one */
  held: Map<JsonRpcId, { abort(reason: Error): void }>
}

const MAX_SESSIONS = 10_000
/** tools remembered and pinned per server, and shown per MCP session */
export const MAX_TOOLS = 10_000
const servers = new Map<string, ServerState>()
const sessions = new Map<string, McpSessionState>()

export function serverKey(target: TargetConfig): string {
  return `${target.name}\0${target.upstream.url ?? ''}`
}

export function serverState(target: TargetConfig): ServerState {
  const key = serverKey(target)
  let s = servers.get(key)
  if (!s) servers.set(key, (s = { latest: new Map(), pinned: new Map() }))
  return s
}

/** the MCP session by its id; undefined when this gateway did not see it initialized by this subject */
export function knownSession(target: TargetConfig, id: string, subject: string): McpSessionState | undefined {
  const s = sessions.get(`${serverKey(target)}\0${id}`)
  return s && s.subject === subject ? s : undefined
}

/** a server that gives no session id: one state per subject */
export function statelessSession(target: TargetConfig, subject: string): McpSessionState {
  return remember(`${serverKey(target)}\0~${subject}`, subject)
}

export function newSession(subject: string): McpSessionState {
  return { subject, listed: new Set(), forwarded: new Set(), held: new Map() }
}

/** an initialize answered with this session id: the state (of that request) is kept under it */
export function bindSession(target: TargetConfig, id: string, state: McpSessionState): void {
  const key = `${serverKey(target)}\0${id}`
  // an id the server handed out before, to another subject, is not taken over
  const known = sessions.get(key)
  if (known && known.subject !== state.subject) return
  sessions.delete(key)
  if (sessions.size >= MAX_SESSIONS) sessions.delete(sessions.keys().next().value!)
  sessions.set(key, state)
}

export function forgetSession(target: TargetConfig, id: string): void {
  sessions.delete(`${serverKey(target)}\0${id}`)
}

function remember(key: string, subject: string): McpSessionState {
  let s = sessions.get(key)
  if (!s) {
    if (sessions.size >= MAX_SESSIONS) sessions.delete(sessions.keys().next().value!)
    sessions.set(key, (s = newSession(subject)))
  }
  return s
}

/** JSON with object keys sorted: the same definition hashes the same however the server orders it */
export function stableJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v) ?? 'null'
  if (Array.isArray(v)) return `[${v.map(stableJson).join(',')}]`
  const o = v as Record<string, unknown>
  return `{${Object.keys(o)
    .sort()
    .filter(k => o[k] !== undefined)
    .map(k => `${JSON.stringify(k)}:${stableJson(o[k])}`)
    .join(',')}}`
}

/** one tool of a tools/list result, or undefined when it has no name */
export function toolDef(raw: unknown): ToolDef | undefined {
  if (!raw || typeof raw !== 'object' || Array.isArray(raw)) return undefined
  const t = raw as Record<string, unknown>
  if (typeof t.name !== 'string' || t.name === '') return undefined
  const hash = createHash('sha256').update(stableJson({ name: t.name, description: t.description ?? null, inputSchema: t.inputSchema ?? null })).digest('hex')
  const a = (t.annotations && typeof t.annotations === 'object' ? t.annotations : {}) as Record<string, unknown>
  return { name: t.name, hash, readOnly: a.readOnlyHint === true, destructive: a.destructiveHint === true, definition: t }
}

export function rememberTool(server: ServerState, def: ToolDef): void {
  if (!server.latest.has(def.name) && server.latest.size >= MAX_TOOLS) server.latest.delete(server.latest.keys().next().value!)
  server.latest.set(def.name, def)
}

/**
 * The class of a call to this tool: the target's tool rules first (options.mcp.tools:
 * [{ name: glob, class }], first match wins: the operator's word over the server's hints), then the
 * server's annotations: readOnlyHint → read, destructiveHint → delete (both: delete, the stricter),
 * none → write.
 */
export function toolClass(target: TargetConfig, def: ToolDef): OperationClass {
  for (const rule of toolRules(target)) if (matchName(rule.name, def.name)) return rule.class
  if (def.destructive) return 'delete'
  return def.readOnly ? 'read' : 'write'
}

const rulesCache = new WeakMap<TargetConfig, Array<{ name: string; class: OperationClass }>>()
function toolRules(target: TargetConfig): Array<{ name: string; class: OperationClass }> {
  let r = rulesCache.get(target)
  if (r) return r
  r = []
  const mcp = target.options.mcp as { tools?: unknown } | undefined
  if (Array.isArray(mcp?.tools))
    for (const t of mcp.tools as Array<Record<string, unknown>>) {
      // a rule naming a class the gateway does not know is the strictest one (fail closed)
      if (t && typeof t.name === 'string') r.push({ name: t.name, class: (CLASSES as readonly string[]).includes(t.class as string) ? (t.class as OperationClass) : 'admin' })
    }
  rulesCache.set(target, r)
  return r
}

/**
 * Requests the server sends the client, as the policy sees them. Sampling and elicitation make the
 * agent's model or user act for the server: `admin`, so only a rule that names them allows them.
 * Any other server method is refused without asking.
 */
export const SERVER_REQUEST_CLASS: Record<string, OperationClass> = {
  ping: 'session',
  'roots/list': 'read',
  'sampling/createMessage': 'admin',
  'elicitation/create': 'admin',
}
