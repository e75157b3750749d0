// Blast radius on real Postgres: EXPLAIN's estimate is a fact rules match (a DELETE of 3 rows is
// allowed, one of ~50,000 is held), what cannot be estimated is read the stricter way, and the
// estimate is of exactly the statement (and parameters) that would run.
import t from 'tap'
import pg from 'pg'
import type { ApprovalRequest } from '@portcullis/core'
import { startGateway, type Gateway } from './harness.ts'
import { bind, codes, errorOf, execute, parse, RawClient, sync } from './wire.ts'
import { explainableKind, readPlan } from '../src/explain.ts'
import { loadClassifier } from '../src/classify/index.ts'

const dba = { subject: 'dba-1', groups: ['dba'], issuer: 'test' }
const RULES = [
  { id: 'session', when: { class: ['session'] }, action: 'allow' },
  { id: 'agents-read', when: { groups: ['agents'], class: ['read'] }, action: 'allow' },
  { id: 'agents-delete', when: { groups: ['agents'], class: ['write', 'delete'] }, action: 'allow' },
  { id: 'big-deletes', when: { class: ['delete'], facts: { estimatedRows: { gt: 1000 } } }, action: 'approve', approvers: ['dba'], reason: 'a delete of more than 1000 rows' },
]

async function pendingRequest(gw: Gateway, seen: Set<string>): Promise<ApprovalRequest> {
  for (;;) {
    const r = gw.core.approvals.list().find(a => a.status === 'pending' && !seen.has(a.id))
    if (r) {
      seen.add(r.id)
      return r
    }
    await new Promise(res => setTimeout(res, 20))
  }
}

async function failure(p: Promise<unknown>): Promise<{ code?: string; message: string }> {
  try {
    await p
  } catch (e) {
    return e as { code?: string; message: string }
  }
  throw new Error('expected the statement to fail')
}

t.test('only one DML statement, exactly as sent, is ever EXPLAINed', async t => {
  await loadClassifier()
  for (const sql of ['DELETE FROM t WHERE id = $1', 'select * from t', 'insert into t values (1)', 'update t set a = 1', 'WITH d AS (DELETE FROM t RETURNING *) SELECT count(*) FROM d', 'MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE'])
    t.ok(explainableKind(sql), `estimated: ${sql}`)
  for (const sql of [
    'select 1; delete from t',
    'delete from t; select 1',
    'select * into t2 from t',
    'create table t2 as select * from t',
    'DO $$ BEGIN DELETE FROM t; END $$',
    'call p()',
    'explain analyze delete from t',
    'execute p(1)',
    'copy t to stdout',
    '(analyze) delete from t',
    'analyze) delete from t',
    'truncate t',
    '',
  ])
    t.notOk(explainableKind(sql), `not estimated: ${JSON.stringify(sql)}`)
  t.same(readPlan('[{"Plan":{"Node Type":"ModifyTable","Plan Rows":0,"Relation Name":"t","Schema":"public","Plans":[{"Node Type":"Seq Scan","Plan Rows":49990,"Relation Name":"t","Schema":"public"}]}}]'), { estimatedRows: 49990, tables: ['public.t'] })
  t.equal(readPlan('not json'), undefined)
})

