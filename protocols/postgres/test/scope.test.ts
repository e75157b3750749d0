// Scoped retrieval on Postgres: two tenants through one gateway, a real Postgres 15 with the RLS
// schema of fixtures/sql/tenant-rls.sql, the gateway's upstream role a plain one (no superuser, no
// BYPASSRLS). The gateway sets app.tenant from the token; every way of changing it is refused, and
// every read (rows, COPY, cursors, extended protocol) returns the caller's tenant's rows only.
import t from 'tap'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { readRecording } from '@portcullis/core'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { startPostgres } from '@portcullis/fixtures/postgres'
import { serializeQuery } from '../src/frontend.ts'
import { startGateway, type Gateway } from './harness.ts'
import { RawSession, SYNC, dataRows, errorFields, extendedStatement, type RawFrame } from './raw-session.ts'

const SCHEMA = readFileSync(fileURLToPath(new URL('../../../fixtures/sql/tenant-rls.sql', import.meta.url)), 'utf8')
const APP_PASSWORD = 'tenant-app-password'

// every class allowed: what is refused below is refused by the scope, not by a rule
const ALLOW_ALL = [{ id: 'all', when: { groups: ['agents'] }, action: 'allow' }]


t.test('two tenants through one gateway: the scope is set, kept, and nobody changes it', async t => {
  const server = await startPostgres()
  t.teardown(() => server.stop())
  const owner = new pg.Client({ connectionString: server.url })
  await owner.connect()
  t.teardown(() => owner.end())
  await owner.query(SCHEMA)
  await owner.query(`ALTER ROLE portcullis_app PASSWORD '${APP_PASSWORD}'`)
  const gw: Gateway = await startGateway({
    pg: { ...server, user: 'portcullis_app', password: APP_PASSWORD },
    scope: { settings: { 'app.tenant': '${claims.tenant}' } },
    rules: ALLOW_ALL,
  })
  t.teardown(() => gw.stop())
  const tokenFor = (tenant: unknown, sub = 'agent-1') =>
    gw.issuer.mint({ sub, groups: ['agents'], ...(tenant === undefined ? {} : { extra: { tenant } }) })
  const globexRows = async () => (await owner.query("SELECT count(*)::int AS n FROM documents WHERE tenant = 'globex'")).rows[0].n as number

  async function session(tenant: unknown, parameters: Record<string, string> = {}) {
    const c = new RawSession(gw)
    t.teardown(() => c.socket.destroy())
    const login = await c.start(await tokenFor(tenant), parameters)
    return { c, login }
  }
  async function query(c: RawSession, sql: string): Promise<RawFrame[]> {
    c.socket.write(serializeQuery(sql))
    return (await c.until('Z')) ?? []
  }

  t.test('each tenant reads its own rows only (simple query, through node-postgres too)', async t => {
    const { c } = await session('acme')
    const got = await query(c, 'SELECT tenant, title FROM documents ORDER BY id')
    t.same(dataRows(got), [['acme', 'acme roadmap'], ['acme', 'acme payroll']])
    t.notOk(got.some(f => f.raw.includes('globex')), 'not one byte of the other tenant')
    const client = new pg.Client({ host: gw.host, port: gw.port, user: 'agent-2', database: 'app', password: await tokenFor('globex', 'agent-2') })
    await client.connect()
    t.teardown(() => client.end())
    const r = await client.query('SELECT tenant, title FROM documents WHERE $1::int > 0', [1])
    t.same(r.rows, [{ tenant: 'globex', title: 'globex secret' }], 'the extended protocol, the other tenant')
    t.equal((await client.query("SELECT current_setting('app.tenant') AS t")).rows[0].t, 'globex')
  })

  t.test('a nearest-neighbour search returns the nearest rows of the tenant, not the nearest rows', async t => {
    const { c } = await session('acme')
    // the query vector is globex's own row: the nearest row overall is globex's
    const sql = "SELECT tenant, title FROM documents ORDER BY (embedding[1]-0.9)^2 + (embedding[2]-0.1)^2 + (embedding[3])^2 LIMIT 1"
    const got = await query(c, sql)
    t.same(dataRows(got), [['acme', 'acme payroll']])
    t.notOk(got.some(f => f.raw.includes('globex')))
    t.same((await owner.query(sql)).rows, [{ tenant: 'globex', title: 'globex secret' }], 'without the scope (the owner, a superuser) it would have been globex')
  })

  t.test('COPY and cursors are scoped by the same policy', async t => {
    const { c } = await session('acme')
    const copy = await query(c, 'COPY (SELECT tenant, title FROM documents) TO STDOUT')
    const data = copy.filter(f => f.code === 'd').map(f => f.raw.subarray(5).toString()).join('')
    t.equal(data, 'acme\tacme roadmap\nacme\tacme payroll\n')
    await query(c, 'BEGIN')
    await query(c, 'DECLARE cur CURSOR FOR SELECT tenant FROM documents')
    const fetched = await query(c, 'FETCH ALL FROM cur')
    t.same(dataRows(fetched), [['acme'], ['acme']])
    await query(c, 'COMMIT')
  })

  const attempts = [
    "SET app.tenant = 'globex'",
    "SET SESSION app.tenant TO 'globex'",
    'SET "APP.TENANT" = \'globex\'',
    'SET app.tenant TO DEFAULT',
    'RESET app.tenant',
    "SELECT set_config('app.tenant', 'globex', false)",
    "SELECT title FROM documents WHERE set_config('app.tenant', 'globex', true) IS NOT NULL",
    "SELECT pg_catalog.set_config('app.tenant', 'globex', false)",
    "SELECT set_config(lower('APP.TENANT'), 'globex', false)",
    "SELECT * FROM (SELECT 1) s, LATERAL set_config('app.tenant', 'globex', false)",
    "WITH x AS (SELECT set_config('app.tenant', 'globex', false)) SELECT * FROM x",
    "EXPLAIN ANALYZE SELECT set_config('app.tenant', 'globex', false)",
    "UPDATE pg_settings SET setting = 'globex' WHERE name = 'app.tenant'",
    "ALTER ROLE portcullis_app SET app.tenant = 'globex'",
    "ALTER DATABASE app SET app.tenant = 'globex'",
    "DO $$ BEGIN PERFORM set_config('app.tenant', 'globex', false); END $$",
    "CREATE FUNCTION sneaky() RETURNS int LANGUAGE sql SET app.tenant = 'globex' AS 'SELECT 1'",
    "CREATE FUNCTION sneaky2() RETURNS text LANGUAGE plpgsql AS $$ BEGIN RETURN set_config('app' || '.tenant', 'globex', false); END $$",
    "PREPARE p AS SELECT set_config('app.tenant', 'globex', false)",
    "COPY (SELECT set_config('app.tenant', 'globex', false)) TO STDOUT",
    "DECLARE c CURSOR WITH HOLD FOR SELECT set_config('app.tenant', 'globex', false)",
    "SELECT set_config($$app.tenant$$, 'globex', false)",
    "SELECT set_config(E'app\\x2etenant', 'globex', false)",
    "SELECT 1; SET app.tenant = 'globex'",
    'ALTER TABLE documents DISABLE ROW LEVEL SECURITY',
    'ALTER TABLE documents NO FORCE ROW LEVEL SECURITY',
    'ALTER TABLE documents OWNER TO portcullis_app',
    'DROP POLICY tenant_isolation ON documents',
    'CREATE POLICY everything ON documents USING (true)',
    'LISTEN tenant_news',
    "NOTIFY tenant_news, 'hello'",
    "SELECT pg_notify('tenant_news', 'hello')",
    'SELECT query FROM pg_stat_activity',
    'SELECT lo_get(1234)',
    'SET ROLE portcullis_app',
    'SET SESSION AUTHORIZATION portcullis_app',
    'RESET ROLE',
    "SELECT set_config('role', 'postgres', false)",
  ]
  for (const sql of attempts) {
    t.test(`refused under the scope, and the session still reads acme only: ${sql}`, async t => {
      const { c } = await session('acme')
      const got = await query(c, sql)
      const err = got.find(f => f.code === 'E')
      t.match(errorFields(err), { S: 'ERROR', C: '42501', M: /scope/ })
      t.notOk(got.some(f => f.code === 'D'), 'nothing ran')
      const after = await query(c, "SELECT current_setting('app.tenant'), count(*) FROM documents")
      t.same(dataRows(after), [['acme', '2']], 'app.tenant is still acme')
    })
  }

  t.test('SET LOCAL inside a transaction is refused, and the transaction reads acme only', async t => {
    const { c } = await session('acme')
    await query(c, 'BEGIN')
    const got = await query(c, "SET LOCAL app.tenant = 'globex'")
    t.match(errorFields(got.find(f => f.code === 'E')), { C: '42501', M: /scope/ })
    await query(c, 'ROLLBACK')
    t.same(dataRows(await query(c, 'SELECT count(*) FROM documents')), [['2']])
  })

  t.test('the extended protocol: a Parse of set_config is refused at Execute', async t => {
    const { c } = await session('acme')
    c.socket.write(Buffer.concat([extendedStatement("SELECT set_config('app.tenant', 'globex', false)"), SYNC]))
    const got = (await c.until('Z')) ?? []
    t.match(errorFields(got.find(f => f.code === 'E')), { C: '42501', M: /scope/ })
    t.notOk(got.some(f => f.code === 'D'))
    t.same(dataRows(await query(c, "SELECT current_setting('app.tenant')")), [['acme']])
  })

  t.test('RESET ALL and DISCARD ALL return to the scope (the gateway set it as the session default)', async t => {
    const { c } = await session('acme')
    t.notOk((await query(c, 'RESET ALL')).some(f => f.code === 'E'))
    t.same(dataRows(await query(c, "SELECT current_setting('app.tenant'), count(*) FROM documents")), [['acme', '2']])
    t.notOk((await query(c, 'DISCARD ALL')).some(f => f.code === 'E'))
    t.same(dataRows(await query(c, "SELECT current_setting('app.tenant'), count(*) FROM documents")), [['acme', '2']])
  })

  t.test('a StartupMessage parameter or options naming the scoped setting is refused', async t => {
    const startups: Record<string, string>[] = [{ 'app.tenant': 'globex' }, { 'APP.TENANT': 'globex' }, { options: '-c app.tenant=globex' }, { options: '--app.tenant=globex' }]
    for (const parameters of startups) {
      const c = new RawSession(gw)
      t.teardown(() => c.socket.destroy())
      const got = await c.start(await tokenFor('acme'), parameters)
      t.match(errorFields(got.at(-1)), { S: 'FATAL', M: /app\.tenant is this session's scope/ }, JSON.stringify(parameters))
      t.notOk(got.some(f => f.code === 'R' && f.raw.readInt32BE(5) === 0), 'never authenticated')
    }
  })

  t.test('a token without the claim, or with a non-string one, is refused at login', async t => {
    for (const tenant of [undefined, 42, ['acme'], '']) {
      const { login } = await session(tenant)
      t.match(errorFields(login.at(-1)), { S: 'FATAL', C: '28000', M: /claim claims\.tenant/ }, JSON.stringify(tenant))
    }
  })

  t.test("a tenant claim that looks like SQL is one value: it matches no row and changes nothing", async t => {
    const { c, login } = await session("acme' OR '1'='1")
    t.equal(login.at(-1)?.code, 'Z')
    t.same(dataRows(await query(c, 'SELECT count(*) FROM documents')), [['0']])
    t.same(dataRows(await query(c, "SELECT current_setting('app.tenant')")), [["acme' OR '1'='1"]])
  })

  t.test('writes: a tenant cannot insert into or update the other tenant', async t => {
    const { c } = await session('acme')
    const ins = await query(c, "INSERT INTO documents (tenant, title, body) VALUES ('globex', 'planted', 'x')")
    t.match(errorFields(ins.find(f => f.code === 'E')), { C: '42501', M: /row-level security/ })
    const upd = await query(c, "UPDATE documents SET title = 'defaced' WHERE tenant = 'globex'")
    t.match(dataRows(upd), [])
    t.ok(upd.some(f => f.code === 'C' && f.raw.includes('UPDATE 0')), 'UPDATE 0')
    t.equal(await globexRows(), 1)
    t.equal((await owner.query("SELECT title FROM documents WHERE tenant = 'globex'")).rows[0].title, 'globex secret', 'the upstream row is untouched')
  })

  t.test('a scoped target whose upstream role is a superuser refuses every session', async t => {
    const su = await startGateway({ pg: server, scope: { settings: { 'app.tenant': '${claims.tenant}' } }, rules: ALLOW_ALL })
    t.teardown(() => su.stop())
    const c = new RawSession(su)
    t.teardown(() => c.socket.destroy())
    const got = await c.start(await su.issuer.mint({ sub: 'agent-1', groups: ['agents'], extra: { tenant: 'acme' } }))
    t.match(errorFields(got.at(-1)), { S: 'FATAL', C: '42501', M: /upstream role is a superuser/ })
    t.notOk(got.some(f => f.code === 'Z'), 'never ready for a query')
  })

  t.test('audit and the recording show the scope of each operation', async t => {
    const { c } = await session('acme')
    await query(c, 'SELECT 1')
    c.socket.end()
    await c.rest()
    // the audit sink hands lines over in batches: wait for the line, not for a time
    for (let i = 0; i < 1000 && !gw.audit.some(l => l.decision === 'block' && l.scope !== undefined); i++) await new Promise(r => setTimeout(r, 10))
    t.match(gw.audit.find(l => l.class === 'read' && l.scope !== undefined), { scope: 'app.tenant="acme"' }, 'an allowed read')
    t.match(gw.audit.find(l => l.decision === 'block' && l.scope !== undefined), { scope: 'app.tenant="acme"', error: /scope/ }, 'a refusal')
    const decisions: Record<string, unknown>[] = []
    for (const f of readdirSync(gw.recordings, { recursive: true }).map(String).filter(f => /\.[a-z]+$/.test(f)))
      for await (const e of readRecording(join(gw.recordings, f))) if (e.type === 'decision') decisions.push(e.payload as Record<string, unknown>)
    t.ok(decisions.length > 0 && decisions.every(d => d.scope === 'app.tenant="acme"' || d.scope === 'app.tenant="globex"' || d.scope === `app.tenant=${JSON.stringify("acme' OR '1'='1")}`), 'every decision in the recordings names its scope')
    t.ok(decisions.some(d => d.action === 'block' && /scope/.test(String(d.reason))), 'and the refusals say why')
  })
})
