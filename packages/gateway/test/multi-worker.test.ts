// `workers: 2` with the memory control store on one host: the cluster primary holds the store, the
// workers reach it over IPC. Cases (1)–(3) of issue 12's multi-instance list, with the two workers
// in the place of the instances, driven by pg and node:http against the real CLI (one process
// tree: the primary and its workers share the data and admin ports); then a worker killed with
// SIGKILL is restarted while the listener keeps answering, and SIGTERM drains both workers. A
// reload (SIGHUP to the primary, or the file changing) reaches both workers.
//
// Which worker serves a connection is node:cluster's round-robin, not ours to pick: a helper opens
// connections until one lands where the case needs it, learning where from the session registry
// (the session's remote port) and from /healthz (the serving worker's instance id).
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { Agent, request } from 'node:http'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import pg from 'pg'
import { startPostgres, type PostgresServer } from '@portcullis/fixtures/postgres'
import { testEnv, waitFor, type TestEnv } from './helpers.ts'

const BIN = new URL('../bin/portcullis.mjs', import.meta.url).pathname
const DEADLINE_MS = 3000

let env: TestEnv
let upstream: PostgresServer
let child: ChildProcess
let exited: Promise<[number | null, NodeJS.Signals | null]>
let log = ''
let adminUrl: URL
let port: number
let adminToken: string

interface SessionRow {
  id: string
  instance: string
  subject?: string
  remote: string
}

t.before(async () => {
  env = await testEnv()
  upstream = await startPostgres()
  const seed = new pg.Client({ host: upstream.host, port: upstream.port, user: upstream.user, password: upstream.password, database: upstream.database })
  await seed.connect()
  await seed.query(`CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)`)
  await seed.query(`INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 20) g`)
  await seed.end()
  const file = join(env.dir, 'portcullis.yaml')
  await writeFile(
    file,
    env.yaml({
      targets: `
  - { name: db, protocol: postgres, listen: 127.0.0.1:0,
      upstream: { host: ${upstream.host}, port: ${upstream.port}, database: ${upstream.database}, user: ${upstream.user}, password: { secret: pg } } }`,
      rules: `
  - { id: read, when: { groups: [agents], class: [session, read] }, action: allow }
  - { id: write, when: { groups: [agents], class: [write] }, action: approve, approvers: [dba], timeout: 1m }
  - { id: delete, when: { groups: [agents], class: [delete] }, action: approve, approvers: [dba], window: 10m, timeout: 1m }`,
    }) +
      `
secrets:
  pg: { env: MW_UPSTREAM_PASSWORD }
workers: 2
`,
  )
  child = spawn(process.execPath, [BIN, 'start', '--config', file, '--shutdown-deadline', String(DEADLINE_MS)], {
    stdio: ['ignore', 'ignore', 'pipe'],
    env: { ...process.env, NODE_OPTIONS: '', MW_UPSTREAM_PASSWORD: upstream.password },
  })
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (log += d))
  exited = once(child, 'exit') as Promise<[number | null, NodeJS.Signals | null]>
  await waitFor(() => /"msg":"workers ready"/.test(log) || child.exitCode !== null, 'both workers to start', 180_000)
  if (child.exitCode !== null) throw new Error(`gateway exited: ${log}`)
  const line = (msg: string) => JSON.parse(log.split('\n').find((l) => l.includes(`"msg":"${msg}"`))!)
  adminUrl = new URL(line('admin API ready').url as string)
  port = Number(String(line('target ready').listen).split(':').pop())
  adminToken = await env.token('root', ['admins', 'dba'])
})

t.teardown(async () => {
  if (child && child.exitCode === null && child.signalCode === null) {
    child.kill('SIGTERM')
    await exited
  }
  await upstream?.stop()
  await env?.cleanup()
})

