import t from 'tap'
import pg from 'pg'
import { execFile as execFileCb } from 'node:child_process'
import { promisify } from 'node:util'
import { testCertificate } from '@portcullis/fixtures/tls'
import { startGateway } from './harness.ts'

const execFile = promisify(execFileCb)

t.test('client-facing TLS: psql verify-full and pg with ssl; a plain connection is refused with a reason', async t => {
  const gw = await startGateway({ tls: true, options: { requireTls: true } })
  t.teardown(() => gw.stop())
  const cert = testCertificate()
  const env = { ...process.env, PGPASSWORD: await gw.token() }
  const conn = `host=localhost port=${gw.port} user=agent-1 dbname=app sslmode=verify-full sslrootcert=${cert.certFile}`
  const { stdout } = await execFile('psql', [conn, '-XAtc', 'select 40 + 2'], { env })
  t.equal(stdout.trim(), '42')
  const req = await execFile('psql', [`host=127.0.0.1 port=${gw.port} user=agent-1 dbname=app sslmode=require`, '-XAtc', 'select 1'], { env })
  t.equal(req.stdout.trim(), '1')
  const client = new pg.Client({ host: 'localhost', port: gw.port, user: 'agent-1', database: 'app', password: await gw.token(), ssl: { ca: cert.cert } })
  await client.connect()
  t.teardown(() => client.end())
  t.equal((await client.query('select 7 as n')).rows[0].n, 7)
  const plain = await execFile('psql', [`host=127.0.0.1 port=${gw.port} user=agent-1 dbname=app sslmode=disable`, '-XAtc', 'select 1'], { env }).catch(e => e)
  t.match(plain.stderr, /requires TLS/)
})

for (const auth of ['md5', 'password'] as const) {
  t.test(`upstream over TLS with ${auth} authentication`, async t => {
    const cert = testCertificate()
    const gw = await startGateway({ postgres: { tls: true, auth }, upstreamTls: { enabled: true, ca: cert.certFile, servername: 'localhost' } })
    t.teardown(() => gw.stop())
    const c = new pg.Client({ connectionString: await gw.url() })
    await c.connect()
    t.teardown(() => c.end())
    const r = await c.query('select ssl from pg_stat_ssl where pid = pg_backend_pid()')
    t.equal(r.rows[0].ssl, true, 'the upstream connection is encrypted')
  })
}

t.test('an upstream certificate that does not verify is refused', async t => {
  const gw = await startGateway({ postgres: { tls: true }, upstreamTls: { enabled: true } })
  t.teardown(() => gw.stop())
  const c = new pg.Client({ connectionString: await gw.url() })
  c.on('error', () => {})
  const e = await c.connect().catch(e => e)
  t.equal(e.code, '08006')
  t.notMatch(e.message, gw.pg.password)
})
