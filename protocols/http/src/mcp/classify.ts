// One client message → one Operation, or a refusal. What the gateway cannot classify with certainty
// (a batch, a method it does not know, a tool this client was never shown, a repeated key) is
// refused before anything reaches the server.
//
// How rules name MCP operations: `operations: ['tools/call']` (the JSON-RPC method), `resources:
// ['tool:delete_*']` (tool calls; `resource:<uri>` for resources/read, `prompt:<name>` for
// prompts/get), `facts: { tool: 'delete_*' }`, or `statement` (a regex over 'tools/call <name>').
import { createHash } from 'node:crypto'
import { statementHash, type FactValue, type MaskPlan, type Operation, type OperationClass, type StatementAsSent, type TargetConfig } from '@portcullis/core'
import { maskJson } from '../json-mask.ts'
import { RPC, toMessage, type Message } from './jsonrpc.ts'
import { newSession, stableJson, toolClass, toolDef, type McpSessionState, type ServerState, type ToolDef } from './state.ts'

/** client requests the proxy knows, and their class; tools/call is classified per tool */
const REQUEST_CLASS: Record<string, OperationClass> = {
  initialize: 'session',
  ping: 'session',
  'logging/setLevel': 'session',
  'tools/list': 'read',
  'resources/list': 'read',
  'resources/templates/list': 'read',
  'resources/read': 'read',
  'resources/subscribe': 'read',
  'resources/unsubscribe': 'read',
  'prompts/list': 'read',
  'prompts/get': 'read',
  'completion/complete': 'read',
}

const CLIENT_NOTIFICATIONS = new Set(['notifications/initialized', 'notifications/cancelled', 'notifications/progress', 'notifications/roots/list_changed'])

export interface Refusal {
  refuse: { code: number; message: string }
}

export interface Classified {
  op: Operation
  sent: () => StatementAsSent
  /** tools/call: the tool as last listed */
  tool?: ToolDef
}

export function operation(cls: OperationClass, statement: string, resources: string[], facts: Record<string, FactValue>, params: unknown): Operation {
  const payload = params === undefined ? '' : stableJson(params)
  // the JSON-RPC id is left out: the same call sent again (a retry after a deferred approval) is
  // the same operation
  const fingerprint = createHash('sha256').update(`mcp\0${cls}\0${statement}\0${payload}`).digest('hex').slice(0, 32)
  return { protocol: 'http', class: cls, resources, statement, fingerprint, statements: [{ class: cls, resources, statement, facts: { ...facts } }], facts }
}

/** what an approver sees (masked) and the hash the approval binds to: the method, the tool and its arguments */
export function sentOf(statement: string, params: unknown, masks: MaskPlan): () => StatementAsSent {
  return () => {
    const exact = params === undefined ? '' : stableJson(params)
    let shown = exact
    if (params !== undefined && !masks.empty) shown = stableJson(maskJson(structuredClone(params), masks).value)
    return { text: statement, parameters: [shown], hash: statementHash(statement, [exact]) }
  }
}

export function classifyMessage(msg: Message, ctx: { target: TargetConfig; path: string; state: McpSessionState; server: ServerState; masks: MaskPlan }): Classified | Refusal {
  const facts = (method: string, extra: Record<string, FactValue> = {}): Record<string, FactValue> => ({ method: 'POST', path: ctx.path, operation: method, profile: 'mcp', ...extra })
  if (msg.kind === 'notification') {
    if (!CLIENT_NOTIFICATIONS.has(msg.method)) return { refuse: { code: RPC.METHOD_NOT_FOUND, message: `notification ${msg.method} is not one the gateway knows; refused` } }
    return { op: operation('session', msg.method, [], facts(msg.method), undefined), sent: sentOf(msg.method, undefined, ctx.masks) }
  }
  if (msg.kind === 'response') {
    // an answer to a server request the gateway passed on; any other would be a forged one (an
    // answer to a sampling request the gateway refused)
    if (!ctx.state.forwarded.delete(msg.id)) return { refuse: { code: RPC.INVALID_REQUEST, message: 'a response to no request the server sent this client; refused' } }
    return { op: operation('session', 'response', [], facts('response'), undefined), sent: sentOf('response', undefined, ctx.masks) }
  }
  const { method, params } = msg
  if (method === 'tools/call') {
    const name = params?.name
    if (typeof name !== 'string') return { refuse: { code: RPC.INVALID_REQUEST, message: 'tools/call needs a tool name' } }
    const tool = ctx.server.latest.get(name)
    if (!tool || !ctx.state.listed.has(name)) return { refuse: { code: RPC.INVALID_REQUEST, message: `tool ${name} was not listed to this session (call tools/list first); refused` } }
    const cls = toolClass(ctx.target, tool)
    const statement = `tools/call ${name}`
    const args = { name, arguments: params?.arguments ?? {} }
    return { op: operation(cls, statement, [`tool:${name}`], facts(method, { tool: name }), args), sent: sentOf(statement, args, ctx.masks), tool }
  }
  const cls = REQUEST_CLASS[method]
  if (!cls) return { refuse: { code: RPC.METHOD_NOT_FOUND, message: `method ${method} is not one the gateway knows; refused` } }
  const resources: string[] = []
  if (method.startsWith('resources/') && typeof params?.uri === 'string') resources.push(`resource:${params.uri}`)
  if (method === 'prompts/get' && typeof params?.name === 'string') resources.push(`prompt:${params.name}`)
  const statement = resources.length > 0 ? `${method} ${resources[0]!.slice(resources[0]!.indexOf(':') + 1)}` : method
  return { op: operation(cls, statement, resources, facts(method), params), sent: sentOf(statement, params, ctx.masks) }
}