/** one admin connection, kept open: every call on it is served by the same worker */
async function adminConnection() {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  const call = (method: string, path: string, body?: unknown) =>
    new Promise<{ status: number; json: any }>((resolve, reject) => {
      const data = body === undefined ? undefined : JSON.stringify(body)
      const req = request(
        { host: adminUrl.hostname, port: adminUrl.port, path, method, agent, headers: { authorization: `Bearer ${adminToken}`, ...(data ? { 'content-type': 'application/json' } : {}) } },
        (res) => {
          let text = ''
          res.setEncoding('utf8').on('data', (d: string) => (text += d))
          res.on('end', () => resolve({ status: res.statusCode!, json: JSON.parse(text) }))
        },
      )
      req.on('error', reject)
      req.end(data)
    })
  const instance = (await call('GET', '/healthz')).json.instance as string
  return { call, instance, close: () => agent.destroy() }
}

/** an admin connection served by a worker other than `not` (or by `want`) */
async function adminOn(where: { not?: string; want?: string }) {
  for (let i = 0; i < 50; i++) {
    const a = await adminConnection()
    if ((where.not === undefined || a.instance !== where.not) && (where.want === undefined || a.instance === where.want)) return a
    a.close()
  }
  throw new Error(`no admin connection landed ${JSON.stringify(where)}`)
}

async function api(method: string, path: string, body?: unknown) {
  const a = await adminConnection()
  try {
    return await a.call(method, path, body)
  } finally {
    a.close()
  }
}

async function sessions(): Promise<SessionRow[]> {
  return (await api('GET', '/api/sessions')).json.sessions as SessionRow[]
}

async function connect(sub: string, groups = ['agents']): Promise<pg.Client> {
  const c = new pg.Client({ host: '127.0.0.1', port, user: sub, database: upstream.database, password: await env.token(sub, groups) })
  c.on('error', () => {})
  await c.connect()
  return c
}

/** the worker (instance id) serving this client, from the session registry */
async function instanceOf(c: pg.Client): Promise<string> {
  const local = (c as unknown as { connection: { stream: { localPort: number } } }).connection.stream.localPort
  let found: SessionRow | undefined
  await waitFor(async () => {
    found = (await sessions()).find((s) => s.remote.endsWith(`:${local}`))
    return found !== undefined
  }, `the session of local port ${local} in the registry`)
  return found!.instance
}

/** a client served by a worker other than `not` (or by `want`) */
async function clientOn(sub: string, where: { not?: string; want?: string }): Promise<{ c: pg.Client; instance: string }> {
  for (let i = 0; i < 20; i++) {
    const c = await connect(sub)
    const instance = await instanceOf(c)
    if ((where.not === undefined || instance !== where.not) && (where.want === undefined || instance === where.want)) return { c, instance }
    await c.end()
  }
  throw new Error(`no client connection landed ${JSON.stringify(where)}`)
}

async function direct<T = Record<string, unknown>>(sql: string): Promise<T[]> {
  const c = new pg.Client({ host: upstream.host, port: upstream.port, user: upstream.user, password: upstream.password, database: upstream.database })
  await c.connect()
  try {
    return (await c.query(sql)).rows as T[]
  } finally {
    await c.end()
  }
}

async function pending(subject: string): Promise<{ id: string }> {
  let found: { id: string } | undefined
  await waitFor(async () => {
    found = ((await api('GET', '/api/approvals')).json.approvals as { id: string; subject: string; status: string }[]).find(
      (a) => a.subject === subject && a.status === 'pending',
    )
    return found !== undefined
  }, `a pending request of ${subject}`)
  return found!
}

const ended = (c: pg.Client) => new Promise<void>((resolve) => c.once('end', () => resolve()))

