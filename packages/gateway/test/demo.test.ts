import t from 'tap'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { startDemo } from '../src/index.ts'

const run = promisify(execFile)

// One demo for the file: PGlite takes seconds to boot, and every test here is a user of the same demo.
const dir = await mkdtemp(join(tmpdir(), 'portcullis-demo-test-'))
const demo = await startDemo({ dir: join(dir, 'run'), issuerDir: join(dir, 'issuer'), ephemeral: true })
t.teardown(async () => {
  await demo.close()
  await rm(dir, { recursive: true, force: true })
})

t.test('the embedded demo: PGlite behind the gateway, masked PII, approvals, paste-ready lines', async (t) => {
  const pgAddr = demo.gateway.targets['demo-postgres']!

  t.match(demo.instructions, `PGPASSWORD=${demo.tokens.agent} psql "host=127.0.0.1 port=${pgAddr.port} dbname=postgres user=agent`)
  t.match(demo.instructions, demo.gateway.admin!.url)
  t.match(demo.instructions, /portcullis approvals list/)

  const agent = new pg.Client({ host: pgAddr.host, port: pgAddr.port, user: 'agent', database: 'postgres', password: demo.tokens.agent })
  await agent.connect()
  t.teardown(() => agent.end().catch(() => {}))
  const rows = await agent.query('SELECT id, name, email FROM customers ORDER BY id LIMIT 2')
  t.equal(rows.rows.length, 2)
  t.equal(rows.rows[0].name, 'Ada Lovelace', 'names pass through')
  t.not(rows.rows[0].email, 'ada@example.com', 'emails are masked for agents')

  const docs = await agent.query("SELECT body FROM documents WHERE body LIKE '%rotate it%' LIMIT 1")
  t.notMatch(docs.rows[0].body, /sk-proj-FAKE/, 'API keys inside free text are masked')

  const knn = await agent.query("SELECT id FROM documents ORDER BY embedding <-> '[1,0,0,0,0,0,0,0]' LIMIT 3")
  t.equal(knn.rows.length, 3, 'pgvector search works through the gateway')

  await t.rejects(agent.query('DROP TABLE documents'), { code: '42501' }, 'schema changes are blocked')

  const auditor = new pg.Client({ host: pgAddr.host, port: pgAddr.port, user: 'auditor', database: 'postgres', password: demo.tokens.auditor })
  await auditor.connect()
  t.teardown(() => auditor.end().catch(() => {}))
  const clear = await auditor.query('SELECT email FROM customers WHERE id = 1')
  t.equal(clear.rows[0].email, 'ada@example.com', 'auditors see the real value')

  // A write waits for an approver, then runs.
  const update = agent.query("UPDATE customers SET phone = '+1-000' WHERE id = 1")
  let pending: Array<{ id: string }> = []
  const headers = { authorization: `Bearer ${demo.tokens.approver}` }
  for (const end = Date.now() + 30_000; Date.now() < end && pending.length === 0; ) {
    const res = await fetch(`${demo.gateway.admin!.url}/api/approvals`, { headers })
    pending = ((await res.json()) as { approvals: Array<{ id: string }> }).approvals
    if (pending.length === 0) await new Promise((r) => setTimeout(r, 50))
  }
  t.equal(pending.length, 1, 'the write is held for approval')
  const ok = await fetch(`${demo.gateway.admin!.url}/api/approvals/${pending[0]!.id}/approve`, { method: 'POST', headers })
  t.equal(ok.status, 200)
  const done = await update
  t.equal(done.rowCount, 1, 'the approved write ran')
})

t.test('the demo Redis target answers redis-cli with masked emails', async (t) => {
  const rd = demo.gateway.targets['demo-redis']
  t.ok(rd, 'redis-server is installed here, so the demo has a Redis target')
  t.match(demo.instructions, `redis-cli -h 127.0.0.1 -p ${rd!.port} --no-auth-warning -a ${demo.tokens.agent}`)
  const cli = (token: string, ...args: string[]) =>
    run('redis-cli', ['-h', rd!.host, '-p', String(rd!.port), '--no-auth-warning', '-a', token, ...args])
  const name = await cli(demo.tokens.agent, 'HGET', 'customer:1', 'name')
  t.equal(name.stdout.trim(), 'Ada Lovelace')
  const email = await cli(demo.tokens.agent, 'HGET', 'customer:1', 'email')
  t.not(email.stdout.trim(), 'ada@example.com', 'the email field is masked')
  t.ok(email.stdout.trim().length > 0)
  const flush = await cli(demo.tokens.agent, 'FLUSHALL')
  t.match(flush.stdout + flush.stderr, /NOPERM|ERR/, 'a flush is refused')
})
