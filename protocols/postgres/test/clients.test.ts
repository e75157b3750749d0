import t from 'tap'
import pg from 'pg'
import Cursor from 'pg-cursor'
import postgres from 'postgres'
import { execFile as execFileCb } from 'node:child_process'
import { promisify } from 'node:util'
import { writeFileSync, mkdtempSync, rmSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startGateway } from './harness.ts'

const execFile = promisify(execFileCb)

t.test('real clients through the gateway', async t => {
  const gw = await startGateway()
  t.teardown(() => gw.stop())
  const direct = new pg.Client({ connectionString: gw.pg.url })
  await direct.connect()
  t.teardown(() => direct.end())
  await direct.query(`create table notes (id serial primary key, body text)`)
  await direct.query(`insert into notes (body) select 'note ' || g from generate_series(1, 10) g`)
  const token = await gw.token()
  const libpqEnv = { ...process.env, PGHOST: gw.host, PGPORT: String(gw.port), PGUSER: 'agent-1', PGDATABASE: 'app', PGPASSWORD: token, PGSSLMODE: 'disable' }

  t.test('psql -c and psql -f', async t => {
    const { stdout } = await execFile('psql', ['-XAtc', 'select count(*) from notes'], { env: libpqEnv })
    t.equal(stdout.trim(), '10')
    const dir = mkdtempSync(join(tmpdir(), 'psql-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    const file = join(dir, 'script.sql')
    writeFileSync(file, "begin;\ninsert into notes (body) values ('from psql');\nselect body from notes where body = 'from psql';\ncommit;\n")
    const f = await execFile('psql', ['-XAt', '-v', 'ON_ERROR_STOP=1', '-f', file], { env: libpqEnv })
    t.match(f.stdout, /from psql/)
    const blocked = await execFile('psql', ['-XAtc', 'drop table notes'], { env: libpqEnv }).catch(e => e)
    t.match(blocked.stderr, /blocked by rule/)
  })

  t.test('a psql session fed on stdin goes on after a refused statement', async t => {
    const out = await new Promise<{ stdout: string; stderr: string }>((resolve, reject) => {
      const child = execFileCb('psql', ['-XAt'], { env: libpqEnv }, (err, stdout, stderr) => (err ? reject(err) : resolve({ stdout, stderr })))
      child.stdin!.end("select 'first';\ndelete from notes;\nselect 'second';\n\\q\n")
    })
    t.equal(out.stdout.trim(), 'first\nsecond')
    t.match(out.stderr, /ERROR:\s+blocked by rule no-danger/)
  })

  t.test('pgbench -S in simple, extended and prepared modes', async t => {
    await execFile('pgbench', ['-i', '-s', '1', '-q', gw.pg.url])
    for (const mode of ['simple', 'extended', 'prepared']) {
      const { stdout } = await execFile('pgbench', ['-n', '-S', '-M', mode, '-c', '2', '-T', '2'], { env: libpqEnv })
      const m = /number of transactions actually processed: (\d+)/.exec(stdout)
      t.ok(m && Number(m[1]) > 0, `${mode}: transactions ran`)
      t.match(stdout, /number of failed transactions: 0/, `${mode}: none failed`)
    }
  })

  t.test('pg pool with prepared statements', async t => {
    const pool = new pg.Pool({ connectionString: await gw.url(), max: 3 })
    t.teardown(() => pool.end())
    const results = await Promise.all(Array.from({ length: 12 }, (_, i) => pool.query({ name: 'by-id', text: 'select body from notes where id = $1', values: [(i % 10) + 1] })))
    t.same(results.map(r => r.rows[0].body), Array.from({ length: 12 }, (_, i) => `note ${(i % 10) + 1}`))
  })

  t.test('pg-cursor reads a result in batches (PortalSuspended)', async t => {
    const c = new pg.Client({ connectionString: await gw.url() })
    await c.connect()
    t.teardown(() => c.end())
    await c.query('begin')
    const cursor = c.query(new Cursor('select id from notes where id <= 10 order by id'))
    const first = await cursor.read(4)
    const second = await cursor.read(4)
    const rest = await cursor.read(4)
    await cursor.close()
    await c.query('commit')
    t.same([first.length, second.length, rest.length], [4, 4, 2])
    t.equal(rest[1].id, 10)
  })

  t.test('postgres.js pipelines many queries on one connection', async t => {
    const sql = postgres({ host: gw.host, port: gw.port, user: 'agent-1', pass: token, database: 'app', max: 1, onnotice: () => {} })
    t.teardown(() => sql.end())
    const rows = await Promise.all(Array.from({ length: 20 }, (_, i) => sql`select ${i}::int as n, body from notes where id = ${(i % 10) + 1}`))
    t.same(rows.map(r => r[0].n), Array.from({ length: 20 }, (_, i) => i))
    // a refused statement in the middle of a pipeline fails alone
    const mixed = await Promise.allSettled([sql`select 1 as a`, sql`truncate notes`, sql`select 3 as c`])
    t.equal(mixed[0].status, 'fulfilled')
    t.equal(mixed[1].status, 'rejected')
    t.match((mixed[1] as PromiseRejectedResult).reason, { code: '42501' })
    t.equal(mixed[2].status, 'fulfilled')
    t.same((mixed[2] as unknown as PromiseFulfilledResult<{ c: number }[]>).value[0], { c: 3 })
  })

  // the Debian python3-psycopg2 package lives with the system interpreter, not a pyenv one
  t.test('psycopg2', async t => {
    const script = [
      'import psycopg2, os',
      "c = psycopg2.connect(host=os.environ['PGHOST'], port=os.environ['PGPORT'], user='agent-1', password=os.environ['PGPASSWORD'], dbname='app', sslmode='disable')",
      'cur = c.cursor()',
      "cur.execute('select body from notes where id = %s', (2,))",
      'print(cur.fetchone()[0])',
      'c.close()',
    ].join('\n')
    const { stdout } = await execFile(existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3', ['-c', script], { env: libpqEnv })
    t.equal(stdout.trim(), 'note 2')
  })

  t.test('LISTEN/NOTIFY pass through', async t => {
    const listener = new pg.Client({ connectionString: await gw.url() })
    const notifier = new pg.Client({ connectionString: await gw.url() })
    await listener.connect()
    await notifier.connect()
    t.teardown(() => Promise.all([listener.end(), notifier.end()]))
    await listener.query('listen news')
    const got = new Promise<string | undefined>(resolve => listener.on('notification', n => resolve(n.payload)))
    await notifier.query("notify news, 'hello'")
    t.equal(await got, 'hello')
  })
})
