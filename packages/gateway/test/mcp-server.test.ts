// Portcullis as an MCP server, end to end: the SDK's own Client over Streamable HTTP, a gateway with
// an MCP target in front of real Postgres 15 and real Redis 7. Every tool call runs through the
// Postgres / Redis codec as a client of that target's listener with the caller's token, so these
// assert the wire path's own policy, approvals, masking, recording and audit — on the upstream and on
// what the MCP client got.
import t from 'tap'
import { join } from 'node:path'
import { readFile } from 'node:fs/promises'
import { PassThrough } from 'node:stream'
import pg from 'pg'
import { Redis } from 'ioredis'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { parseConfig, verifyRecording } from '@portcullis/core'
import { startPostgres } from '@portcullis/fixtures/postgres'
import { startRedis } from '@portcullis/fixtures/redis'
import { startHttpUpstream } from '@portcullis/fixtures/http-upstream'
import { startGateway, type Gateway } from '../src/index.ts'
import { silentLogger } from '../src/log.ts'
import { portcullis, recordingsIn, testEnv, waitFor } from './helpers.ts'

const PG_ENV = 'PORTCULLIS_MCP_TEST_PG'
const OPENAI_ENV = 'PORTCULLIS_MCP_TEST_OPENAI'

const env = await testEnv()
t.teardown(env.cleanup)
const upstream = await startPostgres()
t.teardown(() => upstream.stop())
const redis = await startRedis({})
t.teardown(() => redis.stop())
process.env[PG_ENV] = upstream.password
// the LLM API is the fixtures' stand-in (no OpenAI here); the gateway and its HTTP codec are real
const llm = await startHttpUpstream()
t.teardown(() => llm.stop())
process.env[OPENAI_ENV] = 'sk-upstream-mcp-test'
const direct = new pg.Client({ host: upstream.host, port: upstream.port, user: upstream.user, database: upstream.database, password: upstream.password })
await direct.connect()
t.teardown(() => direct.end())
await direct.query(`CREATE TABLE documents (id int PRIMARY KEY, body text);
  INSERT INTO documents SELECT g, 'doc ' || g FROM generate_series(1, 40) g;
  CREATE TABLE customers (id int PRIMARY KEY, name text, email text);
  INSERT INTO customers VALUES (1, 'Ann', 'ann@example.com');
  CREATE TABLE secrets (id int, value text)`)
const directRedis = new Redis({ host: '127.0.0.1', port: redis.port, lazyConnect: true })
await directRedis.connect()
t.teardown(() => directRedis.quit())
await directRedis.set('user:1', 'Ann')

const up = `{ host: ${upstream.host}, port: ${upstream.port}, database: ${upstream.database}, user: ${upstream.user}, password: { secret: pg } }`
const targets = `
  - { name: db, protocol: postgres, listen: 127.0.0.1:0, upstream: ${up} }
  - { name: db-defer, protocol: postgres, listen: 127.0.0.1:0, upstream: ${up}, options: { approvalMode: defer } }
  - { name: cache, protocol: redis, listen: 127.0.0.1:0, upstream: { host: 127.0.0.1, port: ${redis.port} }, options: { approvalMode: defer } }
  - { name: llm, protocol: http, listen: 127.0.0.1:0, options: { profile: openai },
      upstream: { url: ${JSON.stringify(llm.url)}, auth: { header: authorization, value: "Bearer {secret}", secret: { secret: openai } } } }
  - { name: mcp, protocol: mcp, listen: 127.0.0.1:0, targets: [db, db-defer, cache, llm] }`
const rules = `
  - { id: no-secrets, when: { resources: [public.secrets, secrets] }, action: block, reason: secrets are not for agents }
  - { id: read, when: { groups: [agents], class: [session, read] }, action: allow }
  - { id: analysts, when: { groups: [analysts], targets: [db], class: [session, read] }, action: allow }
  - { id: writes, when: { groups: [agents], class: [write, delete] }, action: approve, approvers: [dba], timeout: 2m, reason: writes by agents need a DBA }
  - { id: no-ddl, when: { class: [bulk-delete, schema-change, admin] }, action: block, reason: not through agents }`
