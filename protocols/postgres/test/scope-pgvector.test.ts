// Scoped retrieval with real pgvector: two tenants through one gateway against PGlite + pgvector
// (Postgres 15 here has no pgvector package), with the RLS schema of fixtures/sql/tenant-rls.sql
// and its embedding column made a `vector(3)`. The fixture (fixtures/src/pglite-sessions.ts) gives
// each connection its own PGlite backend, as Postgres does; plain pglite-socket would share one
// backend, and so one app.tenant, between the tenants. Asserted on the bytes each client got.
// The same refusals on Postgres 15 itself: scope.test.ts.
import t, { type Test } from 'tap'
import { readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import pg from 'pg'
import { startPgliteSessions } from '@portcullis/fixtures/pglite-sessions'
import { serializeQuery } from '../src/frontend.ts'
import { startGateway, type Gateway } from './harness.ts'
import { RawSession, SYNC, dataRows, errorFields, extendedStatement, type RawFrame } from './raw-session.ts'

const SCHEMA = readFileSync(fileURLToPath(new URL('../../../fixtures/sql/tenant-rls.sql', import.meta.url)), 'utf8')
// the shipped schema, its embedding a pgvector column (pgvector casts float8[] to vector)
const SETUP = `${SCHEMA}\nALTER TABLE documents ALTER COLUMN embedding TYPE vector(3) USING embedding::vector;`
const ALLOW_ALL = [{ id: 'all', when: { groups: ['agents'] }, action: 'allow' }]
// globex's own row: the nearest row overall is globex's
const GLOBEX_VECTOR = '[0.9,0.1,0]'

const leaks = (frames: RawFrame[]) => frames.some(f => f.raw.includes('globex'))

t.test('pgvector on PGlite: two tenants through one gateway, the nearest rows of the tenant only, nobody changes app.tenant', async t => {
  const lite = await startPgliteSessions({ setup: SETUP })
  t.teardown(() => lite.stop())
  const gw: Gateway = await startGateway({
    pg: { host: lite.host, port: lite.port, database: lite.database, user: 'portcullis_app', password: 'trust', url: '', dataDir: '', socketDir: '', stop: async () => {} } as never,
    scope: { settings: { 'app.tenant': '${claims.tenant}' } },
    rules: ALLOW_ALL,
  })
  t.teardown(() => gw.stop())
  const tokenFor = (tenant: string, sub = 'agent-1') => gw.issuer.mint({ sub, groups: ['agents'], extra: { tenant } })

  async function session(tenant: string, parameters: Record<string, string> = {}) {
    const c = new RawSession(gw)
    t.teardown(() => c.socket.destroy())
    const login = await c.start(await tokenFor(tenant), parameters)
    return { c, login }
  }
  async function query(c: RawSession, sql: string): Promise<RawFrame[]> {
    c.socket.write(serializeQuery(sql))
    return (await c.until('Z')) ?? []
  }

  // both tenants' sessions are open at once for the whole test
  const { c: acme, login } = await session('acme')
  t.equal(login.at(-1)?.code, 'Z', 'acme is in')
  const globex = new pg.Client({ host: gw.host, port: gw.port, user: 'agent-2', database: 'app', password: await tokenFor('globex', 'agent-2') })
  await globex.connect()
  t.teardown(() => globex.end().catch(() => {}))
  const acmeOnly = async (t: Test, what: string) => {
    const after = await query(acme, "SELECT current_setting('app.tenant'), count(*) FROM documents")
    t.same(dataRows(after), [['acme', '2']], `${what}: app.tenant is still acme, 2 rows`)
  }

  t.test('similarity search: ORDER BY embedding <-> $1 LIMIT k returns the tenant’s nearest rows', async t => {
    // the extended protocol with the query vector bound as a parameter (node-postgres)
    const g = await globex.query('SELECT tenant, title FROM documents ORDER BY embedding <-> $1 LIMIT 2', [GLOBEX_VECTOR])
    t.same(g.rows, [{ tenant: 'globex', title: 'globex secret' }])
    const acmePg = new pg.Client({ host: gw.host, port: gw.port, user: 'agent-3', database: 'app', password: await tokenFor('acme', 'agent-3') })
    await acmePg.connect()
    t.teardown(() => acmePg.end().catch(() => {}))
    const a = await acmePg.query('SELECT tenant, title, embedding::text AS e FROM documents ORDER BY embedding <-> $1 LIMIT 2', [GLOBEX_VECTOR])
    t.same(a.rows.map(r => [r.tenant, r.title]), [['acme', 'acme payroll'], ['acme', 'acme roadmap']], 'acme’s two nearest, though globex’s row is the query vector itself')
    // the same in a simple query, on the bytes
    const got = await query(acme, `SELECT tenant, title, embedding <-> '${GLOBEX_VECTOR}' AS d FROM documents ORDER BY embedding <-> '${GLOBEX_VECTOR}' LIMIT 5`)
    t.same(dataRows(got).map(r => r[1]), ['acme payroll', 'acme roadmap'])
    t.notOk(leaks(got), 'not one byte of the other tenant')
    t.ok(lite.backends() >= 3, 'each connection is a backend of its own (three tenants’ sessions open)')
    await acmePg.end()
    // the same search without a scope (the superuser, straight to the database): globex's row is the nearest
    const owner = new pg.Client({ host: lite.host, port: lite.port, user: 'postgres', database: 'postgres' })
    await owner.connect()
    t.same((await owner.query('SELECT tenant FROM documents ORDER BY embedding <-> $1 LIMIT 1', [GLOBEX_VECTOR])).rows, [{ tenant: 'globex' }], 'the search is one that would reach the other tenant')
    await owner.end()
  })

  t.test('COPY out and a cursor are scoped by the same policy', async t => {
    const copy = await query(acme, `COPY (SELECT tenant, title, embedding FROM documents ORDER BY embedding <=> '${GLOBEX_VECTOR}') TO STDOUT`)
    const data = copy.filter(f => f.code === 'd').map(f => f.raw.subarray(5).toString()).join('')
    t.equal(data, 'acme\tacme payroll\t[0.5,0.5,0]\nacme\tacme roadmap\t[0.1,0.9,0]\n')
    t.notOk(leaks(copy))
    await query(acme, 'BEGIN')
    await query(acme, `DECLARE near CURSOR FOR SELECT tenant, title FROM documents ORDER BY embedding <-> '${GLOBEX_VECTOR}'`)
    const fetched = await query(acme, 'FETCH 10 FROM near')
    t.same(dataRows(fetched), [['acme', 'acme payroll'], ['acme', 'acme roadmap']])
    t.notOk(leaks(fetched))
    await query(acme, 'COMMIT')
  })

  const attempts = [
    "SET app.tenant = 'globex'",
    "SET SESSION app.tenant TO 'globex'",
    'SET "APP.TENANT" = \'globex\'',
    'RESET app.tenant',
    "SELECT set_config('app.tenant', 'globex', false)",
    "SELECT title FROM documents WHERE set_config('app.tenant', 'globex', true) IS NOT NULL",
    "WITH x AS (SELECT set_config('app.tenant', 'globex', false)) SELECT * FROM x",
    `WITH x AS (SELECT set_config('app.tenant', 'globex', true)) SELECT title FROM documents, x ORDER BY embedding <-> '${GLOBEX_VECTOR}' LIMIT 1`,
    "PREPARE p AS SELECT set_config('app.tenant', 'globex', false)",
    "ALTER ROLE portcullis_app SET app.tenant = 'globex'",
    "ALTER DATABASE postgres SET app.tenant = 'globex'",
    "UPDATE pg_settings SET setting = 'globex' WHERE name = 'app.tenant'",
    "SET ROLE postgres",
    'RESET ROLE',
  ]
  for (const sql of attempts) {
    t.test(`refused, and the session still reads acme only: ${sql}`, async t => {
      const got = await query(acme, sql)
      t.match(errorFields(got.find(f => f.code === 'E')), { S: 'ERROR', C: '42501', M: /scope/ })
      t.notOk(got.some(f => f.code === 'D'), 'nothing ran')
      await acmeOnly(t, sql)
      const g = await globex.query('SELECT tenant FROM documents')
      t.same(g.rows, [{ tenant: 'globex' }], 'and globex, at the same time, its own')
    })
  }

  t.test('SET LOCAL in a transaction is refused; the transaction reads acme only', async t => {
    await query(acme, 'BEGIN')
    t.match(errorFields((await query(acme, "SET LOCAL app.tenant = 'globex'")).find(f => f.code === 'E')), { C: '42501', M: /scope/ })
    await query(acme, 'ROLLBACK')
    await acmeOnly(t, 'SET LOCAL')
  })

  t.test('a prepared statement of the extended protocol calling set_config is refused at Execute', async t => {
    acme.socket.write(Buffer.concat([extendedStatement("SELECT set_config('app.tenant', 'globex', false)"), SYNC]))
    const got = (await acme.until('Z')) ?? []
    t.match(errorFields(got.find(f => f.code === 'E')), { C: '42501', M: /scope/ })
    t.notOk(got.some(f => f.code === 'D'))
    const named = await globex.query({ name: 'sneak', text: 'SELECT set_config($1, $2, false)', values: ['app.tenant', 'acme'] }).catch(e => e)
    t.equal(named.code, '42501', 'a named statement with the name as a parameter, through node-postgres')
    t.same((await globex.query("SELECT current_setting('app.tenant') AS t, count(*)::int AS n FROM documents")).rows, [{ t: 'globex', n: 1 }])
    await acmeOnly(t, 'extended protocol')
  })

  t.test('RESET ALL returns to the scope: the backend took it as the session default', async t => {
    t.notOk((await query(acme, 'RESET ALL')).some(f => f.code === 'E'))
    await acmeOnly(t, 'RESET ALL')
  })

  t.test('a StartupMessage parameter or options naming app.tenant is refused before any backend is asked', async t => {
    const startups: Record<string, string>[] = [{ 'app.tenant': 'globex' }, { options: '-c app.tenant=globex' }, { options: '--app.tenant=globex' }, { options: '-capp.tenant=globex' }]
    for (const parameters of startups) {
      const { login } = await session('acme', parameters)
      t.match(errorFields(login.at(-1)), { S: 'FATAL', M: /app\.tenant is this session's scope/ }, JSON.stringify(parameters))
      t.notOk(login.some(f => f.code === 'Z'), 'never ready for a query')
    }
  })

  t.test('DISCARD ALL then a query: PGlite falls back to its superuser, the gateway ends the session, no row leaves', async t => {
    // on Postgres 15 DISCARD ALL keeps the login role and returns to the scope (scope.test.ts);
    // PGlite has no login roles, so its session authorization goes back to the superuser, whom
    // RLS does not hold. The server reports the change and the gateway ends the session.
    const { c, login } = await session('acme')
    t.equal(login.at(-1)?.code, 'Z', `logged in (${login.map(f => f.code).join('')})`)
    t.same(dataRows(await query(c, 'SELECT count(*) FROM documents')), [['2']])
    c.socket.write(serializeQuery('DISCARD ALL'))
    c.socket.write(serializeQuery('SELECT tenant, title FROM documents'))
    const rest = await c.rest()
    t.notOk(rest.some(f => f.code === 'D'), 'not one row after DISCARD ALL')
    t.notOk(leaks(rest))
    t.match(errorFields(rest.find(f => f.code === 'E')), { S: 'FATAL', M: /no longer runs as the target's upstream role/ }, `the session ends with why (${rest.map(f => f.code).join('')})`)
    await acmeOnly(t, 'another acme session, meanwhile')
  })
})
