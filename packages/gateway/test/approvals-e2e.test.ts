// Approvals end to end through the real gateway, real Postgres 15 and Redis 7, the HTTP fixture and
// real clients (pg's extended protocol, the psql and redis-cli binaries, fetch): what the approver
// sees, what an approval releases (and what it does not), defer mode, minApprovals, reload.
import t from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { join } from 'node:path'
import { readFile } from 'node:fs/promises'
import { PassThrough } from 'node:stream'
import pg from 'pg'
import { parseConfig } from '@portcullis/core'
import { startPostgres } from '@portcullis/fixtures/postgres'
import { startRedis } from '@portcullis/fixtures/redis'
import { startHttpUpstream } from '@portcullis/fixtures/http-upstream'
import { startGateway, type Gateway } from '../src/index.ts'
import { silentLogger } from '../src/log.ts'
import { portcullis, recordingsIn, testEnv, waitFor, type TestEnv } from './helpers.ts'

const PG_ENV = 'PORTCULLIS_APPROVALS_TEST_PG'
const OPENAI_ENV = 'PORTCULLIS_APPROVALS_TEST_OPENAI'

const RULES = `
  - { id: read, when: { groups: [agents], class: [session, read] }, action: allow }
  - { id: deletes, when: { groups: [agents], class: [write, delete] }, action: approve, approvers: [dba], timeout: 2m,
      reason: writes by agents need a DBA }`

interface Setup {
  env: TestEnv
  gw: Gateway
  direct: pg.Client
  redisPort: number
  http: Awaited<ReturnType<typeof startHttpUpstream>>
  yaml: (rules: string) => string
  agent: string
  dba1: string
  dba2: string
  audit: () => string
}

async function setup(t: { teardown(fn: () => unknown): void }, rules = RULES): Promise<Setup> {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const upstream = await startPostgres()
  t.teardown(() => upstream.stop())
  const redis = await startRedis({})
  t.teardown(() => redis.stop())
  const http = await startHttpUpstream()
  t.teardown(() => http.stop())
  process.env[PG_ENV] = upstream.password
  process.env[OPENAI_ENV] = 'sk-upstream-approvals-test'
  const direct = new pg.Client({ host: upstream.host, port: upstream.port, user: upstream.user, database: upstream.database, password: upstream.password })
  await direct.connect()
  t.teardown(() => direct.end())
  await direct.query(`CREATE TABLE documents (id int PRIMARY KEY, body text);
    INSERT INTO documents SELECT g, 'doc ' || g FROM generate_series(1, 40) g;
    CREATE TABLE customers (id int PRIMARY KEY, name text, email text);
    INSERT INTO customers VALUES (1, 'Ann', 'ann@example.com')`)
  const up = `{ host: ${upstream.host}, port: ${upstream.port}, database: ${upstream.database}, user: ${upstream.user}, password: { secret: pg } }`
  const targets = `
  - { name: db, protocol: postgres, listen: 127.0.0.1:0, upstream: ${up} }
  - { name: db-defer, protocol: postgres, listen: 127.0.0.1:0, upstream: ${up}, options: { approvalMode: defer } }
  - { name: cache, protocol: redis, listen: 127.0.0.1:0, upstream: { host: 127.0.0.1, port: ${redis.port} }, options: { approvalMode: defer } }
  - { name: llm, protocol: http, listen: 127.0.0.1:0,
      upstream: { url: ${JSON.stringify(http.url)}, auth: { header: authorization, value: "Bearer {secret}", secret: { secret: openai } } },
      options: { profile: openai, approvalMode: defer } }`
  const yaml = (r: string) =>
    env.yaml({ targets, rules: r }) +
    `\nsecrets:\n  pg: { env: ${PG_ENV} }\n  openai: { env: ${OPENAI_ENV} }\nmasking:\n  - { id: pii, when: { targets: [db, db-defer] }, columns: ["customers.email"], method: redact }\n`
  const audit = new PassThrough()
  const lines: string[] = []
  audit.setEncoding('utf8').on('data', (d: string) => lines.push(d))
  const gw = await startGateway(parseConfig(yaml(rules), join(env.dir, 'p.yaml')), { log: silentLogger, auditStream: audit })
  t.teardown(() => gw.close(100))
  return {
    env,
    gw,
    direct,
    redisPort: redis.port,
    http,
    yaml,
    agent: await env.token('ann', ['agents']),
    dba1: await env.token('dora', ['dba']),
    dba2: await env.token('dave', ['dba']),
    audit: () => lines.join(''),
  }
}

