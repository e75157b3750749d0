import t from 'tap'
import pg from 'pg'
import { connectClient, startGateway, type Gateway } from './harness.ts'

const connect = connectClient

t.test('masking', async t => {
  const gw = await startGateway({
    masking: [
      { id: 'pii', when: { targets: ['db'] }, columns: ['customers.email', 'customers.score'], method: 'redact' },
      { id: 'ids', when: { targets: ['db'] }, columns: ['customers.ssn'], method: 'null' },
      { id: 'free-text', when: { targets: ['db'] }, detectors: ['email'], method: 'redact' },
    ],
  })
  t.teardown(() => gw.stop())
  const setup = new pg.Client({ connectionString: gw.pg.url })
  await setup.connect()
  t.teardown(() => setup.end())
  await setup.query(`create table customers (id int primary key, email text unique, name text, note text, score int)`)
  await setup.query(`insert into customers values (1, 'ann@example.com', 'Ann', 'call me at ann.home@example.org', 7), (2, 'bob@example.com', 'Bob', 'nothing here', 9)`)
  await setup.query(`create view customer_contacts as select id, email, name from customers`)
  await setup.query(`create view loud_contacts as select id, upper(email) as loud, name from customers`)

  t.test('a masked column is masked through an alias; other columns pass untouched', async t => {
    const c = await connect(t, gw)
    const r = await c.query('select id, email as e, name from customers order by id')
    t.same(r.rows, [
      { id: 1, e: '[REDACTED]', name: 'Ann' },
      { id: 2, e: '[REDACTED]', name: 'Bob' },
    ])
  })

  t.test('a non-text masked column becomes NULL (no string fits an int)', async t => {
    const c = await connect(t, gw)
    const r = await c.query('select score from customers order by id')
    t.same(r.rows, [{ score: null }, { score: null }])
  })

  t.test('a view over a masked column is masked; a view that computes from it fails closed', async t => {
    const c = await connect(t, gw)
    const r = await c.query('select * from customer_contacts order by id')
    t.same(r.rows[0], { id: 1, email: '[REDACTED]', name: 'Ann' })
    const loud = await c.query('select loud, name from loud_contacts order by id')
    t.same(loud.rows[0], { loud: null, name: 'Ann' })
  })

  t.test('detectors scan free text columns', async t => {
    const c = await connect(t, gw)
    const r = await c.query('select note from customers order by id')
    t.same(r.rows, [{ note: 'call me at [REDACTED:email]' }, { note: 'nothing here' }])
    const lit = await c.query("select 'write to x@y.example' as msg")
    t.equal(lit.rows[0].msg, 'write to [REDACTED:email]', 'computed columns are scanned too')
  })

  t.test('binary result format is masked in place', async t => {
    const c = await connect(t, gw, { binary: true } as Partial<pg.ClientConfig>)
    const r = await c.query({ text: 'select email, name, score from customers where id = $1', values: [1] })
    t.equal(r.rows[0].email.toString(), '[REDACTED]')
    t.equal(r.rows[0].name.toString(), 'Ann')
    t.equal(r.rows[0].score, null)
  })

  t.test('a value echoed in an error detail is masked', async t => {
    const c = await connect(t, gw)
    let err: { code?: string; detail?: string } | undefined
    try {
      await c.query("insert into customers values (3, 'ann@example.com', 'Dup', '', 1)")
    } catch (e) {
      err = e as typeof err
    }
    t.equal(err?.code, '23505')
    t.equal(err?.detail, 'Key (email)=([REDACTED]) already exists.')
  })

  t.test('a failing row echoed in an error detail is hidden', async t => {
    const c = await connect(t, gw)
    const err = await c.query("insert into customers (id, email, name) values (null, 'eve@example.com', 'Eve')").catch(e => e)
    t.equal(err.code, '23502')
    t.equal(err.detail, 'Failing row contains (masked)')
  })

  t.test('a column added after the catalog cached its table is still masked', async t => {
    const c = await connect(t, gw)
    await c.query('select id, name from customers')
    await setup.query(`alter table customers add column ssn text default '123-45-6789'`)
    const gw2rows = await c.query('select ssn from customers where id = 1')
    t.same(gw2rows.rows, [{ ssn: null }])
  })

  t.test('masked values are counted in the audit event', async t => {
    const c = await connect(t, gw)
    const before = gw.audit.length
    await c.query('select email from customers')
    await new Promise(r => setTimeout(r, 100))
    const ev = gw.audit.slice(before).find(a => a.class === 'read')
    t.match(ev, { rows: 2, masked: 2, decision: 'allow' })
  })
})
