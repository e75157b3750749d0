// The mcp profile's message reading and classification, without sockets: repeated keys (however
// spelled), what a JSON-RPC message is, tool classes from annotations and tool rules, and what an
// approval binds to. The profile end to end (real SDK client and server) is in
// packages/gateway/test/mcp-proxy.test.ts.
import t from 'tap'
import type { TargetConfig } from '@portcullis/core'
import { explainHttp } from '../src/classify.ts'
import { callOperation, classifyMessage, pinOperation } from '../src/mcp/classify.ts'
import { repeatedKey, toMessage } from '../src/mcp/jsonrpc.ts'
import { newSession, stableJson, toolClass, toolDef, type ServerState } from '../src/mcp/state.ts'
import { emptyMasks } from './stub-masks.ts'

const target = (tools?: unknown): TargetConfig => ({
  name: 'mcp',
  protocol: 'http',
  listen: '127.0.0.1:0',
  upstream: { url: 'http://127.0.0.1:1' },
  limits: { maxConnections: 1, maxMessageBytes: 1 << 20, idleTimeoutMs: 1000, handshakeTimeoutMs: 1000 },
  options: { profile: 'mcp', ...(tools ? { mcp: { tools } } : {}) },
})

t.test('a repeated key is found at any depth and however it is escaped', async t => {
  t.equal(repeatedKey('{"a":1,"b":{"c":[1,{"d":2}]}}'), undefined)
  t.equal(repeatedKey('{"params":{"name":"x","name":"y"}}'), 'name')
  t.equal(repeatedKey('{"params":{"name":"x","n\\u0061me":"y"}}'), 'name')
  t.equal(repeatedKey('[{"k":1},{"k":2}]'), undefined, 'the same key in two objects is no repeat')
  t.equal(repeatedKey('{"a":{"x":1,"x":2},"b":3}'), 'x', 'found, and the rest still read')
  t.equal(repeatedKey(' {"a" : [ 1 , "s\\"q" , null ] , "a" : true } '), 'a')
  t.throws(() => repeatedKey('['.repeat(200) + ']'.repeat(200)), /too deeply/, 'nesting past the bound is refused, not walked')
})

t.test('JSON-RPC message kinds', async t => {
  t.match(toMessage({ jsonrpc: '2.0', id: 1, method: 'tools/list' }), { kind: 'request', id: 1, method: 'tools/list' })
  t.match(toMessage({ jsonrpc: '2.0', method: 'notifications/initialized' }), { kind: 'notification' })
  t.match(toMessage({ jsonrpc: '2.0', id: 'a', result: {} }), { kind: 'response', id: 'a' })
  t.match(toMessage({ jsonrpc: '2.0', id: 1, result: {}, error: {} }), { invalid: /either result or error/ })
  t.match(toMessage({ jsonrpc: '2.0', id: 1.5, method: 'x' }), { invalid: /id/ })
  t.match(toMessage({ jsonrpc: '2.0', id: 1, method: 'x', params: [1] }), { invalid: /params/ })
  t.match(toMessage({ id: 1, method: 'x' }), { invalid: /JSON-RPC 2.0/ })
})

t.test('a tool call is classified by tool rules first, then by annotations', async t => {
  const ro = toolDef({ name: 'search', annotations: { readOnlyHint: true } })!
  const rm = toolDef({ name: 'rm', annotations: { destructiveHint: true } })!
  const both = toolDef({ name: 'both', annotations: { readOnlyHint: true, destructiveHint: true } })!
  const none = toolDef({ name: 'plain' })!
  t.equal(toolClass(target(), ro), 'read')
  t.equal(toolClass(target(), rm), 'delete')
  t.equal(toolClass(target(), both), 'delete', 'contradictory hints: the stricter')
  t.equal(toolClass(target(), none), 'write')
  const rules = target([{ name: 'search', class: 'delete' }, { name: 'r*', class: 'read' }, { name: 'plain', class: 'nonsense' }])
  t.equal(toolClass(rules, ro), 'delete', "the operator's rule over the server's readOnlyHint")
  t.equal(toolClass(rules, rm), 'read')
  t.equal(toolClass(rules, none), 'admin', 'a rule with a class the gateway does not know is the strictest')
  const listed = callOperation(rules, '/mcp', ro)
  t.match(listed, { class: 'delete', resources: ['tool:search'], statement: 'tools/call search', facts: { operation: 'tools/call', tool: 'search' } }, "tools/list's policy check: the call's own class, resources and statement")
})