const yaml =
  env.yaml({ targets, rules }) +
  `\nsecrets:\n  pg: { env: ${PG_ENV} }\n  openai: { env: ${OPENAI_ENV} }\nmasking:\n  - { id: pii, when: { targets: [db, db-defer] }, columns: ["customers.email"], method: redact }\n` +
  `  - { id: llm-pii, when: { targets: [llm] }, detectors: [email], method: redact }\n`
const auditLines: string[] = []
const audit = new PassThrough()
audit.setEncoding('utf8').on('data', (d: string) => auditLines.push(d))
const gw: Gateway = await startGateway(parseConfig(yaml, join(env.dir, 'p.yaml')), { log: silentLogger, auditStream: audit })
let gwClosed = false
t.teardown(() => (gwClosed ? undefined : gw.close(100)))

const mcpUrl = new URL(`http://127.0.0.1:${gw.targets.mcp!.port}/mcp`)
const agent = await env.token('ann', ['agents'])
const analyst = await env.token('bob', ['analysts'])
const dba = await env.token('dora', ['dba'])

// Every client of this process shares fetch's keep-alive pool to the one origin: the principals'
// requests interleave on the same connections, as they do in an agent platform that serves many users.
async function mcpClient(token: string): Promise<Client> {
  const client = new Client({ name: 'portcullis-test', version: '1.0.0' })
  const transport = new StreamableHTTPClientTransport(mcpUrl, { requestInit: { headers: { authorization: `Bearer ${token}` } } })
  await client.connect(transport)
  return client
}

async function api(method: string, path: string, token: string): Promise<{ status: number; body: any }> {
  const res = await fetch(gw.admin!.url + path, { method, headers: { authorization: `Bearer ${token}` } })
  return { status: res.status, body: await res.json() }
}

const text = (r: any): string => (r.content as { type: string; text: string }[]).map((c) => c.text).join('\n')
const tableExists = async (name: string) => (await direct.query('SELECT to_regclass($1) AS t', [name])).rows[0].t !== null

const ann = await mcpClient(agent)
t.teardown(() => ann.close())

t.test('no token, a bad token, an expired token: 401 with the RFC 9728 header; the metadata names the issuer', async (t) => {
  const metaUrl = `http://127.0.0.1:${gw.targets.mcp!.port}/.well-known/oauth-protected-resource/mcp`
  const init = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 'x', version: '1' } } })
  const post = (auth?: string) =>
    fetch(mcpUrl, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...(auth ? { authorization: auth } : {}) }, body: init })
  const none = await post()
  t.equal(none.status, 401)
  t.equal(none.headers.get('www-authenticate'), `Bearer resource_metadata="${metaUrl}"`)
  const bad = await post('Bearer not.a.jwt')
  t.equal(bad.status, 401)
  t.match(bad.headers.get('www-authenticate'), /^Bearer resource_metadata="[^"]+", error="invalid_token"/)
  const expired = await post(`Bearer ${await env.token('ann', ['agents'], -45)}`)
  t.equal(expired.status, 401)
  t.match(expired.headers.get('www-authenticate'), /error="invalid_token"/)
  const meta = (await (await fetch(metaUrl)).json()) as any
  t.equal(meta.resource, mcpUrl.href)
  t.same(meta.authorization_servers, [gw.core.config.identity.issuers[0]!.issuer])
  t.same(meta.bearer_methods_supported, ['header'])
  // the SDK's client gets the same refusal
  const c = new Client({ name: 'x', version: '1' })
  await t.rejects(c.connect(new StreamableHTTPClientTransport(mcpUrl)))
})