t.test('(1) a statement held in one worker, approved through the admin API served by the other, runs; one denied fails with its id', async (t) => {
  const agent = await connect('agent-1')
  t.teardown(() => agent.end().catch(() => {}))
  const home = await instanceOf(agent)

  const held = agent.query(`UPDATE items SET name = 'approved' WHERE id = 1`)
  const req = await pending('agent-1')
  const other = await adminOn({ not: home })
  t.teardown(() => other.close())
  t.not(other.instance, home, 'the approver is served by the other worker')
  t.match(await other.call('POST', `/api/approvals/${req.id}/approve`), { status: 200, json: { approval: { id: req.id, status: 'approved', decidedBy: 'root' } } })
  t.equal((await held).rowCount, 1, 'the held statement ran')
  t.same(await direct(`SELECT name FROM items WHERE id = 1`), [{ name: 'approved' }], 'the upstream changed')
  const same = await adminOn({ want: home })
  t.teardown(() => same.close())
  t.match(await same.call('POST', `/api/approvals/${req.id}/approve`), { status: 409, json: { error: { code: 'conflict' } } }, 'decided once, whichever worker is asked')

  const refused = agent.query(`UPDATE items SET name = 'denied' WHERE id = 2`).then(
    () => undefined,
    (err: Error & { code?: string; detail?: string }) => err,
  )
  const req2 = await pending('agent-1')
  t.match(await other.call('POST', `/api/approvals/${req2.id}/deny`, { reason: 'not today' }), { status: 200, json: { approval: { status: 'denied' } } })
  t.match(await refused, { code: '42501', message: new RegExp(`denied by root: not today.*${req2.id}`), detail: `approval request ${req2.id}` })
  t.same(await direct(`SELECT name FROM items WHERE id = 2`), [{ name: 'item 2' }], 'the upstream did not change')
  t.match((await agent.query('SELECT 1 AS ok')).rows, [{ ok: 1 }], 'the session goes on')
})

t.test('(2) an approval window granted for a session in one worker covers the same statement by the same subject in the other', async (t) => {
  const first = await connect('agent-2')
  const home = await instanceOf(first)
  const { c: second } = await clientOn('agent-2', { not: home })
  const stranger = await clientOn('agent-3', { not: home })
  t.teardown(() => Promise.all([first, second, stranger.c].map((x) => x.end().catch(() => {}))))
  const sql = `DELETE FROM items WHERE id = 3`
  const held = first.query(sql)
  const req = await pending('agent-2')
  t.match(await api('POST', `/api/approvals/${req.id}/approve`), { status: 200 })
  t.equal((await held).rowCount, 1)
  const before = ((await api('GET', '/api/approvals')).json.approvals as unknown[]).length
  t.equal((await second.query(sql)).rowCount, 0, 'ran in the other worker at once (the row is already gone)')
  t.equal(((await api('GET', '/api/approvals')).json.approvals as unknown[]).length, before, 'and asked nobody')
  const asked = stranger.c.query(sql).then(() => undefined, (err: Error) => err)
  const req3 = await pending('agent-3')
  await api('POST', `/api/approvals/${req3.id}/deny`)
  t.match(await asked, { code: '42501', message: /denied by root/ }, "another subject is not covered by agent-2's window")
})