async function api(s: Setup, method: string, path: string, token: string, body?: unknown): Promise<{ status: number; body: any }> {
  const res = await fetch(s.gw.admin!.url + path, {
    method,
    headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  })
  return { status: res.status, body: await res.json() }
}

async function pending(s: Setup, n = 1): Promise<any[]> {
  let list: any[] = []
  await waitFor(async () => {
    list = (await api(s, 'GET', '/api/approvals', s.dba1)).body.approvals
    return list.length >= n
  }, `${n} pending approval(s)`)
  return list
}

function client(s: Setup, target: string): pg.Client {
  return new pg.Client({ host: '127.0.0.1', port: s.gw.targets[target]!.port, user: 'ann', database: 'app', password: s.agent })
}

async function run(cmd: string, args: string[], env: Record<string, string> = {}): Promise<{ code: number; stdout: string; stderr: string }> {
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const [code] = (await once(child, 'close')) as [number]
  return { code, stdout, stderr }
}

const exists = async (s: Setup, id: number) => (await s.direct.query('SELECT 1 FROM documents WHERE id = $1', [id])).rowCount === 1

t.test('the approver sees the statement as sent with its parameters (masked ones masked), who, where, why and what came before', async t => {
  const s = await setup(t)
  const c = client(s, 'db')
  await c.connect()
  t.teardown(() => c.end())
  await c.query('SELECT count(*) FROM documents')
  const held = c.query('DELETE FROM documents WHERE id = $1', [20])
  const [a] = await pending(s)
  t.equal(a.text, 'DELETE FROM documents WHERE id = $1', 'the Parse text as sent')
  t.same(a.parameters, ['20'], 'and the Bind value as a SQL literal')
  t.equal(a.statement, 'DELETE FROM documents WHERE id = $1')
  t.equal(a.subject, 'ann')
  t.same(a.groups, ['agents'])
  t.equal(a.target, 'db')
  t.equal(a.rule, 'deletes')
  t.equal(a.ruleReason, 'writes by agents need a DBA')
  t.match(a.statementHash, /^[0-9a-f]{64}$/)
  t.match(a.policyVersion, /^[0-9a-f]{16}$/)
  t.equal(a.minApprovals, 1)
  t.match(a.estimate, { source: 'explain', tables: ['public.documents'], estimatedRows: Number }, 'the blast radius, estimated before anyone decides')
  t.ok(Date.parse(a.expires) > Date.now(), 'the expiry')
  t.match(a.recent, [{ statement: /SELECT count\(\*\) FROM documents/, action: 'allow' }], 'the session before it')
  const one = await api(s, 'GET', `/api/approvals/${a.id}`, s.dba1)
  t.equal(one.body.approval.text, a.text, 'GET /api/approvals/:id says the same')
  const list = await portcullis(['approvals', 'list', '--admin', s.gw.admin!.url, '--token', s.dba1])
  t.match(list.stdout, /DELETE FROM documents WHERE id = \$1\n\s+\$1 = 20\n/, 'portcullis approvals list shows the parameters')
  t.match(list.stdout, /rule deletes: writes by agents need a DBA/)
  t.equal((await api(s, 'POST', `/api/approvals/${a.id}/approve`, s.dba1)).status, 200)
  t.equal((await held).rowCount, 1, 'the approved statement ran')
  t.notOk(await exists(s, 20))

  // a value bound to a masked column is masked; the others are not. A literal in the text too.
  const masked = c.query('UPDATE customers SET email = $1, name = $2 WHERE id = $3', ['secret@example.org', "O'Brien", 1]).catch(e => e)
  const [b] = await pending(s)
  t.same(b.parameters, [b.parameters[0], "'O''Brien'", '1'])
  t.notMatch(JSON.stringify(b), /secret@example\.org/, 'the masked value appears nowhere in the request')
  const literal = client(s, 'db')
  await literal.connect()
  t.teardown(() => literal.end())
  const heldLiteral = literal.query(`UPDATE customers SET email = 'other@example.org' WHERE id = 1`).catch(e => e)
  const both = await pending(s, 2)
  const lit = both.find(x => x.id !== b.id)!
  t.notMatch(lit.text, /other@example\.org/, 'a literal assigned to a masked column is masked in the text')
  t.match(lit.text, /WHERE id = 1/)
  t.same(lit.parameters, [])
  for (const x of [b, lit]) await api(s, 'POST', `/api/approvals/${x.id}/deny`, s.dba1, { reason: 'no' })
  t.match((await masked).message, /denied by dora: no/)
  t.match((await heldLiteral).message, /denied by dora: no/)
})