t.test('tools/list differs by principal', async (t) => {
  const names = (await ann.listTools()).tools.map((x) => x.name).sort()
  t.same(names.filter((n) => !n.startsWith('llm_')), ['cache_command', 'check_approval', 'db-defer_describe_table', 'db-defer_list_tables', 'db-defer_query', 'db_describe_table', 'db_list_tables', 'db_query'])
  // the openai profile's operations, generated from its routes: reads and what an approval may let
  // through; the blocked classes (admin, schema-change) are not listed
  t.ok(['llm_request', 'llm_embeddings', 'llm_chat_completions', 'llm_models_get', 'llm_files_delete'].every((n) => names.includes(n)), names.join(' '))
  t.notOk(names.includes('llm_models_delete'), 'models.delete is admin: blocked, not listed')
  t.notOk(names.includes('llm_vector_stores_create'), 'schema-change: not listed')
  const bob = await mcpClient(analyst)
  t.teardown(() => bob.close())
  t.same((await bob.listTools()).tools.map((x) => x.name).sort(), ['check_approval', 'db_describe_table', 'db_list_tables', 'db_query'])
  // list_tables leaves out what the rules do not let the caller read
  const tables = (await ann.callTool({ name: 'db_list_tables', arguments: {} })) as any
  t.same(tables.structuredContent.tables.map((x: any) => x.name), ['customers', 'documents'])
  const d = (await ann.callTool({ name: 'db_describe_table', arguments: { table: 'customers' } })) as any
  t.same(d.structuredContent.columns.map((c: any) => c.name), ['id', 'name', 'email'])
  const hidden = (await ann.callTool({ name: 'db_describe_table', arguments: { table: 'secrets' } })) as any
  t.equal(hidden.isError, true)
  t.equal(hidden.structuredContent.code, '42P01')
})

t.test('a masked column comes back masked in structuredContent and in text', async (t) => {
  const r = (await ann.callTool({ name: 'db_query', arguments: { sql: 'SELECT id, name, email FROM customers WHERE id = $1', params: [1] } })) as any
  t.notOk(r.isError)
  t.equal(r.structuredContent.command, 'SELECT')
  t.equal(r.structuredContent.rowCount, 1)
  t.equal(r.structuredContent.rows[0].name, 'Ann')
  t.equal(r.structuredContent.rows[0].id, 1)
  t.not(r.structuredContent.rows[0].email, 'ann@example.com')
  t.notMatch(text(r), /ann@example\.com/)
  t.notMatch(JSON.stringify(r), /ann@example\.com/)
})

t.test('an HTTP target: the request goes with the gateway\'s key, never the token; the reply is masked', async (t) => {
  const r = (await ann.callTool({
    name: 'llm_request',
    arguments: { method: 'POST', path: '/v1/chat/completions', body: { model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'write to eve@example.org' }] } },
  })) as any
  t.notOk(r.isError, text(r))
  t.equal(r.structuredContent.status, 200)
  t.match(r.structuredContent.body.choices[0].message.content, /^echo: write to /)
  // the reply is masked (the request is recorded as sent, as on every target)
  t.notMatch(JSON.stringify(r), /eve@example\.org/)
  const seen = llm.requests.at(-1)!
  t.equal(seen.headers.authorization, 'Bearer sk-upstream-mcp-test')
  t.notOk(llm.requests.some((x) => JSON.stringify(x.headers).includes(agent)))
  // a path that would leave the target is refused by the tool's schema
  const away = (await ann.callTool({ name: 'llm_request', arguments: { method: 'GET', path: '//evil.example/x' } })) as any
  t.equal(away.isError, true)
})

t.test('attacker: another principal cannot use an MCP session id that is not theirs', async (t) => {
  const sid = (ann.transport as StreamableHTTPClientTransport).sessionId!
  t.ok(sid)
  const res = await fetch(mcpUrl, {
    method: 'POST',
    headers: { authorization: `Bearer ${analyst}`, 'mcp-session-id': sid, 'mcp-protocol-version': '2025-06-18', 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id: 9, method: 'tools/call', params: { name: 'db_query', arguments: { sql: 'SELECT email FROM customers' } } }),
  })
  t.equal(res.status, 404)
  t.notMatch(await res.text(), /Ann|rows/)
})

