// The MCP server with `workers: 2` (the real CLI, node:cluster, the memory control store in the
// primary): an `options.stateless: true` target serves the SDK's own Client when every request
// arrives on a connection of its own, so node:cluster's round-robin hands consecutive requests to
// different workers — tools, a query on real Postgres 15 and a defer round trip (the approval made on
// one worker, check_approval and the re-call served wherever they land). The same client against a
// stateful MCP target on the same gateway fails: that is what proves the requests did spread. And a
// wait-mode call held for approval on a stateless target: its progress notifications come on that
// POST's own SSE stream while it is held, and the approval (made through the admin API) lets it run.
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import pg from 'pg'
import { Agent as Dispatcher, fetch as undiciFetch } from 'undici'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { startPostgres } from '@portcullis/fixtures/postgres'
import { testEnv, waitFor } from './helpers.ts'

const BIN = new URL('../bin/portcullis.mjs', import.meta.url).pathname

const env = await testEnv()
t.teardown(env.cleanup)
const upstream = await startPostgres()
t.teardown(() => upstream.stop())
const direct = new pg.Client({ host: upstream.host, port: upstream.port, user: upstream.user, password: upstream.password, database: upstream.database })
await direct.connect()
t.teardown(() => direct.end())
await direct.query(`CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL); INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 20) g`)

const up = `{ host: ${upstream.host}, port: ${upstream.port}, database: ${upstream.database}, user: ${upstream.user}, password: { secret: pg } }`
const file = join(env.dir, 'portcullis.yaml')
await writeFile(
  file,
  env.yaml({
    targets: `
  - { name: db, protocol: postgres, listen: 127.0.0.1:0, upstream: ${up}, options: { approvalMode: defer } }
  - { name: mcp, protocol: mcp, listen: 127.0.0.1:0, targets: [db], options: { stateless: true } }
  - { name: dbw, protocol: postgres, listen: 127.0.0.1:0, upstream: ${up} }
  - { name: mcp-wait, protocol: mcp, listen: 127.0.0.1:0, targets: [dbw], options: { stateless: true } }
  - { name: mcp-stateful, protocol: mcp, listen: 127.0.0.1:0, targets: [db] }`,
    rules: `
  - { id: read, when: { groups: [agents], class: [session, read] }, action: allow }
  - { id: delete, when: { groups: [agents], class: [delete] }, action: approve, approvers: [dba], timeout: 2m }`,
  }) + `\nsecrets:\n  pg: { env: MCPW_PG_PASSWORD }\nworkers: 2\n`,
)
let log = ''
const child: ChildProcess = spawn(process.execPath, [BIN, 'start', '--config', file, '--shutdown-deadline', '3000'], {
  stdio: ['ignore', 'ignore', 'pipe'],
  env: { ...process.env, NODE_OPTIONS: '', MCPW_PG_PASSWORD: upstream.password },
})
child.stderr!.setEncoding('utf8').on('data', (d: string) => (log += d))
const exited = once(child, 'exit')
t.teardown(async () => {
  if (child.exitCode === null && child.signalCode === null) {
    child.kill('SIGTERM')
    await exited
  }
})
await waitFor(() => /"msg":"workers ready"/.test(log) || child.exitCode !== null, 'both workers to start', 180_000)
if (child.exitCode !== null) throw new Error(`gateway exited: ${log}`)
const lines = log.split('\n').filter(l => l.startsWith('{')).map(l => JSON.parse(l))
const listen = (name: string) => Number(String(lines.find(l => l.msg === 'target ready' && l.target === name)!.listen).split(':').pop())
const admin = lines.find(l => l.msg === 'admin API ready')!.url as string

/** every request on a fresh connection: node:cluster deals connections to the workers in turn */
const dispatchers: Dispatcher[] = []
t.teardown(() => Promise.all(dispatchers.map(d => d.destroy())))
const freshFetch = ((input: any, init?: any) => {
  const dispatcher = new Dispatcher({ pipelining: 0 })
  dispatchers.push(dispatcher)
  return undiciFetch(input, { ...init, dispatcher })
}) as unknown as typeof fetch

async function client(port: number, token: string): Promise<Client> {
  const c = new Client({ name: 'workers-test', version: '1.0.0' })
  await c.connect(new StreamableHTTPClientTransport(new URL(`http://127.0.0.1:${port}/mcp`), { fetch: freshFetch, requestInit: { headers: { authorization: `Bearer ${token}` } } }))
  return c
}

