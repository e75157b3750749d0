import t from 'tap'
import pg from 'pg'
import { startGateway, DEFAULT_RULES, type Gateway } from './harness.ts'

const approver = { subject: 'dba-1', groups: ['dba'], issuer: 'test' }

async function connect(t: { teardown(fn: () => unknown): void }, gw: Gateway, sub?: string, groups?: string[]): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: await gw.url(sub, groups) })
  client.on('error', () => {})
  await client.connect()
  t.teardown(() => client.end().catch(() => {}))
  return client
}

async function errorOf(p: Promise<unknown>): Promise<{ code?: string; message: string; detail?: string }> {
  try {
    await p
  } catch (e) {
    return e as { code?: string; message: string }
  }
  throw new Error('expected the statement to fail')
}

t.test('decisions', async t => {
  const gw = await startGateway({
    rules: [
      ...DEFAULT_RULES,
      { id: 'agents-drop', when: { groups: ['agents'], class: ['schema-change'] }, action: 'approve', approvers: ['dba'] },
    ],
  })
  t.teardown(() => gw.stop())
  // setup straight on Postgres, not through the gateway
  const setup = new pg.Client({ connectionString: gw.pg.url })
  await setup.connect()
  t.teardown(() => setup.end())
  await setup.query('create table items (id int primary key, name text)')
  await setup.query("insert into items values (1, 'one'), (2, 'two')")

  t.test('a blocked statement answers 42501 naming the rule and the session stays usable', async t => {
    const c = await connect(t, gw)
    const e = await errorOf(c.query('delete from items'))
    t.equal(e.code, '42501')
    t.match(e.message, /^blocked by rule no-danger: dangerous statements are not allowed/)
    const r = await c.query('select count(*)::int as n from items')
    t.equal(r.rows[0].n, 2, 'nothing was deleted and the next query runs')
    t.ok(gw.audit.some(a => a.decision === 'block' && a.rule === 'no-danger' && a.class === 'bulk-delete'), 'the refusal is audited')
  })

  t.test('a multi-statement string is refused whole when one statement is refused', async t => {
    const c = await connect(t, gw)
    const e = await errorOf(c.query("insert into items values (3, 'three'); truncate items"))
    t.equal(e.code, '42501')
    const r = await c.query('select count(*)::int as n from items where id = 3')
    t.equal(r.rows[0].n, 0, 'the allowed insert did not run either')
  })

  t.test('a refusal inside a transaction block fails it and the later COMMIT rolls back', async t => {
    const c = await connect(t, gw)
    await c.query('begin')
    await c.query("insert into items values (10, 'ten')")
    const e = await errorOf(c.query('delete from items'))
    t.equal(e.code, '42501')
    const after = await errorOf(c.query('select 1'))
    t.equal(after.code, '25P02', 'the block is aborted, as after any error')
    const commit = await c.query('commit')
    t.equal(commit.command, 'ROLLBACK')
    const r = await c.query('select count(*)::int as n from items where id = 10')
    t.equal(r.rows[0].n, 0, 'nothing of the block committed')
  })

  t.test('extended-protocol statements are decided at Execute', async t => {
    const c = await connect(t, gw)
    const e = await errorOf(c.query({ text: 'truncate items' }))
    t.equal(e.code, '42501')
    const e2 = await errorOf(c.query({ name: 'danger', text: 'select pg_terminate_backend($1)', values: [1] }))
    t.equal(e2.code, '42501')
    t.match(e2.message, /blocked by rule no-danger/)
    const r = await c.query({ name: 'ok', text: 'select name from items where id = $1', values: [1] })
    t.same(r.rows, [{ name: 'one' }])
    const again = await c.query({ name: 'ok', text: 'select name from items where id = $1', values: [2] })
    t.same(again.rows, [{ name: 'two' }], 'a prepared statement is decided again at each Execute')
  })

  t.test('approve: the client sees a notice with the request id, then the statement runs once approved', async t => {
    const c = await connect(t, gw)
    const notices: string[] = []
    c.on('notice', n => notices.push(`${n.message} | ${(n as { hint?: string }).hint}`))
    const pending = c.query('create table approved_table (id int)')
    let id: string | undefined
    for (let i = 0; i < 100 && !id; i++) {
      await new Promise(r => setTimeout(r, 50))
      id = gw.core.approvals.list().find(a => a.status === 'pending')?.id
    }
    t.ok(id, 'an approval request is pending')
    gw.core.approvals.approve(id!, approver)
    await pending
    t.match(notices[0], new RegExp(`request ${id}.*portcullis approvals approve ${id}`))
    const r = await c.query("select count(*)::int as n from pg_tables where tablename = 'approved_table'")
    t.equal(r.rows[0].n, 1)
  })

  t.test('approve then deny: the client gets an error naming the request id', async t => {
    const c = await connect(t, gw)
    const pending = errorOf(c.query('create table denied_table (id int)'))
    let id: string | undefined
    for (let i = 0; i < 100 && !id; i++) {
      await new Promise(r => setTimeout(r, 50))
      id = gw.core.approvals.list().find(a => a.status === 'pending')?.id
    }
    gw.core.approvals.deny(id!, approver, 'not today')
    const e = await pending
    t.equal(e.code, '42501')
    t.match(e.message, id!)
    const r = await c.query("select count(*)::int as n from pg_tables where tablename = 'denied_table'")
    t.equal(r.rows[0].n, 0)
  })

  t.test('a bad token is refused with 28P01 and a reason', async t => {
    const c = new pg.Client({ host: gw.host, port: gw.port, user: 'x', password: 'not-a-token', database: 'app' })
    const e = await errorOf(c.connect())
    t.equal(e.code, '28P01')
    t.notMatch(e.message, gw.pg.password)
  })
})
