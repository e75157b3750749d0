import t from 'tap'
import { voteCases } from './votes.ts'
import { objectCases } from './objects.ts'
import { cuttable, next, until } from './helpers.ts'
import { Redis } from 'ioredis'
import { startRedis, type RedisServer } from '@portcullis/fixtures/redis'
import type { ApprovalRequest } from '@portcullis/core'
import { RedisControlStore } from '../src/index.ts'

let server: RedisServer
let raw: Redis
t.before(async () => {
  server = await startRedis({ password: 'ctl-redis-password' })
  raw = new Redis({ host: server.host, port: server.port, password: 'ctl-redis-password' })
})
t.teardown(async () => {
  raw?.disconnect()
  await server?.stop()
})

let n = 0
/** a fresh key prefix per test: tests do not see each other's keys */
const prefixName = () => `ctl:${process.pid}:${++n}:`
type Tap = { teardown(fn: () => unknown): void }

async function started(t: Tap, prefix: string, id: string, over: Partial<ConstructorParameters<typeof RedisControlStore>[0]> = {}) {
  const s = new RedisControlStore({
    host: server.host,
    port: server.port,
    password: async () => 'ctl-redis-password',
    prefix,
    leaseMs: 1500,
    heartbeatMs: 200,
    pollMs: 60_000,
    backoff: { minMs: 50, maxMs: 200 },
    ...over,
  })
  t.teardown(() => s.close())
  await s.start({ id, host: 'test', pid: process.pid, started: Date.now() })
  return s
}

function request(id: string, instance: string, over: Partial<ApprovalRequest> = {}): ApprovalRequest {
  const now = Date.now()
  return {
    id,
    principal: { subject: 'agent-1', groups: ['agents'], issuer: 'test' },
    target: 'docs-db',
    protocol: 'redis',
    class: 'delete',
    statement: 'DEL k',
    fingerprint: 'f1',
    resources: ['k'],
    rule: 'agents-delete',
    approvers: ['dba'],
    facts: {},
    created: now,
    expires: now + 60_000,
    status: 'pending',
    instance,
    ...over,
  }
}

t.test('a request held through one instance is decided through another, once, and both hear of it', async t => {
  const p = prefixName()
  const a = await started(t, p, 'a')
  const b = await started(t, p, 'b')
  t.same(a.health(), { kind: 'redis', ok: true })
  const heard = next(a, c => c.kind === 'request' && c.request.id === 'apr_1' && c.request.status !== 'pending')
  await a.putRequest(request('apr_1', 'a'))
  t.match(await b.getRequest('apr_1'), { id: 'apr_1', status: 'pending', instance: 'a', resources: ['k'], facts: {} })
  const results = await Promise.allSettled([
    a.decide('apr_1', { status: 'approved', decidedBy: 'alice' }),
    b.decide('apr_1', { status: 'denied', decidedBy: 'bob', reason: 'no' }),
  ])
  t.equal(results.filter(r => r.status === 'fulfilled').length, 1, 'one verdict wins')
  const lost = results.find(r => r.status === 'rejected') as PromiseRejectedResult
  t.match(lost.reason, { code: 'APPROVAL_NOT_PENDING' })
  const final = (await b.getRequest('apr_1'))!
  t.match((await heard as { request: ApprovalRequest }).request, { status: final.status, decidedBy: final.decidedBy }, 'pushed (the poll is a minute here)')
  t.match(await a.listRequests(), [{ id: 'apr_1', status: final.status }])
  await t.rejects(b.decide('apr_nope', { status: 'approved' }), { code: 'APPROVAL_NOT_FOUND' })
})

t.test('a decision on an expired or withdrawn request is refused', async t => {
  const p = prefixName()
  const a = await started(t, p, 'a')
  await a.putRequest(request('apr_old', 'a', { expires: Date.now() - 1 }))
  await t.rejects(a.decide('apr_old', { status: 'approved', decidedBy: 'alice' }), { code: 'APPROVAL_NOT_PENDING', message: /expired/ })
  t.match(await a.decide('apr_old', { status: 'expired' }), { status: 'expired' })
  await a.putRequest(request('apr_gone', 'a'))
  await a.decide('apr_gone', { status: 'withdrawn', reason: 'client disconnected' })
  await t.rejects(a.decide('apr_gone', { status: 'approved', decidedBy: 'alice' }), { code: 'APPROVAL_NOT_PENDING', message: /withdrawn/ })
})

t.test('an approval window written with the decision is found by another instance, and expires with its key', async t => {
  const p = prefixName()
  const a = await started(t, p, 'a')
  const c = await started(t, p, 'c')
  const granted = next(c, ch => ch.kind === 'grant')
  await a.putRequest(request('apr_w', 'a', { window: 60_000 }))
  const until = Date.now() + 60_000
  await a.decide('apr_w', { status: 'approved', decidedBy: 'alice', grant: { subject: 'agent-1', target: 'docs-db', fingerprint: 'f1', until, approvalId: 'apr_w' } })
  t.match(await granted, { grant: { approvalId: 'apr_w', until } })
  t.equal((await c.findGrant('agent-1', 'docs-db', 'f1'))?.approvalId, 'apr_w')
  t.same((await c.grants()).map(g => g.approvalId), ['apr_w'])
  const ttl = await raw.pttl(`${p}grant:agent-1\u0000docs-db\u0000f1`)
  t.ok(ttl > 50_000 && ttl <= 60_000, 'the window is a key that expires when it ends')
  t.equal(await c.findGrant('agent-2', 'docs-db', 'f1'), undefined)
})