t.test('(3) a revocation ends the subject\'s sessions in both workers; the registry lists both; DELETE ends a session of the other worker', async (t) => {
  const a = await connect('agent-r')
  const home = await instanceOf(a)
  const { c: b, instance: away } = await clientOn('agent-r', { not: home })
  const survivor = await connect('agent-s')
  t.teardown(() => Promise.all([a, b, survivor].map((x) => x.end().catch(() => {}))))
  const both = Promise.all([ended(a), ended(b)])
  t.match(await api('POST', '/api/revocations', { subject: 'agent-r' }), { status: 200, json: { revoked: { subject: 'agent-r' } } })
  await both
  t.pass('both workers ended the revoked subject\'s sessions')
  t.match((await survivor.query('SELECT 1 AS ok')).rows, [{ ok: 1 }], "another subject's session is untouched")
  await t.rejects(connect('agent-r'), /revoked/, 'and the subject cannot come back in either worker')
  await t.rejects(connect('agent-r'), /revoked/)

  const l1 = await clientOn('list-1', { want: home })
  const l2 = await clientOn('list-2', { want: away })
  t.teardown(() => Promise.all([l1.c, l2.c].map((x) => x.end().catch(() => {}))))
  for (const want of [home, away]) {
    const admin = await adminOn({ want })
    const listed = (await admin.call('GET', '/api/sessions')).json.sessions as SessionRow[]
    admin.close()
    const bySubject = Object.fromEntries(listed.map((s) => [s.subject, s.instance]))
    t.match(bySubject, { 'list-1': home, 'list-2': away }, `GET /api/sessions served by ${want === home ? 'one' : 'the other'} worker lists both workers' sessions`)
  }
  // fresh connections: whichever worker serves /metrics answers for the host
  for (let i = 0; i < 2; i++) {
    const text = await new Promise<string>((resolve, reject) => {
      request({ host: adminUrl.hostname, port: adminUrl.port, path: '/metrics', agent: false }, (res) => {
        let body = ''
        res.setEncoding('utf8').on('data', (d: string) => (body += d)).on('end', () => resolve(body))
      }).on('error', reject).end()
    })
    t.match(text, /^portcullis_workers 2$/m, '/metrics sums both workers')
    t.ok(Number(/^portcullis_sessions (\d+)$/m.exec(text)?.[1]) >= 3, 'and counts the sessions of both (survivor, list-1, list-2)')
  }
  const target = (await sessions()).find((s) => s.subject === 'list-2')!
  const killer = await adminOn({ not: away })
  t.teardown(() => killer.close())
  const gone = ended(l2.c)
  t.match(await killer.call('DELETE', `/api/sessions/${target.id}`), { status: 200, json: { killed: 1 } }, 'DELETE through one worker')
  await gone
  t.pass("ended the other worker's session")
  t.match((await l1.c.query('SELECT 1 AS ok')).rows, [{ ok: 1 }], 'the session in the asking worker is untouched')
  await waitFor(async () => !(await sessions()).some((s) => s.id === target.id), 'the ended session to leave the registry')
})

t.test('a reload reaches every worker: SIGHUP to the primary reloads both, and a changed rule applies in both', async (t) => {
  const file = join(env.dir, 'portcullis.yaml')
  const original = await readFile(file, 'utf8')
  const a = await clientOn('agent-reload', {})
  const b = await clientOn('agent-reload', { not: a.instance })
  t.teardown(async () => {
    await a.c.end().catch(() => {})
    await b.c.end().catch(() => {})
  })
  t.not(a.instance, b.instance, 'one client in each worker')
  const reloads = () => log.split('\n').filter((l) => l.includes('"msg":"config reloaded"')).length

  // the file unchanged: no watcher fires, so what reloads is the primary's fan-out alone
  const before = reloads()
  child.kill('SIGHUP')
  await waitFor(() => reloads() >= before + 2, 'both workers to reload on SIGHUP')
  t.match(log, /"msg":"SIGHUP: reloading config in every worker"/, 'the primary fanned SIGHUP out')

  const read = (c: pg.Client) =>
    c.query('SELECT name FROM items WHERE id = 3').then(
      () => 'ran',
      (err: { code?: string }) => err.code ?? 'error',
    )
  t.equal(await read(a.c), 'ran')
  const blocking = original.replace('  - { id: read,', '  - { id: no-items, when: { groups: [agents], resources: [items, public.items] }, action: block }\n  - { id: read,')
  t.not(blocking, original, 'the config gains a rule')
  await writeFile(file, blocking)
  child.kill('SIGHUP')
  await waitFor(async () => (await read(a.c)) === '42501' && (await read(b.c)) === '42501', 'the new rule to apply in both workers')
  t.pass('both workers block what the reloaded rules block')

  await writeFile(file, original)
  child.kill('SIGHUP')
  await waitFor(async () => (await read(a.c)) === 'ran' && (await read(b.c)) === 'ran', 'the old rules back in both workers')
  t.pass('and both run it again once the rule is gone')
  t.equal(child.exitCode, null, 'no reload ended the host')
})