t.test('attacker: a held call the client cancels is withdrawn, and approving it later runs nothing', async (t) => {
  const ac = new AbortController()
  const call = ann.callTool({ name: 'db_query', arguments: { sql: 'DELETE FROM documents WHERE id = $1', params: [11] } }, undefined, { signal: ac.signal, timeout: 120_000 })
  call.catch(() => {})
  let held: any
  await waitFor(async () => {
    held = ((await api('GET', '/api/approvals', dba)).body.approvals as any[]).find((a) => a.parameters?.[0] === '11')
    return held !== undefined
  }, 'the held DELETE')
  ac.abort()
  await t.rejects(call)
  await waitFor(async () => ((await api('GET', '/api/approvals', dba)).body.approvals as any[]).every((a) => a.id !== held.id), 'the request to leave the pending list')
  t.not((await api('POST', `/api/approvals/${held.id}/approve`, dba)).status, 200)
  t.equal((await direct.query('SELECT 1 FROM documents WHERE id = 11')).rowCount, 1)
})

t.test('DROP TABLE is blocked with the codec SQLSTATE; the table is still there', async (t) => {
  const r = (await ann.callTool({ name: 'db_query', arguments: { sql: 'DROP TABLE documents' } })) as any
  t.equal(r.isError, true)
  t.equal(r.structuredContent.code, '42501')
  t.match(text(r), /no-ddl|not through agents/)
  t.notMatch(text(r), new RegExp(`${upstream.port}|${upstream.password}`))
  t.ok(await tableExists('documents'))
})

t.test('a profile operation (openai embeddings) as its own tool: decided, recorded and masked by the HTTP codec', async (t) => {
  const before = llm.requests.length
  const r = (await ann.callTool({ name: 'llm_embeddings', arguments: { body: { model: 'text-embedding-3-small', input: 'mail eve@example.org' } } })) as any
  t.notOk(r.isError, text(r))
  t.equal(r.structuredContent.status, 200)
  t.ok(Array.isArray(r.structuredContent.body.data), 'the embeddings answer')
  const seen = llm.requests.at(-1)!
  t.equal(llm.requests.length, before + 1)
  t.match(seen, { method: 'POST', path: '/v1/embeddings' })
  t.equal(seen.headers.authorization, 'Bearer sk-upstream-mcp-test', "the gateway's key, never the token")
  const tool = (await ann.listTools()).tools.find((x) => x.name === 'llm_models_get')!
  t.same(Object.keys((tool.inputSchema as any).properties), ['model'], 'path parameters from the route')
  const dots = (await ann.callTool({ name: 'llm_models_get', arguments: { model: '..' } })) as any
  t.equal(dots.isError, true, 'a path parameter cannot climb out of its route')
  t.equal(llm.requests.length, before + 1, 'and nothing was sent')
  t.match(auditLines.join(''), /"operation":"embeddings"|embeddings/)
})

t.test('query is one statement per call: a ";" batch is refused, says so, and runs nothing', async (t) => {
  const tool = (await ann.listTools()).tools.find((x) => x.name === 'db_query')!
  t.match(tool.description, /exactly one SQL statement/)
  const r = (await ann.callTool({ name: 'db_query', arguments: { sql: "SELECT 1; DELETE FROM documents WHERE id = 40" } })) as any
  t.equal(r.isError, true)
  t.equal(r.structuredContent.code, '42601')
  t.match(r.structuredContent.hint, /exactly one SQL statement per call/)
  t.match(text(r), /make|send each statement as a call of its own/)
  t.equal((await direct.query('SELECT 1 FROM documents WHERE id = 40')).rowCount, 1, 'nothing of the batch ran')
})

t.test('attacker: SQL in describe_table’s name is a value, never SQL', async (t) => {
  for (const table of ['documents; DROP TABLE documents', 'documents"; DROP TABLE documents; --', "documents'; DROP TABLE documents; --"]) {
    const r = (await ann.callTool({ name: 'db_describe_table', arguments: { table } })) as any
    t.equal(r.isError, true, table)
    t.equal(r.structuredContent.code, '42P01')
  }
  t.ok(await tableExists('documents'))
  t.equal((await direct.query('SELECT count(*)::int AS n FROM documents')).rows[0].n, 40)
})

