import t from 'tap'
import { voteCases } from './votes.ts'
import { objectCases } from './objects.ts'
import { cuttable, next, until } from './helpers.ts'
import pg from 'pg'
import { startPostgres, type PostgresServer } from '@portcullis/fixtures/postgres'
import type { ApprovalRequest } from '@portcullis/core'
import { PostgresControlStore, SCHEMA_VERSION, migrate } from '../src/index.ts'

let server: PostgresServer
t.before(async () => {
  server = await startPostgres()
})
t.teardown(() => server?.stop())

let n = 0
/** a fresh schema per test: tests do not see each other's rows */
function schemaName() {
  return `ctl_${process.pid}_${++n}`
}

function store(t: Tap, schema: string, over: Partial<ConstructorParameters<typeof PostgresControlStore>[0]> = {}) {
  const s = new PostgresControlStore({
    host: server.host,
    port: server.port,
    database: server.database,
    user: server.user,
    password: async () => server.password,
    schema,
    leaseMs: 1500,
    heartbeatMs: 200,
    pollMs: 60_000,
    backoff: { minMs: 50, maxMs: 200 },
    ...over,
  })
  t.teardown(() => s.close())
  return s
}
type Tap = { teardown(fn: () => unknown): void }

async function started(t: Tap, schema: string, id: string, over = {}) {
  const s = store(t, schema, over)
  await s.start({ id, host: 'test', pid: process.pid, started: Date.now() })
  t.teardown(() => s.close())
  return s
}

function request(id: string, instance: string, over: Partial<ApprovalRequest> = {}): ApprovalRequest {
  const now = Date.now()
  return {
    id,
    principal: { subject: 'agent-1', groups: ['agents'], issuer: 'test' },
    target: 'docs-db',
    protocol: 'postgres',
    class: 'write',
    statement: 'UPDATE t SET a = $1',
    fingerprint: 'f1',
    resources: ['public.t'],
    rule: 'agents-write',
    approvers: ['dba'],
    facts: {},
    created: now,
    expires: now + 60_000,
    status: 'pending',
    instance,
    ...over,
  }
}

async function sql(text: string, values: unknown[] = []) {
  const c = new pg.Client({ host: server.host, port: server.port, database: server.database, user: server.user, password: server.password })
  await c.connect()
  try {
    return (await c.query(text, values)).rows
  } finally {
    await c.end()
  }
}

t.test('the schema is created at start with a version table, once for instances starting together', async t => {
  const schema = schemaName()
  await Promise.all([started(t, schema, 'a'), started(t, schema, 'b'), started(t, schema, 'c')])
  const versions = await sql(`SELECT version FROM ${schema}.schema_version ORDER BY version`)
  t.same(versions.map(r => r.version), Array.from({ length: SCHEMA_VERSION }, (_, i) => i + 1), 'each migration recorded once')
  const tables = await sql(`SELECT table_name FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1`, [schema])
  t.same(tables.map(r => r.table_name), ['changes', 'grants', 'instances', 'objects', 'requests', 'revocations', 'schema_version', 'sessions'])
  const live = await sql(`SELECT id, state FROM ${schema}.instances ORDER BY id`)
  t.same(live, [{ id: 'a', state: 'alive' }, { id: 'b', state: 'alive' }, { id: 'c', state: 'alive' }])
})

t.test('a schema newer than the gateway is refused, and the store says why', async t => {
  const schema = schemaName()
  await started(t, schema, 'a')
  await sql(`INSERT INTO ${schema}.schema_version (version) VALUES (999)`)
  const s = await started(t, schema, 'b')
  t.match(s.health(), { kind: 'postgres', ok: false })
  t.notMatch(s.health().error ?? '', /127\.0\.0\.1|pg-fixture-password/, 'no address, no password')
})

