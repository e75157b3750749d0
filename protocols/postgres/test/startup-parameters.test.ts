import t from 'tap'
import postgres from 'postgres'
import pg from 'pg'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { startGateway } from './harness.ts'
import { RawSession, errorFields, parameterStatus } from './raw-session.ts'
import { serializeQuery } from '../src/frontend.ts'

const execFileP = promisify(execFile)

// With backslash escapes on, or a client-only multibyte encoding, the server would read a statement
// differently from the classifier, so a statement could hide inside what looks like a literal.
t.test('startup settings that would make the server read SQL unlike the classifier are refused', async t => {
  const gw = await startGateway()
  t.teardown(() => gw.stop())
  const token = await gw.token('agent-1', ['agents'])

  const off = postgres({ host: gw.host, port: gw.port, user: 'agent-1', pass: token, database: 'app', max: 1,
    connection: { standard_conforming_strings: 'off' }, onnotice: () => {} })
  await t.rejects(off`SELECT 1`, /standard_conforming_strings must stay on/)
  await off.end({ timeout: 1 })

  const sjis = postgres({ host: gw.host, port: gw.port, user: 'agent-1', pass: token, database: 'app', max: 1,
    connection: { client_encoding: 'SJIS' }, onnotice: () => {} })
  await t.rejects(sjis`SELECT 1`, /client_encoding SJIS is not accepted/)
  await sjis.end({ timeout: 1 })

  const fine = new pg.Client({ host: gw.host, port: gw.port, user: 'agent-1', password: token, database: 'app', client_encoding: 'UTF8' } as pg.ClientConfig)
  await fine.connect()
  const { rows } = await fine.query('SHOW standard_conforming_strings')
  t.equal(rows[0].standard_conforming_strings, 'on', 'a plain UTF8 client connects and keeps standard strings')
  await fine.end()
})