const ann = await env.token('ann', ['agents'])
const dba = await env.token('dora', ['dba'])

t.test('stateless: every request served by whichever worker it lands on', async t => {
  const c = await client(listen('mcp'), ann)
  t.teardown(() => c.close())
  t.same((await c.listTools()).tools.map(x => x.name).sort(), ['check_approval', 'db_describe_table', 'db_list_tables', 'db_query'])
  for (let i = 1; i <= 4; i++) {
    const r = (await c.callTool({ name: 'db_query', arguments: { sql: 'SELECT name FROM items WHERE id = $1', params: [i] } })) as any
    t.notOk(r.isError, JSON.stringify(r.content))
    t.same(r.structuredContent.rows, [{ name: `item ${i}` }])
  }
  // defer: the request is in the primary's control store, seen from both workers
  const args = { sql: 'DELETE FROM items WHERE id = $1', params: [7] }
  const first = (await c.callTool({ name: 'db_query', arguments: args })) as any
  t.equal(first.isError, true)
  t.equal(first.structuredContent.code, 'PA001')
  const id = first.structuredContent.approvalId as string
  t.equal(((await c.callTool({ name: 'check_approval', arguments: { id } })) as any).structuredContent.status, 'pending')
  t.equal((await direct.query('SELECT 1 FROM items WHERE id = 7')).rowCount, 1, 'nothing ran while pending')
  const res = await fetch(`${admin}/api/approvals/${id}/approve`, { method: 'POST', headers: { authorization: `Bearer ${dba}` } })
  t.equal(res.status, 200)
  for (let i = 0; i < 2; i++) t.equal(((await c.callTool({ name: 'check_approval', arguments: { id } })) as any).structuredContent.status, 'approved', 'either worker reads the decision')
  const again = (await c.callTool({ name: 'db_query', arguments: args })) as any
  t.notOk(again.isError, JSON.stringify(again.content))
  t.equal(again.structuredContent.rowCount, 1)
  t.equal((await direct.query('SELECT 1 FROM items WHERE id = 7')).rowCount, 0, 'ran once approved')
  const third = (await c.callTool({ name: 'db_query', arguments: args })) as any
  t.equal(third.structuredContent.code, 'PA001', 'released once: the same call asks again')
})

t.test('the control: a stateful MCP target with the same client loses its session on the other worker', async t => {
  // initialize lands on one worker, the next request on the other, which has no such session
  const err = await client(listen('mcp-stateful'), ann).then(
    async c => {
      await c.listTools()
      await c.listTools()
      await c.close()
      return undefined
    },
    (e: Error) => e,
  ).catch((e: Error) => e)
  t.ok(err, 'a stateful session does not survive requests spread over workers')
  t.match(String(err), /404|Session not found/)
})

t.test('stateless, wait mode: a held DELETE sends progress on its own POST, and runs once approved', async t => {
  const c = await client(listen('mcp-wait'), ann)
  t.teardown(() => c.close())
  const progress: { progress: number; message?: string }[] = []
  const call = c.callTool({ name: 'dbw_query', arguments: { sql: 'DELETE FROM items WHERE id = $1', params: [11] } }, undefined, {
    onprogress: p => progress.push(p),
    timeout: 120_000,
  })
  let held: any
  await waitFor(async () => {
    const res = await fetch(`${admin}/api/approvals`, { headers: { authorization: `Bearer ${dba}` } })
    held = ((await res.json()) as any).approvals.find((a: any) => a.target === 'dbw')
    return held !== undefined
  }, 'the pending approval')
  t.equal(held.subject, 'ann')
  await waitFor(() => progress.some(p => p.message?.includes(held.id)), 'a progress notification naming the request')
  const before = progress.length
  await waitFor(() => progress.length > before, 'progress goes on while held')
  t.equal((await direct.query('SELECT 1 FROM items WHERE id = 11')).rowCount, 1, 'not run while held')
  const res = await fetch(`${admin}/api/approvals/${held.id}/approve`, { method: 'POST', headers: { authorization: `Bearer ${dba}` } })
  t.equal(res.status, 200)
  const r = (await call) as any
  t.notOk(r.isError, JSON.stringify(r.content))
  t.equal(r.structuredContent.command, 'DELETE')
  t.equal(r.structuredContent.rowCount, 1)
  t.equal((await direct.query('SELECT 1 FROM items WHERE id = 11')).rowCount, 0, 'ran once approved')
  t.ok(progress.every((p, i) => i === 0 || p.progress > progress[i - 1]!.progress), 'progress only increases')
})