t.test('attacker: a Redis MULTI is refused, an EVAL is blocked by policy; the data is untouched', async (t) => {
  const get = (await ann.callTool({ name: 'cache_command', arguments: { argv: ['GET', 'user:1'] } })) as any
  t.equal(get.structuredContent.reply, 'Ann')
  const multi = (await ann.callTool({ name: 'cache_command', arguments: { argv: ['multi'] } })) as any
  t.equal(multi.isError, true)
  const evalR = (await ann.callTool({ name: 'cache_command', arguments: { argv: ['EVAL', "return redis.call('FLUSHALL')", '0'] } })) as any
  t.equal(evalR.isError, true)
  t.equal(evalR.structuredContent.code, 'NOPERM')
  // the next call on the pooled connection is not inside a transaction
  const again = (await ann.callTool({ name: 'cache_command', arguments: { argv: ['GET', 'user:1'] } })) as any
  t.equal(again.structuredContent.reply, 'Ann')
  t.equal(await directRedis.get('user:1'), 'Ann')
})

t.test('a held DELETE approved through the admin API completes, with progress notifications', async (t) => {
  const progress: { progress: number; message?: string }[] = []
  const call = ann.callTool({ name: 'db_query', arguments: { sql: 'DELETE FROM documents WHERE id = $1', params: [7] } }, undefined, {
    onprogress: (p) => progress.push(p),
    timeout: 120_000,
  })
  let list: any[] = []
  await waitFor(async () => {
    list = (await api('GET', '/api/approvals', dba)).body.approvals
    return list.length >= 1
  }, 'the pending approval')
  const a = list[0]
  t.equal(a.target, 'db')
  t.equal(a.subject, 'ann')
  await waitFor(() => progress.some((p) => p.message?.includes(a.id)), 'a progress notification naming the request')
  t.ok(await direct.query('SELECT 1 FROM documents WHERE id = 7').then((r) => r.rowCount === 1), 'not run while held')
  t.equal((await api('POST', `/api/approvals/${a.id}/approve`, dba)).status, 200)
  const r = (await call) as any
  t.notOk(r.isError, text(r))
  t.equal(r.structuredContent.command, 'DELETE')
  t.equal(r.structuredContent.rowCount, 1)
  t.equal((await direct.query('SELECT 1 FROM documents WHERE id = 7')).rowCount, 0)
  t.ok(progress.length >= 1)
})

t.test('defer: a tool error names the request; approved, check_approval says so, and the re-call runs once', async (t) => {
  const args = { sql: 'DELETE FROM documents WHERE id = $1', params: [9] }
  const first = (await ann.callTool({ name: 'db-defer_query', arguments: args })) as any
  t.equal(first.isError, true)
  t.equal(first.structuredContent.code, 'PA001')
  const id = first.structuredContent.approvalId as string
  t.match(text(first), id)
  const pendingState = (await ann.callTool({ name: 'check_approval', arguments: { id } })) as any
  t.equal(pendingState.structuredContent.status, 'pending')
  // another principal cannot read it
  const bob = await mcpClient(analyst)
  t.teardown(() => bob.close())
  t.equal(((await bob.callTool({ name: 'check_approval', arguments: { id } })) as any).isError, true)
  t.equal((await direct.query('SELECT 1 FROM documents WHERE id = 9')).rowCount, 1)
  t.equal((await api('POST', `/api/approvals/${id}/approve`, dba)).status, 200)
  const state = (await ann.callTool({ name: 'check_approval', arguments: { id } })) as any
  t.equal(state.structuredContent.status, 'approved')
  t.equal(state.structuredContent.decidedBy, 'dora')
  const again = (await ann.callTool({ name: 'db-defer_query', arguments: args })) as any
  t.notOk(again.isError, text(again))
  t.equal(again.structuredContent.rowCount, 1)
  t.equal((await direct.query('SELECT 1 FROM documents WHERE id = 9')).rowCount, 0)
})

const liveOn = async (subject: string) => (await gw.core.sessions()).filter((x) => x.subject === subject && x.target !== 'mcp').map((x) => x.target).sort()