// Every parameter a client sends reaches the server, vetted like a SQL SET of it: a safety timeout
// set at startup is in force through Portcullis, and an unsafe setting is refused, never dropped.
t.test('startup parameters and options pass through, vetted like SET', async t => {
  const gw = await startGateway()
  t.teardown(() => gw.stop())
  const direct = new pg.Client({ connectionString: gw.pg.url })
  await direct.connect()
  t.teardown(() => direct.end())

  t.test('psql with PGOPTIONS: SHOW through the gateway returns the settings', async t => {
    const token = await gw.token('agent-1', ['agents'])
    const { stdout } = await execFileP('psql', ['-X', '-At', '-h', gw.host, '-p', String(gw.port), '-U', 'agent-1', '-d', 'app', '-c', 'SHOW search_path', '-c', 'SHOW statement_timeout'], {
      env: { ...process.env, PGPASSWORD: token, PGOPTIONS: '-c search_path=foo -c statement_timeout=1234', PGSSLMODE: 'disable' },
    })
    t.same(stdout.trim().split('\n'), ['foo', '1234ms'])
  })

  t.test('node-postgres options, statement_timeout, lock_timeout, idle_in_transaction_session_timeout', async t => {
    const c = new pg.Client({
      connectionString: await gw.url(),
      options: '-c default_transaction_isolation=serializable',
      statement_timeout: 4321,
      lock_timeout: 2000,
      idle_in_transaction_session_timeout: 60000,
      application_name: 'kept-name',
    } as pg.ClientConfig)
    await c.connect()
    t.teardown(() => c.end())
    const show = async (name: string) => Object.values((await c.query(`SHOW ${name}`)).rows[0])[0]
    t.equal(await show('default_transaction_isolation'), 'serializable')
    t.equal(await show('statement_timeout'), '4321ms')
    t.equal(await show('lock_timeout'), '2s')
    t.equal(await show('idle_in_transaction_session_timeout'), '1min')
    t.equal(await show('application_name'), 'kept-name', 'application_name is kept')
    // the timeout is the server's own: a statement past it is canceled there
    await c.query('SET statement_timeout = 50')
    await t.rejects(c.query('SELECT pg_sleep(5)'), { code: '57014' })
  })

  t.test('raw StartupMessage: options split as Postgres does, escaped spaces and --name=value', async t => {
    const c = new RawSession(gw)
    const got = await c.start(await gw.token('agent-1', ['agents']), {
      options: '  -c application_name=my\\ agent\\\\x   --lock-timeout=3s -cwork_mem=8MB ',
    })
    t.equal(got.at(-1)?.code, 'Z', 'logged in')
    t.equal(parameterStatus(got).application_name, 'my agent\\x', 'the reported name keeps the escaped space and backslash')
    const r = await direct.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = 'my agent\\x'")
    t.equal(r.rows[0].n, 1, 'the upstream session has it')
    c.socket.write(serializeQuery('SHOW lock_timeout; SHOW work_mem'))
    const shown = (await c.until('Z'))!.filter(f => f.code === 'D').map(f => f.raw.subarray(11).toString())
    t.same(shown, ['3s', '8MB'])
    c.socket.end()
  })

  t.test('unsafe settings are refused with a FATAL that names them, before the token is asked for', async t => {
    const refused: [Record<string, string>, RegExp][] = [
      [{ client_encoding: 'SHIFT_JIS_2004' }, /client_encoding SHIFT_JIS_2004 is not accepted/],
      [{ Client_Encoding: 'sjis' }, /client_encoding sjis is not accepted/],
      [{ client_encoding: 'BIG5' }, /client_encoding BIG5/],
      [{ options: '-c client_encoding=gb18030' }, /options -c client_encoding: client_encoding gb18030 is not accepted/],
      [{ options: '--client-encoding=win950' }, /options -c client_encoding: client_encoding win950/],
      [{ options: '-c search_path=x -cstandard_conforming_strings=off' }, /standard_conforming_strings must stay on/],
      [{ STANDARD_CONFORMING_STRINGS: 'of' }, /standard_conforming_strings must stay on/],
      [{ role: 'postgres' }, /role changes who the session runs as/],
      [{ options: '-c session_authorization=postgres' }, /session_authorization changes who the session runs as/],
      [{ options: '-c session_replication_role=replica' }, /session_replication_role changes what the server enforces/],
      [{ replication: 'database' }, /replication connections are not accepted/],
      [{ replication: 'true' }, /replication connections are not accepted/],
      // the server's other switches set settings by letter (-P: ignore_system_indexes): not modelled
      [{ options: '-P' }, /options switch -P is not accepted/],
      [{ options: '-c' }, /-c requires a name=value/],
      [{ options: '-c statement_timeout' }, /-c statement_timeout requires a value/],
      [{ options: 'statement_timeout=1' }, /invalid command-line argument for server process: statement_timeout=1/],
    ]
    for (const [parameters, message] of refused) {
      const c = new RawSession(gw)
      const got = await c.start(await gw.token('agent-1', ['agents']), parameters)
      t.same(got.map(f => f.code), ['E'], `${JSON.stringify(parameters)}: one message, no password request`)
      t.match(errorFields(got[0]), { S: 'FATAL', C: '42501', M: message }, JSON.stringify(parameters))
      await c.rest()
    }
  })

  t.test('replication=false and a setting the server does not know reach the server, which answers', async t => {
    const ok = new RawSession(gw)
    const got = await ok.start(await gw.token('agent-1', ['agents']), { replication: 'false' })
    t.equal(got.at(-1)?.code, 'Z', 'replication=false is a normal session')
    ok.socket.end()
    // protocol options are not settings: Postgres answers NegotiateProtocolVersion, so do we
    const pq = new RawSession(gw)
    await pq.start(await gw.token('agent-1', ['agents']), { '_pq_.no_such_option': 'x' })
    const negotiated = pq.received
    t.equal(negotiated[0]?.code, 'v', 'NegotiateProtocolVersion names the option')
    t.ok(negotiated[0]?.raw.includes(Buffer.from('_pq_.no_such_option\0')))
    t.equal(negotiated.at(-1)?.code, 'Z')
    pq.socket.end()
    const unknown = new RawSession(gw)
    const failed = await unknown.start(await gw.token('agent-1', ['agents']), { no_such_setting: '1' })
    t.match(errorFields(failed.at(-1)), { S: 'FATAL', C: '42704', M: /unrecognized configuration parameter "no_such_setting"/ })
  })
})