t.test('classification refuses what it cannot be sure of', async t => {
  const server: ServerState = { latest: new Map(), pinned: new Map() }
  const state = newSession('ann')
  const def = toolDef({ name: 'rm', annotations: { destructiveHint: true } })!
  server.latest.set('rm', def)
  const ctx = { target: target(), path: '/mcp', state, server, masks: emptyMasks() }
  const call = (params: Record<string, unknown>) => classifyMessage({ kind: 'request', id: 1, method: 'tools/call', params }, ctx)
  t.match(call({ name: 'rm', arguments: { id: 'a' } }), { refuse: { message: /not listed to this session/ } }, 'known to the server, not shown to this session')
  state.listed.add('rm')
  const ok = call({ name: 'rm', arguments: { id: 'a' } })
  t.match(ok, { op: { class: 'delete', statement: 'tools/call rm', resources: ['tool:rm'], facts: { tool: 'rm', operation: 'tools/call' } } })
  const again = classifyMessage({ kind: 'request', id: 99, method: 'tools/call', params: { arguments: { id: 'a' }, name: 'rm' } }, ctx)
  t.equal((again as any).op.fingerprint, (ok as any).op.fingerprint, 'the id and key order do not change what is approved')
  t.equal((again as any).sent().hash, (ok as any).sent().hash)
  const other = call({ name: 'rm', arguments: { id: 'b' } })
  t.not((other as any).sent().hash, (ok as any).sent().hash, 'other arguments are another approval')
  t.match(call({ arguments: {} }), { refuse: { message: /needs a tool name/ } })
  t.match(classifyMessage({ kind: 'request', id: 2, method: 'tools/execute', params: {} }, ctx), { refuse: { code: -32601 } })
  t.match(classifyMessage({ kind: 'notification', method: 'notifications/whatever', params: undefined }, ctx), { refuse: { code: -32601 } })
  t.match(classifyMessage({ kind: 'response', id: 5, result: {} }, ctx), { refuse: { message: /no request the server sent/ } })
  state.forwarded.add(5)
  t.match(classifyMessage({ kind: 'response', id: 5, result: {} }, ctx), { op: { class: 'session' } }, 'an answer to a request the client was passed')
  t.match(classifyMessage({ kind: 'response', id: 5, result: {} }, ctx), { refuse: {} }, 'and only once')
})

t.test('a pin binds to the definition hash; the hash ignores key order', async t => {
  const a = toolDef({ name: 'f', description: 'd', inputSchema: { type: 'object', properties: { x: { type: 'string' } } } })!
  const b = toolDef({ inputSchema: { properties: { x: { type: 'string' } }, type: 'object' }, description: 'd', name: 'f' })!
  const c = toolDef({ name: 'f', description: 'd (changed)', inputSchema: { type: 'object', properties: { x: { type: 'string' } } } })!
  const ann = toolDef({ name: 'f', description: 'd', inputSchema: { type: 'object', properties: { x: { type: 'string' } } }, annotations: { readOnlyHint: true } })!
  t.equal(a.hash, b.hash)
  t.not(a.hash, c.hash)
  t.equal(a.hash, ann.hash, 'annotations are not pinned (they classify; a tool rule overrides them)')
  const pa = pinOperation('/mcp', a, emptyMasks())
  const pc = pinOperation('/mcp', c, emptyMasks())
  t.not(pa.sent().hash, pc.sent().hash)
  t.not(pa.op.fingerprint, pc.op.fingerprint)
  t.equal(pc.op.facts.operation, 'tools/pin')
  t.equal(stableJson({ b: 1, a: [2, { d: 3, c: 4 }] }), '{"a":[2,{"c":4,"d":3}],"b":1}')
})

t.test('explain --profile mcp classifies a message without a server', async t => {
  const call = (annotations?: unknown) => explainHttp({ method: 'POST', path: '/mcp', profile: 'mcp', body: { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'rm', arguments: { id: 'a' }, ...(annotations ? { _annotations: annotations } : {}) } } })
  t.match(call(), { class: 'write', statement: 'tools/call rm', resources: ['tool:rm'] }, 'no annotations: write')
  t.match(call({ destructiveHint: true }), { class: 'delete' })
  t.match(call().fingerprint, /^[0-9a-f]{32}$/)
  t.match(explainHttp({ method: 'POST', path: '/mcp', profile: 'mcp', body: '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' }), { class: 'read', statement: 'tools/list' })
  t.match(explainHttp({ method: 'POST', path: '/mcp', profile: 'mcp', body: [{ jsonrpc: '2.0', id: 1, method: 'tools/list' }] }), { error: /batches/ })
  t.match(explainHttp({ method: 'POST', path: '/mcp', profile: 'mcp', body: { jsonrpc: '2.0', id: 1, method: 'admin/shutdown' } }), { error: /not one the gateway knows/ })
  t.match(explainHttp({ method: 'GET', path: '/mcp', profile: 'mcp' }), { class: 'session' })
})
