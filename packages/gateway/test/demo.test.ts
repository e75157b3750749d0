import t from 'tap'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { startDemo } from '../src/index.ts'
import { findRedisServer } from '../src/demo.ts'

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

/** the printed lines that start with `prefix` (indented, ready to paste) */
const pasted = (prefix: string) => demo.instructions.split('\n').map((l) => l.trim()).filter((l) => l.startsWith(prefix))
const sh = (line: string, cwd?: string) => run('sh', ['-c', line.replace(/\s+#.*$/, '')], { cwd, maxBuffer: 1 << 20 })

t.test('the demo HTTP target: the printed curl and OpenAI SDK lines reach a labelled stand-in, masked and recorded', async (t) => {
  const llm = demo.gateway.targets['demo-llm']
  t.ok(llm, 'the demo has an HTTP target')
  t.ok(demo.llm, 'in front of the local stand-in')
  t.match(demo.instructions, /LOCAL STAND-IN with canned answers, no model behind it/)
  t.match(demo.instructions, `python3 -c 'from openai import OpenAI; c = OpenAI(base_url="http://127.0.0.1:${llm!.port}/v1", api_key="${demo.tokens.agent}")`)
  const [chat, stream, embeddings, del] = pasted('curl ')
  t.ok(chat && stream && embeddings && del, 'curl lines for chat, streaming, embeddings and a delete')

  const plain = await sh(chat!)
  t.match(plain.stdout, /"content":"Support is \[REDACTED:email\]; the staging key is \[REDACTED:api-key\] \(rotate it\)\."/)
  const streamed = await sh(stream!)
  t.match(streamed.stdout, /^data: /m, 'server-sent events')
  t.match(streamed.stdout, /data: \[DONE\]/)
  for (const out of [plain.stdout, streamed.stdout]) {
    t.notMatch(out, /ada@example\.com/, 'no email reaches the agent')
    t.notMatch(out, /sk-proj-DEMO/, 'no API key reaches the agent, not even split across stream deltas')
  }
  const vectors = JSON.parse((await sh(embeddings!)).stdout)
  t.equal(vectors.data[0].embedding.length, 8, 'embeddings pass through')

  // the Node SDK line as printed, run where the workspace has the openai package
  const [node] = pasted('node --input-type=module')
  const sdk = await sh(node!, new URL('../../../protocols/http/', import.meta.url).pathname)
  t.equal(sdk.stdout.trim(), 'Support is [REDACTED:email]; the staging key is [REDACTED:api-key] (rotate it).', 'the OpenAI SDK streams the masked answer')

  t.match(String(demo.llm!.requests.at(-1)!.headers.authorization), /^Bearer sk-demo-upstream-/, 'the stand-in got the gateway key')
  t.notOk(demo.llm!.requests.some((r) => String(r.headers.authorization).includes(demo.tokens.agent)), 'never the agent token')

  const auditor = await fetch(`http://127.0.0.1:${llm!.port}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${demo.tokens.auditor}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }),
  })
  t.match(await auditor.text(), 'ada@example.com', 'auditors see the answer as it came')

  // the delete waits for an approver
  const held = sh(del!)
  const headers = { authorization: `Bearer ${demo.tokens.approver}` }
  let pending: Array<{ id: string; target: string }> = []
  for (const end = Date.now() + 30_000; Date.now() < end && pending.length === 0; ) {
    const res = await fetch(`${demo.gateway.admin!.url}/api/approvals`, { headers })
    pending = ((await res.json()) as { approvals: Array<{ id: string; target: string }> }).approvals.filter((a) => a.target === 'demo-llm')
    if (pending.length === 0) await new Promise((r) => setTimeout(r, 50))
  }
  t.equal(pending.length, 1, 'the delete is held for approval')
  await fetch(`${demo.gateway.admin!.url}/api/approvals/${pending[0]!.id}/approve`, { method: 'POST', headers })
  t.match((await held).stdout, /"object":"file"/, 'and goes through once approved')
})

t.test('redis-server missing: installed from Debian as root, else the demo says what to install', async (t) => {
  const said: string[] = []
  const command = 'redis-server-not-installed-here'
  const asUser = findRedisServer({ command, install: true, isRoot: false, hasAptGet: true, say: (l) => said.push(l) })
  t.notOk(asUser.ok)
  t.match(!asUser.ok && asUser.note, /is not on PATH, so there is no Redis target: install redis-server \(Debian\/Ubuntu: sudo apt-get install redis-server/)
  let ran = 0
  const asRoot = findRedisServer({ command, install: true, isRoot: true, hasAptGet: true, say: (l) => said.push(l), aptInstall: () => void ran++ })
  t.equal(ran, 1, 'as root with apt-get it installs')
  t.match(said[0], "installing Debian's redis-server with apt-get")
  t.notOk(asRoot.ok, 'and says so when the binary is still missing after')
  const failed = findRedisServer({ command, install: true, isRoot: true, hasAptGet: true, say: () => {}, aptInstall: () => { throw new Error('E: Unable to locate package') } })
  t.match(!failed.ok && failed.note, /apt-get could not install redis-server \(E: Unable to locate package\)/)
  t.same(findRedisServer({ install: false, say: () => {} }), { ok: true, installed: false }, 'the installed one is found')
})