t.test('a version-2 schema (before objects) is migrated to 3 at start, its approvals and grants intact', async t => {
  const schema = schemaName()
  const c = new pg.Client({ host: server.host, port: server.port, database: server.database, user: server.user, password: server.password })
  await c.connect()
  t.teardown(() => c.end())
  t.equal(await migrate(c, schema, 2), 0, 'built from nothing up to the released version 2')
  t.same((await sql(`SELECT version FROM ${schema}.schema_version ORDER BY version`)).map(r => r.version), [1, 2])
  t.same(await sql(`SELECT 1 FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'objects'`, [schema]), [], 'no objects table at 2')
  // what a version-2 gateway left: its live lease, a pending request needing two votes with one cast,
  // an approved one and its window's grant (rows as approvals.ts / grants.ts write them)
  await c.query(`INSERT INTO ${schema}.instances VALUES ('old', 'test', 1, now(), now() + interval '1 hour', 'alive')`)
  const pending = request('apr_v2_pending', 'old', { minApprovals: 2 })
  const aliceVote = { by: 'alice', at: Date.now() }
  const done = request('apr_v2_done', 'old', { status: 'approved', decidedBy: 'bob' })
  for (const r of [pending, done])
    await c.query(`INSERT INTO ${schema}.requests (id, instance, status, expires, min_approvals, votes, body) VALUES ($1, $2, $3, to_timestamp($4 / 1000.0), $5, $6, $7)`, [
      r.id, r.instance, r.status, r.expires, r.minApprovals ?? 1, JSON.stringify(r.minApprovals ? [aliceVote] : []), JSON.stringify(r),
    ])
  const until = Date.now() + 60_000
  await c.query(`INSERT INTO ${schema}.grants VALUES ('agent-1', 'docs-db', 'f1', to_timestamp($1 / 1000.0), 'apr_v2_done')`, [until])

  const s = await started(t, schema, 'new')
  t.match(s.health(), { kind: 'postgres', ok: true })
  t.same((await sql(`SELECT version FROM ${schema}.schema_version ORDER BY version`)).map(r => r.version), [1, 2, 3], 'migration 3 ran once, on top of 2')
  t.same(await s.getRequest('apr_v2_pending'), pending, 'the pending request reads as it was written')
  t.same(await s.getRequest('apr_v2_done'), done)
  t.equal((await s.findGrant('agent-1', 'docs-db', 'f1'))?.approvalId, 'apr_v2_done', 'the grant still answers')
  t.same((await sql(`SELECT votes, min_approvals FROM ${schema}.requests WHERE id = 'apr_v2_pending'`))[0], { votes: [aliceVote], min_approvals: 2 })
  await t.rejects(s.decide('apr_v2_pending', { status: 'approved', decidedBy: 'alice', vote: { by: 'alice', at: Date.now() } }), { code: 'APPROVAL_ALREADY_COUNTED' }, 'the vote cast at version 2 still counts, once')
  t.match(await s.decide('apr_v2_pending', { status: 'approved', decidedBy: 'carol', vote: { by: 'carol', at: Date.now() } }), { id: 'apr_v2_pending', status: 'approved' }, 'the second approver makes two of two')
  // the new table works: objects recorded after the migration are the scope's
  await s.putObjects('llm', 'acme', 'file', ['file-1'])
  t.same(await s.ownedObjects('llm', 'acme', 'file', ['file-1', 'file-2']), ['file-1'])
  t.same(await s.ownedObjects('llm', 'globex', 'file', ['file-1']), [])
  t.equal(await migrate(c, schema), 3, 'a second start finds 3 and does nothing')
})

t.test('a request held through one instance is decided through another, once, and both hear of it', async t => {
  const schema = schemaName()
  const a = await started(t, schema, 'a')
  const b = await started(t, schema, 'b')
  const heard = next(a, c => c.kind === 'request' && c.request.id === 'apr_1' && c.request.status !== 'pending')
  await a.putRequest(request('apr_1', 'a'))
  t.match(await b.getRequest('apr_1'), { id: 'apr_1', status: 'pending', instance: 'a' })
  // two approvers on two instances at the same moment: one decision
  const results = await Promise.allSettled([
    a.decide('apr_1', { status: 'approved', decidedBy: 'alice' }),
    b.decide('apr_1', { status: 'denied', decidedBy: 'bob', reason: 'no' }),
  ])
  const won = results.filter(r => r.status === 'fulfilled')
  const lost = results.filter(r => r.status === 'rejected') as PromiseRejectedResult[]
  t.equal(won.length, 1, 'one verdict wins')
  t.equal(lost.length, 1)
  t.match(lost[0]!.reason, { code: 'APPROVAL_NOT_PENDING' })
  const final = (await b.getRequest('apr_1'))!
  t.match((await heard as { request: ApprovalRequest }).request, { status: final.status, decidedBy: final.decidedBy })
  t.equal((await sql(`SELECT count(*)::int AS n FROM ${schema}.changes WHERE kind = 'request' AND body->>'id' = 'apr_1' AND body->>'status' <> 'pending'`))[0]!.n, 1)
  await t.rejects(b.decide('apr_nope', { status: 'approved', decidedBy: 'x' }), { code: 'APPROVAL_NOT_FOUND' })
})

