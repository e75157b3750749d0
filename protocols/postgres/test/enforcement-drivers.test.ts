// Real drivers with their statement caches on, through the gateway under a mask plan: masked on
// every execution (issue 10). pgjdbc past prepareThreshold and postgres.js with prepare: true run
// a named statement with Bind/Execute/Sync only, without Describe.
import t from 'tap'
import { execFile as execFileCb } from 'node:child_process'
import { promisify } from 'node:util'
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import postgres from 'postgres'
import { startGateway } from './harness.ts'

const execFile = promisify(execFileCb)
const JAR = '/usr/share/java/postgresql.jar'
const PYTHON = existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3'

const JDBC = `
import java.sql.*;
public class JdbcCache {
  public static void main(String[] a) throws Exception {
    try (Connection c = DriverManager.getConnection(a[0], "agent-1", a[1])) {
      try (PreparedStatement ps = c.prepareStatement("select email, api_key, name from customers where id = ?")) {
        for (int i = 0; i < 10; i++) {
          ps.setInt(1, 1 + (i % 2));
          try (ResultSet rs = ps.executeQuery()) { rs.next(); System.out.println(rs.getString(1) + " " + rs.getString(2) + " " + rs.getString(3)); }
        }
      }
    }
  }
}
`

t.test('real drivers with statement caches: masked on every execution', async t => {
  const gw = await startGateway({
    masking: [{ id: 'pii', when: { targets: ['db'] }, columns: ['customers.email', 'customers.api_key'], method: 'redact' }],
  })
  t.teardown(() => gw.stop())
  const direct = new pg.Client({ connectionString: gw.pg.url })
  await direct.connect()
  t.teardown(() => direct.end())
  await direct.query(`create table customers (id int primary key, email text, api_key text, name text)`)
  await direct.query(`insert into customers values (1, 'ann@example.com', 'sk_live_ann', 'Ann'), (2, 'bob@example.com', 'sk_live_bob', 'Bob')`)
  const token = await gw.token()

  t.test('pgjdbc, prepareThreshold=1, one PreparedStatement executed 10 times', { skip: !existsSync(JAR) && 'pgjdbc jar not installed' }, async t => {
    const dir = mkdtempSync(join(tmpdir(), 'jdbc-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    writeFileSync(join(dir, 'JdbcCache.java'), JDBC)
    const url = `jdbc:postgresql://127.0.0.1:${gw.port}/app?sslmode=disable&prepareThreshold=1`
    const { stdout } = await execFile('java', ['-cp', JAR, join(dir, 'JdbcCache.java'), url, token], { timeout: 60_000 })
    const lines = stdout.trim().split('\n')
    t.equal(lines.length, 10)
    t.same(
      lines,
      Array.from({ length: 10 }, (_, i) => `[REDACTED] [REDACTED] ${i % 2 === 0 ? 'Ann' : 'Bob'}`),
    )
  })

  t.test('postgres.js, prepare: true, the same query run 4 times', async t => {
    const sql = postgres({ host: gw.host, port: gw.port, user: 'agent-1', pass: token, database: 'app', max: 1, prepare: true, onnotice: () => {} })
    t.teardown(() => sql.end())
    for (let i = 0; i < 4; i++) {
      const id = 1 + (i % 2)
      const rows = await sql`select email, api_key, name from customers where id = ${id}`
      t.same([...rows], [{ email: '[REDACTED]', api_key: '[REDACTED]', name: id === 1 ? 'Ann' : 'Bob' }], `execution ${i + 1}`)
    }
    // pipelined executions of the cached statement
    const all = await Promise.all([1, 2, 1].map(id => sql`select email, api_key, name from customers where id = ${id}`))
    t.same(all.map(r => r[0]!.email), ['[REDACTED]', '[REDACTED]', '[REDACTED]'])
  })

  t.test('node-postgres named queries, text and binary', async t => {
    for (const binary of [false, true]) {
      const c = new pg.Client({ connectionString: await gw.url(), binary } as pg.ClientConfig)
      await c.connect()
      t.teardown(() => c.end())
      for (let i = 0; i < 3; i++) {
        const r = await c.query({ name: 'by-id', text: 'select email, api_key, name from customers where id = $1', values: [1 + (i % 2)] })
        t.equal(String(r.rows[0].email), '[REDACTED]')
        t.equal(String(r.rows[0].api_key), '[REDACTED]')
      }
    }
  })

  t.test('psycopg2: plain, SQL PREPARE/EXECUTE and a named (server-side) cursor', async t => {
    const script = [
      'import psycopg2, os',
      "c = psycopg2.connect(host=os.environ['PGHOST'], port=os.environ['PGPORT'], user='agent-1', password=os.environ['PGPASSWORD'], dbname='app', sslmode='disable')",
      'cur = c.cursor()',
      'for i in range(3):',
      "    cur.execute('select email, api_key from customers where id = %s', (1 + i % 2,))",
      "    print(*cur.fetchone())",
      "cur.execute('prepare byid(int) as select email, api_key from customers where id = $1')",
      'for i in range(3):',
      "    cur.execute('execute byid(%s)', (1 + i % 2,))",
      "    print(*cur.fetchone())",
      "named = c.cursor(name='walk')",
      'named.itersize = 1',
      "named.execute('select email, api_key from customers order by id')",
      'for row in named:',
      '    print(*row)',
      'c.close()',
    ].join('\n')
    const env = { ...process.env, PGHOST: gw.host, PGPORT: String(gw.port), PGPASSWORD: token }
    const { stdout } = await execFile(PYTHON, ['-c', script], { env, timeout: 30_000 })
    t.same(stdout.trim().split('\n'), Array(8).fill('[REDACTED] [REDACTED]'))
  })
})