t.test('defer on Redis: -PENDING becomes a tool error with the id; approved, the identical command runs once', async (t) => {
  const args = { argv: ['SET', 'user:2', 'Bo'] }
  const first = (await ann.callTool({ name: 'cache_command', arguments: args })) as any
  t.equal(first.isError, true)
  t.equal(first.structuredContent.code, 'PENDING')
  const id = first.structuredContent.approvalId as string
  t.equal(await directRedis.get('user:2'), null)
  t.equal((await api('POST', `/api/approvals/${id}/approve`, dba)).status, 200)
  t.equal(((await ann.callTool({ name: 'check_approval', arguments: { id } })) as any).structuredContent.status, 'approved')
  const again = (await ann.callTool({ name: 'cache_command', arguments: args })) as any
  t.notOk(again.isError, text(again))
  t.equal(again.structuredContent.reply, 'OK')
  t.equal(await directRedis.get('user:2'), 'Bo')
  // once: the same command again asks again
  const third = (await ann.callTool({ name: 'cache_command', arguments: { argv: ['SET', 'user:2', 'Bo'] } })) as any
  t.equal(third.structuredContent.code, 'PENDING')
})

t.test('the MCP session\'s connections to the targets close when the client ends the session', async (t) => {
  const carl = await mcpClient(await env.token('carl', ['agents']))
  t.equal(((await carl.callTool({ name: 'db_query', arguments: { sql: 'SELECT 1 AS one' } })) as any).structuredContent.rows[0].one, 1)
  t.equal(((await carl.callTool({ name: 'cache_command', arguments: { argv: ['GET', 'user:1'] } })) as any).structuredContent.reply, 'Ann')
  t.same(await liveOn('carl'), ['cache', 'db'])
  await (carl.transport as StreamableHTTPClientTransport).terminateSession()
  await waitFor(async () => (await liveOn('carl')).length === 0, 'carl\'s target sessions to end')
  await carl.close()
})

t.test('the MCP session ends with its token; so do its connections', async (t) => {
  const erin = await mcpClient(await env.token('erin', ['agents'], 4))
  t.equal(((await erin.callTool({ name: 'db_query', arguments: { sql: 'SELECT 2 AS two' } })) as any).structuredContent.rows[0].two, 2)
  t.same(await liveOn('erin'), ['db'])
  await waitFor(async () => (await liveOn('erin')).length === 0, 'erin\'s target sessions to end', 15_000)
  // the session is gone: the client is told so (404), and nothing runs
  await t.rejects(erin.callTool({ name: 'db_query', arguments: { sql: 'SELECT 3' } }))
  await erin.close()
})

t.test('the recordings verify and the audit lines name the principal', async (t) => {
  await ann.close()
  await gw.close(2000)
  gwClosed = true
  const files = await recordingsIn(join(env.dir, 'recordings'))
  t.ok(files.length >= 3)
  // every recording verifies (the core's verifier, which the CLI runs)…
  for (const f of files) t.equal((await verifyRecording(f)).status, 'intact', f)
  const events = auditLines.join('').split('\n').filter(Boolean).map((l) => JSON.parse(l))
  const del = events.find((e) => e.target === 'db' && /^DELETE/.test(e.statement ?? '') && e.decision === 'allow')
  t.ok(del, 'the approved DELETE is audited')
  t.equal(del.principal.sub, 'ann')
  t.ok(del.approvalId)
  // …and `portcullis verify` says so of the Postgres session that ran the DELETE and of ann's MCP connection
  const mcpSession = events.find((e) => e.target === 'mcp' && e.principal?.sub === 'ann')
  t.ok(mcpSession, 'the MCP connection is audited with its principal')
  for (const id of [del.session, mcpSession.session]) {
    const f = files.find((x) => x.endsWith(`${id}.pcr`))
    t.ok(f, `a recording of ${id}`)
    const v = await portcullis(['verify', f!])
    t.equal(v.code, 0, v.stdout + v.stderr)
    t.match(v.stdout, /intact/)
  }
  const drop = events.find((e) => e.target === 'db' && /^DROP/.test(e.statement ?? ''))
  t.equal(drop.decision, 'block')
  t.equal(drop.principal.sub, 'ann')
  // an MCP recording holds the tool call's request, and the masked reply, never the clear value
  const replays = await Promise.all(files.map((f) => readFile(f)))
  t.notOk(replays.some((b) => b.includes('ann@example.com')), 'no recording holds the clear email')
  t.notOk(replays.some((b) => b.includes(agent)), 'no recording holds the token')
})