t.test('revocations and kill requests reach every instance; the registry lists every live instance', async t => {
  const p = prefixName()
  const a = await started(t, p, 'a')
  const b = await started(t, p, 'b')
  const revoked = next(b, c => c.kind === 'revocation')
  await a.revoke({ subject: 'agent-9' })
  await a.revoke({ subject: 'agent-9' })
  t.same((await revoked as { entry: unknown }).entry, { subject: 'agent-9' })
  t.same(await b.revocations(), [{ subject: 'agent-9' }], 'stored once')
  const killed = next(b, c => c.kind === 'kill')
  await a.kill({ sessionId: 'ses_x', reason: 'bye' })
  t.same((await killed as { kill: unknown }).kill, { sessionId: 'ses_x', reason: 'bye' })
  const now = Date.now()
  await a.putSessions([{ id: 'ses_a', instance: 'a', target: 't', protocol: 'redis', remote: 'r', subject: 'agent-1', started: now, lastActivity: now }])
  await b.putSessions([{ id: 'ses_b', instance: 'b', target: 't', protocol: 'redis', remote: 'r', subject: 'agent-2', started: now + 1, lastActivity: now + 1 }])
  t.same((await a.listSessions()).map(s => [s.id, s.instance]), [['ses_a', 'a'], ['ses_b', 'b']])
  await b.endSession('ses_b')
  t.same((await a.listSessions()).map(s => s.id), ['ses_a'])
})

t.test('an instance whose lease key expires: its held requests read withdrawn and its sessions go', async t => {
  const p = prefixName()
  const b = await started(t, p, 'b')
  // instance "a" as kill -9 leaves it: a lease key nobody renews, a pending request, a session
  await raw.set(`${p}lease:a`, '{}', 'PX', 300)
  await raw.sadd(`${p}instances`, 'a')
  await b.putRequest(request('apr_held', 'a'))
  await raw.hset(`${p}sessions:a`, 'ses_dead', JSON.stringify({ id: 'ses_dead', instance: 'a' }))
  const withdrawn = next(b, c => c.kind === 'request' && c.request.id === 'apr_held' && c.request.status === 'withdrawn')
  t.match(await withdrawn, { request: { reason: /stopped answering/ } })
  t.same((await b.listSessions()).map(s => s.id), [])
  t.equal(await raw.exists(`${p}sessions:a`), 0)
  await t.rejects(b.decide('apr_held', { status: 'approved', decidedBy: 'alice' }), { code: 'APPROVAL_NOT_PENDING' })
})

t.test('close gives the lease back: pending requests read withdrawn at once', async t => {
  const p = prefixName()
  const a = await started(t, p, 'a')
  const b = await started(t, p, 'b')
  await a.putRequest(request('apr_bye', 'a'))
  const withdrawn = next(b, c => c.kind === 'request' && c.request.id === 'apr_bye' && c.request.status === 'withdrawn')
  await a.close()
  t.match(await withdrawn, { request: { reason: /shut down/ } })
})

t.test('cut off from the store: unavailable at once, reconnects with backoff, and hears what was decided meanwhile', async t => {
  const p = prefixName()
  const hop = await cuttable(server)
  t.teardown(() => hop.close())
  const a = await started(t, p, 'a', { port: hop.port, pollMs: 100, leaseMs: 10_000, heartbeatMs: 200 })
  const b = await started(t, p, 'b', { leaseMs: 10_000 })
  await a.putRequest(request('apr_p', 'a'))
  hop.cut()
  await until(() => !a.health().ok, 'a to notice the cut')
  t.notMatch(a.health().error!, /127\.0\.0\.1|ctl-redis-password/)
  await t.rejects(a.putRequest(request('apr_q', 'a')), { code: 'CONTROL_STORE_UNAVAILABLE' }, 'refused at once')
  await b.decide('apr_p', { status: 'denied', decidedBy: 'bob', reason: 'not now' })
  const heard = next(a, c => c.kind === 'request' && c.request.id === 'apr_p' && c.request.status === 'denied')
  hop.heal()
  await until(() => a.health().ok, 'a to reconnect')
  t.match(await heard, { request: { status: 'denied', reason: 'not now', decidedBy: 'bob' } })
})

voteCases(
  t,
  async t => {
    const prefix = prefixName()
    return [await started(t, prefix, 'a'), await started(t, prefix, 'b')]
  },
  request,
)

objectCases(t, async t => {
  const prefix = prefixName()
  return [await started(t, prefix, 'a'), await started(t, prefix, 'b')]
})