t.test('approving one parameter set releases that statement only (extended protocol and simple query, defer mode)', async t => {
  const s = await setup(t)
  const c = client(s, 'db-defer')
  await c.connect()
  t.teardown(() => c.end())
  const first = await c.query('DELETE FROM documents WHERE id = $1', [20]).catch(e => e)
  t.equal(first.code, 'PA001', 'defer mode answers at once with the documented SQLSTATE')
  const id = /request (apr_\w+)/.exec(first.message)![1]!
  t.match(first.detail, `portcullis approvals wait ${id}`, 'and says how to wait')
  t.equal((await api(s, 'POST', `/api/approvals/${id}/approve`, s.dba1)).body.approval.status, 'approved')

  const other = await c.query('DELETE FROM documents WHERE id = $1', [21]).catch(e => e)
  t.equal(other.code, 'PA001', 'the same SQL with id = 21 is not released by the approval for 20')
  t.notMatch(other.message, id, 'it is a request of its own')
  t.ok(await exists(s, 21), 'row 21 untouched')
  const again = await c.query('DELETE FROM documents WHERE id = $1', [20])
  t.equal(again.rowCount, 1, 'the identical statement runs')
  t.notOk(await exists(s, 20))
  const twice = await c.query('DELETE FROM documents WHERE id = $1', [20]).catch(e => e)
  t.equal(twice.code, 'PA001', 'once: sent again it asks again')
  const req = (await api(s, 'GET', `/api/approvals/${id}`, s.agent)).body.approval
  t.equal(req.mode, 'defer')
  t.ok(req.released, 'the requester sees it released')

  // the simple-query variant, from the psql binary; `portcullis approvals wait` blocks on it
  const psql = (sql: string) =>
    run('psql', ['-h', '127.0.0.1', '-p', String(s.gw.targets['db-defer']!.port), '-U', 'ann', '-d', 'app', '-v', 'VERBOSITY=verbose', '-X', '-c', sql], { PGPASSWORD: s.agent })
  const p1 = await psql('DELETE FROM documents WHERE id = 30')
  t.not(p1.code, 0, 'psql fails the statement')
  t.match(p1.stderr, /ERROR:\s+PA001: approval pending: request (apr_\w+)/)
  const pid = /request (apr_\w+)/.exec(p1.stderr)![1]!
  const p1again = await psql('DELETE FROM documents WHERE id = 30')
  t.match(p1again.stderr, `request ${pid}`, 'sent again while pending: the same request, not a second one')
  const waiting = portcullis(['approvals', 'wait', pid, '--admin', s.gw.admin!.url, '--token', s.agent, '--interval', '0.1'])
  await api(s, 'POST', `/api/approvals/${pid}/approve`, s.dba1)
  const w = await waiting
  t.equal(w.code, 0, 'approvals wait exits 0 once approved')
  t.match(w.stdout, `${pid}: approved`)
  const p31 = await psql('DELETE FROM documents WHERE id = 31')
  t.match(p31.stderr, /PA001/, 'id = 31 is not released by the approval for id = 30')
  t.ok(await exists(s, 31))
  const p30 = await psql('DELETE FROM documents WHERE id = 30')
  t.equal(p30.code, 0, p30.stderr)
  t.match(p30.stdout, /DELETE 1/)
  t.notOk(await exists(s, 30))

  const denied = await psql('DELETE FROM documents WHERE id = 32')
  const did = /request (apr_\w+)/.exec(denied.stderr)![1]!
  await api(s, 'POST', `/api/approvals/${did}/deny`, s.dba1, { reason: 'not that one' })
  const dw = await portcullis(['approvals', 'wait', did, '--admin', s.gw.admin!.url, '--token', s.agent])
  t.equal(dw.code, 1, 'approvals wait exits 1 when denied')
  t.match(dw.stdout, /denied \(not that one\)/)
})