t.test('estimate on real Postgres', async t => {
  const gw = await startGateway({ rules: RULES, approvals: { timeout: '2m' } })
  t.teardown(() => gw.stop())
  const setup = new pg.Client({ connectionString: gw.pg.url })
  await setup.connect()
  t.teardown(() => setup.end())
  await setup.query('create table docs (id int primary key, body text)')
  await setup.query("insert into docs select g, 'doc ' || g from generate_series(1, 50000) g")
  await setup.query('analyze docs')
  const count = async () => (await setup.query('select count(*)::int as n from docs')).rows[0].n as number
  const seen = new Set<string>()
  const client = async () => {
    const c = new pg.Client({ connectionString: await gw.url() })
    c.on('error', () => {})
    await c.connect()
    t.teardown(() => c.end().catch(() => {}))
    return c
  }

  t.test('a delete of 3 rows is allowed by its estimate (simple and extended protocol)', async t => {
    const c = await client()
    const r = await c.query('delete from docs where id in (1, 2, 3)')
    t.equal(r.rowCount, 3)
    const e = await c.query({ text: 'delete from docs where id between $1 and $2', values: [4, 6] })
    t.equal(e.rowCount, 3)
    t.equal(await count(), 49994)
    t.notOk(gw.core.approvals.list().some(a => a.status === 'pending'), 'nothing was held')
  })

  t.test('a delete the planner expects to touch ~50,000 rows is held, with the estimate for the approver', async t => {
    const c = await client()
    const held = c.query({ text: 'delete from docs where id > $1', values: [10] })
    const req = await pendingRequest(gw, seen)
    t.equal(req.rule, 'big-deletes')
    t.equal(req.estimate?.source, 'explain')
    t.ok((req.estimate?.estimatedRows ?? 0) > 40000, `estimated ${req.estimate?.estimatedRows} rows`)
    t.same(req.estimate?.tables, ['public.docs'])
    t.equal(req.facts.estimatedRows, req.estimate?.estimatedRows, 'the fact the rule matched is on the request')
    await gw.core.approvals.deny(req.id, dba, 'too many')
    const err = await failure(held)
    t.equal(err.code, '42501')
    t.equal(await count(), 49994, 'nothing was deleted')
    // approved, the same statement runs
    const again = c.query({ text: 'delete from docs where id > $1', values: [48000] })
    const req2 = await pendingRequest(gw, seen)
    t.ok(req2, 'a two-thousand-row delete is held too')
    await gw.core.approvals.approve(req2.id, dba)
    t.equal((await again).rowCount, 2000)
    t.equal(await count(), 47994)
  })

  t.test('a shared statement shape does not carry another statement\'s estimate', async t => {
    // two named statements whose text differs only in a literal classify to one shape; the
    // small one parsed last must not lend its estimate to the big one executed
    const raw = new RawClient(gw)
    t.teardown(() => raw.socket.destroy())
    await raw.login(await gw.token())
    raw.send(parse('big', 'delete from docs where id > 0'), parse('small', 'delete from docs where id > 47999'), bind('', 'big'), execute(''), sync())
    const req = await pendingRequest(gw, seen)
    t.ok((req.estimate?.estimatedRows ?? 0) > 40000, `the big statement's own estimate: ${req.estimate?.estimatedRows}`)
    await gw.core.approvals.deny(req.id, dba)
    const msgs = await raw.batches(1)
    t.equal(errorOf(msgs)?.C, '42501')
    t.equal(codes(msgs), 'N112EZ', 'the held notice, both statements parsed, the bind, the refusal')
    t.equal(await count(), 47994)
  })

  t.test('no estimate to be had: the stricter rule applies', async t => {
    const c = await client()
    // several statements in one Query are never estimated
    const multi = c.query('delete from docs where id = 7; delete from docs where id = 8')
    const req = await pendingRequest(gw, seen)
    t.equal(req.rule, 'big-deletes')
    t.equal(req.estimate, null, 'the approver is told there is no estimate')
    await gw.core.approvals.deny(req.id, dba)
    t.equal((await failure(multi)).code, '42501')
    t.match(gw.audit.find(a => a.approvalId === req.id && a.decision === 'block')?.statement ?? '', /delete/i)
    // a table with a twin of the same name in another schema: the client's search_path (set in
    // SQL, at startup or by a function) may pick the other one, so the estimate is not trusted
    await setup.query('create schema other')
    await setup.query('create table other.docs (id int primary key, body text)')
    const d = await client()
    await d.query('set search_path = other, public')
    const single = d.query('delete from docs where id = 9')
    const req2 = await pendingRequest(gw, seen)
    t.equal(req2.estimate, null)
    await gw.core.approvals.approve(req2.id, dba)
    t.equal((await single).rowCount, 0, 'approved, it runs — on other.docs, which the gateway could not have known')
    await setup.query('drop schema other cascade')
    // without the twin, the same session's statement is estimated again
    t.equal((await d.query('delete from docs where id = 9')).rowCount, 1, 'one row: allowed by its estimate')
  })

  t.test('an estimate cut off by a lock is unknown within its time bound', async t => {
    const locker = new pg.Client({ connectionString: gw.pg.url })
    await locker.connect()
    t.teardown(() => locker.end())
    await locker.query('begin')
    await locker.query('lock table docs in access exclusive mode')
    const c = await client()
    const held = c.query('delete from docs where id = 11')
    const req = await pendingRequest(gw, seen)
    t.equal(req.estimate, null, 'EXPLAIN waited for the lock past lock_timeout: no estimate')
    await gw.core.approvals.deny(req.id, dba)
    t.equal((await failure(held)).code, '42501')
    await locker.query('rollback')
    t.equal(await count(), 47993)
  })

  t.test('the estimate changed nothing upstream and left no transaction open', async t => {
    const r = await setup.query("select count(*)::int as n from pg_stat_activity where application_name = 'portcullis-catalog' and state not in ('idle')")
    t.equal(r.rows[0].n, 0)
  })
})

t.test('without a rule on the estimate and without holds, nothing is ever EXPLAINed', async t => {
  const gw = await startGateway({
    rules: [
      { id: 'session', when: { class: ['session'] }, action: 'allow' },
      { id: 'agents', when: { groups: ['agents'], class: ['read', 'write', 'delete'] }, action: 'allow' },
    ],
  })
  t.teardown(() => gw.stop())
  const setup = new pg.Client({ connectionString: gw.pg.url })
  await setup.connect()
  t.teardown(() => setup.end())
  await setup.query('create table t (id int primary key)')
  await setup.query('insert into t select generate_series(1, 100)')
  const c = new pg.Client({ connectionString: await gw.url() })
  await c.connect()
  t.teardown(() => c.end())
  t.equal((await c.query('delete from t where id > 50')).rowCount, 50)
  t.equal((await c.query({ text: 'delete from t where id > $1', values: [10] })).rowCount, 40)
  const r = await setup.query("select count(*)::int as n from pg_stat_activity where application_name = 'portcullis-catalog'")
  t.equal(r.rows[0].n, 0, 'the gateway never opened its catalog connection for an estimate')
})