/**
 * The operation a call to `tool` would be: tools/list shows a tool only when the policy would not
 * block its call (Session.wouldDecide: a preview, nothing recorded or counted). Its statement is the
 * call's own, so a statement rule reads it as it will read the call.
 */
export function callOperation(target: TargetConfig, path: string, tool: ToolDef): Operation {
  const statement = `tools/call ${tool.name}`
  return operation(toolClass(target, tool), statement, [`tool:${tool.name}`], { method: 'POST', path, operation: 'tools/call', profile: 'mcp', tool: tool.name }, undefined)
}

/** the approval of a changed tool definition: bound to the new hash, so approving one change approves no later one */
export function pinOperation(path: string, tool: ToolDef, masks: MaskPlan): Classified {
  const statement = `tools/pin ${tool.name} ${tool.hash.slice(0, 16)}`
  const op = operation('schema-change', statement, [`tool:${tool.name}`], { method: 'POST', path, operation: 'tools/pin', profile: 'mcp', tool: tool.name }, { hash: tool.hash })
  const shown = JSON.stringify(masks.empty ? tool.definition : maskJson(structuredClone(tool.definition), masks).value)
  return { op, sent: () => ({ text: statement, parameters: [shown.length > 4096 ? shown.slice(0, 4096) + '…' : shown], hash: statementHash(statement, [tool.hash]) }), tool }
}

/**
 * `portcullis explain --protocol http --profile mcp --request 'POST /mcp' --body '{JSON-RPC}'`: the
 * message classified without a server. A tools/call is read as if its tool had been listed with the
 * annotations `--body` may give in `params._annotations` (none: write); the target's tool rules are
 * not read here. What the gateway would refuse comes back as `error`.
 */
export function explainMcp(method: string, path: string, body: unknown, masks: MaskPlan): Operation {
  const refused = (why: string): Operation => ({ ...operation('admin', `${method} ${path}`, [], { method, path, profile: 'mcp' }, undefined), error: why })
  if (method !== 'POST') return operation('session', method === 'GET' ? 'GET (server stream)' : `${method} (end session)`, [], { method, path, profile: 'mcp' }, undefined)
  if (Array.isArray(body)) return refused('JSON-RPC batches are not accepted: send one message per request')
  const msg = toMessage(body)
  if ('invalid' in msg) return refused(msg.invalid)
  const state = newSession('explain')
  const server: ServerState = { latest: new Map(), pinned: new Map() }
  if (msg.kind === 'request' && msg.method === 'tools/call' && typeof msg.params?.name === 'string') {
    const def = toolDef({ name: msg.params.name, annotations: msg.params._annotations })
    if (def) {
      server.latest.set(def.name, def)
      state.listed.add(def.name)
      delete msg.params._annotations
    }
  }
  if (msg.kind === 'response') return refused('a client response is checked against the server requests of its MCP session')
  const target = { name: 'explain', protocol: 'http', listen: '', upstream: {}, limits: { maxConnections: 0, maxMessageBytes: 0, idleTimeoutMs: 0, handshakeTimeoutMs: 0 }, options: {} } as const
  const r = classifyMessage(msg, { target: target as unknown as TargetConfig, path, state, server, masks })
  return 'refuse' in r ? refused(r.refuse.message) : r.op
}