t.test('a worker killed with SIGKILL is restarted; the listener keeps answering; what it held is withdrawn', async (t) => {
  const pids = [...log.matchAll(/"worker":(\d),"pid":(\d+),"msg":"worker ready"/g)].map((m) => ({ slot: Number(m[1]), pid: Number(m[2]) }))
  const victim = await connect('agent-k')
  const victimHome = await instanceOf(victim)
  const pid = Number(/-(\d+)-[0-9a-f]+$/.exec(victimHome)![1])
  const slot = pids.find((p) => p.pid === pid)!.slot
  const held = victim.query(`UPDATE items SET name = 'never' WHERE id = 4`).then(() => undefined, (err: Error) => err)
  const req = await pending('agent-k')
  const restarts = (log.match(/worker exited; restarting/g) ?? []).length
  process.kill(pid, 'SIGKILL')
  t.ok(await held, 'the client of the killed worker lost its connection')
  victim.end().catch(() => {})
  // while the slot is empty or restarting, every new connection is served
  for (let i = 0; i < 4; i++) {
    const c = await connect(`after-kill-${i}`)
    t.match((await c.query('SELECT 1 AS ok')).rows, [{ ok: 1 }], `connection ${i + 1} after the kill answers`)
    await c.end()
  }
  await waitFor(() => (log.match(/worker exited; restarting/g) ?? []).length > restarts, 'the primary to see the death')
  t.match(log, new RegExp(`"worker":${slot},"pid":${pid},"code":null,"signal":"SIGKILL","restartInMs":\\d+,"msg":"worker exited; restarting"`), 'logged with its backoff')
  await waitFor(() => new RegExp(`"worker":${slot},"pid":(?!${pid})\\d+,"msg":"worker ready"`).test(log), `slot ${slot} to be ready again`, 180_000)
  t.pass('restarted')
  t.match(await api('GET', `/api/approvals/${req.id}`), { status: 200, json: { approval: { id: req.id, status: 'withdrawn' } } }, 'its pending request reads withdrawn')
  t.notOk((await sessions()).some((s) => s.instance === victimHome), 'its sessions left the registry')
  t.same(await direct(`SELECT name FROM items WHERE id = 4`), [{ name: 'item 4' }], 'the held statement never ran')
  // both slots serve again: connections land on two instances
  const seen = new Set<string>()
  await waitFor(async () => {
    const c = await connect('after-restart')
    seen.add(await instanceOf(c))
    await c.end()
    return seen.size === 2
  }, 'connections to reach both workers again')
  t.notOk(seen.has(victimHome), 'the new worker is a new instance')
})

t.test('SIGTERM drains both workers: open sessions finish their work, then the host exits 0', async (t) => {
  const one = await connect('drain-1')
  const home = await instanceOf(one)
  const { c: two } = await clientOn('drain-2', { not: home })
  const twoEnded = ended(two)
  const stopped = log.length
  child.kill('SIGTERM')
  await waitFor(() => (log.slice(stopped).match(/"msg":"worker draining"/g) ?? []).length === 2, 'both workers to drain')
  t.match((await one.query('SELECT 1 AS ok')).rows, [{ ok: 1 }], 'a session in one worker still runs while draining')
  t.match((await two.query('SELECT 2 AS ok')).rows, [{ ok: 2 }], 'and in the other')
  await t.rejects(connect('too-late'), 'no new connection is taken')
  await one.end()
  // the other stays open: the drain deadline ends it
  await twoEnded
  const [code] = await exited
  t.equal(code, 0, 'the primary exits 0 once every worker has stopped')
  t.match(log.slice(stopped), /shutdown deadline passed; aborting sessions/, 'the open session was aborted at the deadline')
  t.match(log.slice(stopped), /"msg":"every worker stopped"/)
  const audit = (await readFile(join(env.dir, 'audit.jsonl'), 'utf8')).split('\n').filter(Boolean)
  t.ok(audit.length > 0)
  t.ok(audit.every((l) => { try { JSON.parse(l); return true } catch { return false } }), `every one of ${audit.length} audit lines two workers appended is whole JSON`)
})