t.test('defer mode from redis-cli and fetch: -PENDING <id> and 202, then the identical command runs once', async t => {
  const s = await setup(t)
  const direct = await run('redis-cli', ['-p', String(s.redisPort), 'MSET', 'k1', 'a', 'k2', 'b'])
  t.equal(direct.code, 0)
  const cli = (...args: string[]) => run('redis-cli', ['-p', String(s.gw.targets.cache!.port), '--no-auth-warning', '-a', s.agent, ...args])
  const r1 = await cli('DEL', 'k1')
  t.match(r1.stdout, /^PENDING (apr_\w+) approval pending \(rule deletes\)/m)
  const id = /PENDING (apr_\w+)/.exec(r1.stdout)![1]!
  await api(s, 'POST', `/api/approvals/${id}/approve`, s.dba1)
  t.match((await cli('DEL', 'k2')).stdout, /^PENDING apr_/m, 'another key is another request')
  t.equal((await cli('DEL', 'k1')).stdout.trim(), '1', 'the identical command ran')
  t.match((await cli('DEL', 'k1')).stdout, /^PENDING apr_/m, 'once')
  t.equal((await run('redis-cli', ['-p', String(s.redisPort), 'EXISTS', 'k2'])).stdout.trim(), '1', 'k2 untouched')

  const url = `http://127.0.0.1:${s.gw.targets.llm!.port}`
  const del = (file: string) => fetch(`${url}/v1/files/${file}`, { method: 'DELETE', headers: { authorization: `Bearer ${s.agent}` } })
  const h1 = await del('file-1')
  t.equal(h1.status, 202)
  const body = (await h1.json()) as any
  t.equal(body.approval.status, 'pending')
  t.equal(body.approval.poll, `/api/approvals/${body.approval.id}`)
  const seen = (await api(s, 'GET', body.approval.poll, s.agent)).body.approval
  t.equal(seen.text, 'DELETE /v1/files/file-1', 'the requester can poll their own request')
  await api(s, 'POST', `/api/approvals/${body.approval.id}/approve`, s.dba1)
  t.equal((await del('file-2')).status, 202, 'another path is another request')
  const before = s.http.requests.length
  t.equal((await del('file-1')).status, 200, 'the identical request went upstream')
  t.equal(s.http.requests.length, before + 1)
  t.equal((await del('file-1')).status, 202, 'once')
})

t.test('minApprovals 2: two distinct approvers, each counted once, never the requester; who and why is recorded', async t => {
  const rules = `
  - { id: read, when: { groups: [agents], class: [session, read] }, action: allow }
  - { id: deletes, when: { groups: [agents], class: [delete] }, action: approve, approvers: [dba], minApprovals: 2, timeout: 2m }`
  const s = await setup(t, rules)
  const selfish = await s.env.token('ann', ['agents', 'dba'])
  const c = client(s, 'db')
  await c.connect()
  t.teardown(() => c.end())
  const held = c.query('DELETE FROM documents WHERE id = $1', [5])
  const [a] = await pending(s)
  t.equal(a.minApprovals, 2)
  const one = await api(s, 'POST', `/api/approvals/${a.id}/approve`, s.dba1, { reason: 'checked the id' })
  t.equal(one.status, 200)
  t.equal(one.body.approval.status, 'pending', 'one approval of two')
  t.equal(one.body.approval.approvals.length, 1)
  const again = await api(s, 'POST', `/api/approvals/${a.id}/approve`, s.dba1)
  t.equal(again.status, 409, 'the same approver twice is not two')
  t.equal(again.body.error.code, 'already_counted')
  t.equal((await api(s, 'POST', `/api/approvals/${a.id}/approve`, selfish)).status, 403, 'the requester never approves their own')
  t.ok(await exists(s, 5), 'nothing ran yet')
  const two = await api(s, 'POST', `/api/approvals/${a.id}/approve`, s.dba2)
  t.equal(two.body.approval.status, 'approved')
  t.same(two.body.approval.approvals.map((v: any) => v.by), ['dora', 'dave'])
  t.equal((await held).rowCount, 1)
  t.notOk(await exists(s, 5))
  await c.end()
  await waitFor(() => s.gw.core.sessions().length === 0, 'the session to be sealed')
  const replay = await portcullis(['replay', (await recordingsIn(join(s.env.dir, 'recordings')))[0]!])
  t.match(replay.stdout, /dora/, 'the recording names the approvers')
  t.match(replay.stdout, /dave/)
  const line = s.audit().split('\n').filter(Boolean).map(l => JSON.parse(l)).find(l => l.approvalId === a.id && Array.isArray(l.approvals))
  t.match(line, { outcome: 'approved', approvals: [{ by: 'dora', reason: 'checked the id' }, { by: 'dave' }] }, 'and so does the audit line')
})