t.test('a decision on an expired or withdrawn request is refused', async t => {
  const schema = schemaName()
  const a = await started(t, schema, 'a')
  await a.putRequest(request('apr_old', 'a', { expires: Date.now() - 1 }))
  await t.rejects(a.decide('apr_old', { status: 'approved', decidedBy: 'alice' }), { code: 'APPROVAL_NOT_PENDING', message: /expired/ })
  t.match(await a.decide('apr_old', { status: 'expired' }), { status: 'expired' }, 'its holder may still expire it')
  await a.putRequest(request('apr_gone', 'a'))
  await a.decide('apr_gone', { status: 'withdrawn', reason: 'client disconnected' })
  await t.rejects(a.decide('apr_gone', { status: 'approved', decidedBy: 'alice' }), { code: 'APPROVAL_NOT_PENDING', message: /withdrawn/ })
})

t.test('an approval window written with the decision is found by another instance', async t => {
  const schema = schemaName()
  const a = await started(t, schema, 'a')
  const c = await started(t, schema, 'c')
  const granted = next(c, ch => ch.kind === 'grant')
  await a.putRequest(request('apr_w', 'a', { window: 60_000 }))
  const until = Date.now() + 60_000
  await a.decide('apr_w', { status: 'approved', decidedBy: 'alice', grant: { subject: 'agent-1', target: 'docs-db', fingerprint: 'f1', until, approvalId: 'apr_w' } })
  t.match(await granted, { kind: 'grant', grant: { approvalId: 'apr_w' } }, 'pushed (LISTEN/NOTIFY; the poll is a minute here)')
  const g = await c.findGrant('agent-1', 'docs-db', 'f1')
  t.equal(g?.approvalId, 'apr_w')
  t.ok(Math.abs(g!.until - until) < 5, 'until survives the round trip')
  t.equal(await c.findGrant('agent-1', 'docs-db', 'other'), undefined)
  t.equal(await c.findGrant('agent-2', 'docs-db', 'f1'), undefined)
})

t.test('revocations and kill requests reach every instance; the registry lists every live instance', async t => {
  const schema = schemaName()
  const a = await started(t, schema, 'a')
  const b = await started(t, schema, 'b')
  const revoked = next(b, c => c.kind === 'revocation')
  await a.revoke({ subject: 'agent-9' })
  await a.revoke({ subject: 'agent-9' })
  t.same((await revoked as { entry: unknown }).entry, { subject: 'agent-9' })
  t.same(await b.revocations(), [{ subject: 'agent-9' }], 'stored once')
  const killed = next(b, c => c.kind === 'kill')
  await a.kill({ subject: 'agent-3', reason: 'bye' })
  t.same((await killed as { kill: unknown }).kill, { subject: 'agent-3', reason: 'bye' })
  const now = Date.now()
  await a.putSessions([{ id: 'ses_a', instance: 'a', target: 'docs-db', protocol: 'postgres', remote: '127.0.0.1:1', subject: 'agent-1', groups: ['agents'], started: now, lastActivity: now }])
  await b.putSessions([{ id: 'ses_b', instance: 'b', target: 'cache', protocol: 'redis', remote: '127.0.0.1:2', subject: 'agent-2', groups: [], started: now + 1, lastActivity: now + 1 }])
  t.same((await a.listSessions()).map(s => [s.id, s.instance, s.subject]), [['ses_a', 'a', 'agent-1'], ['ses_b', 'b', 'agent-2']])
  await a.putSessions([{ id: 'ses_a', instance: 'a', target: 'docs-db', protocol: 'postgres', remote: '127.0.0.1:1', subject: 'agent-1', groups: ['agents'], started: now, lastActivity: now + 500 }])
  t.equal((await b.listSessions()).find(s => s.id === 'ses_a')?.lastActivity, now + 500, 'last activity refreshed')
  await b.endSession('ses_b')
  t.same((await a.listSessions()).map(s => s.id), ['ses_a'])
})