t.test('a reload that changes the decision withdraws a pending request with the reason; one that does not leaves it', async t => {
  const s = await setup(t)
  const c = client(s, 'db')
  await c.connect()
  t.teardown(() => c.end())
  const held = c.query('DELETE FROM documents WHERE id = $1', [7])
  held.catch(() => {})
  const [a] = await pending(s)
  // an unrelated rule added: the request stands
  await s.gw.reload(parseConfig(s.yaml(RULES + `\n  - { id: unrelated, when: { groups: [nobody] }, action: block }`), join(s.env.dir, 'p.yaml')))
  t.equal((await api(s, 'GET', `/api/approvals/${a.id}`, s.dba1)).body.approval.status, 'pending')
  // deletes are blocked now: the request goes, and the client hears why
  await s.gw.reload(parseConfig(s.yaml(RULES.replace('action: approve, approvers: [dba], timeout: 2m,', 'action: block,')), join(s.env.dir, 'p.yaml')))
  const err = await held.catch(e => e)
  t.match(err.message, /policy reloaded: the statement now blocked by rule deletes/)
  const after = (await api(s, 'GET', `/api/approvals/${a.id}`, s.dba1)).body.approval
  t.equal(after.status, 'withdrawn')
  t.match(after.reason, /policy reloaded/)
  t.ok(await exists(s, 7))
})

/** the README's worked example for `lang`, pointed at this test's gateway */
async function readmeExample(lang: 'sh' | 'python', s: Setup): Promise<string> {
  const readme = await readFile(new URL('../../../README.md', import.meta.url), 'utf8')
  const section = readme.slice(readme.indexOf('**Defer mode: the contract for agents.**'))
  const code = new RegExp('```' + lang + '\\n([\\s\\S]*?)```').exec(section)![1]!
  const port = String(s.gw.targets['db-defer']!.port)
  return code
    .replaceAll('http://127.0.0.1:9090', s.gw.admin!.url)
    .replaceAll('15432', port)
    .replaceAll('pnpm exec portcullis', `${process.execPath} ${new URL('../bin/portcullis.mjs', import.meta.url).pathname}`)
}

t.test("the README's defer-mode examples work as written: psql + approvals wait, and the psycopg2 agent", async t => {
  const s = await setup(t)
  const approveWhenAsked = async (statement: RegExp) => {
    const [a] = await pending(s)
    t.match(a.text, statement)
    t.equal((await api(s, 'POST', `/api/approvals/${a.id}/approve`, s.dba1)).status, 200)
  }
  const sh = readmeExample('sh', s)
  const shell = run('sh', ['-c', await sh], { AGENT_TOKEN: s.agent })
  await approveWhenAsked(/DELETE FROM documents WHERE id = 20/)
  const shOut = await shell
  t.equal(shOut.code, 0, shOut.stderr)
  t.match(shOut.stdout, /DELETE 1/)
  t.notOk(await exists(s, 20), 'the psql example ran its DELETE once approved')

  // the Python agent deletes id 20 too: put the row back first
  await s.direct.query(`INSERT INTO documents VALUES (20, 'again')`)
  const py = run('/usr/bin/python3', ['-c', (await readmeExample('python', s)) + '\nprint("deleted")\n'], { AGENT_TOKEN: s.agent })
  await approveWhenAsked(/DELETE FROM documents WHERE id = 20/)
  const pyOut = await py
  t.equal(pyOut.code, 0, pyOut.stderr)
  t.match(pyOut.stdout, /deleted/)
  t.notOk(await exists(s, 20), 'the psycopg2 agent ran its DELETE once approved')
})