t.test('an instance that stops renewing its lease: its held requests read withdrawn and its sessions go', async t => {
  const schema = schemaName()
  const b = await started(t, schema, 'b')
  // instance "a" as kill -9 leaves it: a lease nobody renews, a pending request, a live session
  await sql(`INSERT INTO ${schema}.instances (id, host, pid, started, lease_until, state) VALUES ('a', 'h', 1, now(), now() + interval '300 milliseconds', 'alive')`)
  await b.putRequest(request('apr_held', 'a'))
  const now = Date.now()
  await b.putSessions([{ id: 'ses_dead', instance: 'a', target: 'docs-db', protocol: 'postgres', remote: 'x', subject: 's', started: now, lastActivity: now }])
  const withdrawn = next(b, c => c.kind === 'request' && c.request.id === 'apr_held' && c.request.status === 'withdrawn')
  t.match(await withdrawn, { request: { status: 'withdrawn', reason: /stopped answering/ } }, "b's heartbeat reaps the lapsed lease")
  t.same((await b.listSessions()).map(s => s.id), [], 'its sessions left the registry')
  t.same(await sql(`SELECT state FROM ${schema}.instances WHERE id = 'a'`), [{ state: 'gone' }])
  await t.rejects(b.decide('apr_held', { status: 'approved', decidedBy: 'alice' }), { code: 'APPROVAL_NOT_PENDING' })
})

t.test('a request whose holder lapsed cannot be approved even before the reaper runs', async t => {
  const schema = schemaName()
  const b = await started(t, schema, 'b', { heartbeatMs: 60_000, leaseMs: 120_000 })
  await sql(`INSERT INTO ${schema}.instances (id, host, pid, started, lease_until, state) VALUES ('a', 'h', 1, now(), now() - interval '1 second', 'alive')`)
  await b.putRequest(request('apr_orphan', 'a'))
  await t.rejects(b.decide('apr_orphan', { status: 'approved', decidedBy: 'alice' }), { code: 'APPROVAL_NOT_PENDING', message: /stopped answering/ })
})

t.test('close gives the lease back: pending requests read withdrawn at once', async t => {
  const schema = schemaName()
  const a = await started(t, schema, 'a')
  const b = await started(t, schema, 'b')
  await a.putRequest(request('apr_bye', 'a'))
  const withdrawn = next(b, c => c.kind === 'request' && c.request.id === 'apr_bye' && c.request.status === 'withdrawn')
  await a.close()
  t.match(await withdrawn, { request: { reason: /shut down/ } })
})

t.test('cut off from the store: unavailable at once, reconnects with backoff, and hears what was decided meanwhile', async t => {
  const schema = schemaName()
  const hop = await cuttable(server)
  t.teardown(() => hop.close())
  const a = await started(t, schema, 'a', { port: hop.port, pollMs: 100 })
  const b = await started(t, schema, 'b')
  await a.putRequest(request('apr_p', 'a'))
  const health: boolean[] = []
  a.onHealth(h => health.push(h.ok))
  hop.cut()
  await until(() => !a.health().ok, 'a to notice the cut')
  t.match(a.health(), { ok: false, error: String })
  t.notMatch(a.health().error!, /127\.0\.0\.1/)
  await t.rejects(a.putRequest(request('apr_q', 'a')), { code: 'CONTROL_STORE_UNAVAILABLE' }, 'refused at once')
  // decided elsewhere while a cannot hear
  await b.decide('apr_p', { status: 'denied', decidedBy: 'bob', reason: 'not now' })
  await b.revoke({ jti: 'tok-1' })
  const heardDecision = next(a, c => c.kind === 'request' && c.request.id === 'apr_p' && c.request.status === 'denied')
  const heardRevocation = next(a, c => c.kind === 'revocation')
  hop.heal()
  await until(() => a.health().ok, 'a to reconnect')
  t.match(await heardDecision, { request: { status: 'denied', reason: 'not now', decidedBy: 'bob' } })
  t.same((await heardRevocation as { entry: unknown }).entry, { jti: 'tok-1' })
  t.same(health, [false, true])
  t.match(await a.getRequest('apr_p'), { status: 'denied' })
})

t.test('the poll brings changes when no notification comes', async t => {
  const schema = schemaName()
  const a = await started(t, schema, 'a', { pollMs: 100 })
  await started(t, schema, 'b')
  // a change appended by hand, without NOTIFY: only the poll can find it
  const heard = next(a, c => c.kind === 'revocation')
  await sql(`INSERT INTO ${schema}.changes (kind, body) VALUES ('revocation', '{"subject":"polled"}')`)
  t.same((await heard as { entry: unknown }).entry, { subject: 'polled' })
})

voteCases(
  t,
  async t => {
    const schema = schemaName()
    return [await started(t, schema, 'a'), await started(t, schema, 'b')]
  },
  request,
)

objectCases(t, async t => {
  const schema = schemaName()
  return [await started(t, schema, 'a'), await started(t, schema, 'b')]
})
