// Three gateway processes on loopback sharing one real control store (Postgres or Redis), behind
// HAProxy in TCP mode, driven by pg and fetch: what one instance is told, the others act on.
// multi-instance.test.ts runs it on Postgres, multi-instance-redis.test.ts on Redis.
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import pg from 'pg'
import { startPostgres, type PostgresServer } from '@portcullis/fixtures/postgres'
import { startRedis, type RedisServer } from '@portcullis/fixtures/redis'
import { startHaproxy, type RunningHaproxy } from '@portcullis/fixtures/haproxy'
import { testEnv, waitFor, type TestEnv } from './helpers.ts'

const BIN = new URL('../bin/portcullis.mjs', import.meta.url).pathname
/** the lease is short so that (4) needs no long wait; the poll is long so that (1)–(3) prove the push */
const LEASE = '2s'
const HEARTBEAT = '300ms'
const POLL = '5s'

interface Instance {
  name: string
  child: ChildProcess
  admin: string
  db: number
  /** the db-defer target (approvalMode: defer) */
  dbDefer: number
  log: () => string
  exited: Promise<unknown>
}

const CONTROL_REDIS_PASSWORD = 'mi-control-redis-password'

export function multiInstance(kind: 'postgres' | 'redis'): void {
  let env: TestEnv
  let upstream: PostgresServer
  let control: PostgresServer | undefined
  let controlRedis: RedisServer | undefined
  let lb: RunningHaproxy
  const instances: Record<string, Instance> = {}
  let adminToken: string

  function storeYaml(): string {
    if (controlRedis) return `  redis: { host: ${controlRedis.host}, port: ${controlRedis.port}, password: { secret: control } }`
    return `  postgres: { host: ${control!.host}, port: ${control!.port}, database: ${control!.database}, user: ${control!.user}, password: { secret: control } }`
  }

  function yamlFor(name: string): string {
    const dir = join(env.dir, name)
    return (
      env
        .yaml({
          targets: `
  - { name: db, protocol: postgres, listen: 127.0.0.1:0,
      upstream: { host: ${upstream.host}, port: ${upstream.port}, database: ${upstream.database}, user: ${upstream.user}, password: { secret: pg } } }
  - { name: db-defer, protocol: postgres, listen: 127.0.0.1:0, options: { approvalMode: defer },
      upstream: { host: ${upstream.host}, port: ${upstream.port}, database: ${upstream.database}, user: ${upstream.user}, password: { secret: pg } } }`,
          rules: `
  - { id: read, when: { groups: [agents], class: [session, read] }, action: allow }
  - { id: defer-delete, when: { groups: [agents], targets: [db-defer], class: [delete] }, action: approve, approvers: [dba], minApprovals: 2, timeout: 1m }
  - { id: write, when: { groups: [agents], class: [write] }, action: approve, approvers: [dba], timeout: 1m }
  - { id: delete, when: { groups: [agents], class: [delete] }, action: approve, approvers: [dba], window: 10m, timeout: 1m }`,
        })
        .replace(JSON.stringify(join(env.dir, 'recordings')), JSON.stringify(join(dir, 'recordings')))
        .replace(JSON.stringify(join(env.dir, 'audit.jsonl')), JSON.stringify(join(dir, 'audit.jsonl'))) +
      `
secrets:
  pg: { env: MI_UPSTREAM_PASSWORD }
  control: { env: MI_CONTROL_PASSWORD }
controlStore:
${storeYaml()}
  lease: ${LEASE}
  heartbeat: ${HEARTBEAT}
  poll: ${POLL}
`
    )
  }

  async function startInstance(name: string): Promise<Instance> {
    const dir = join(env.dir, name)
    await mkdir(dir, { recursive: true })
    const file = join(dir, 'portcullis.yaml')
    await writeFile(file, yamlFor(name))
    const child = spawn(process.execPath, [BIN, 'start', '--config', file], {
      stdio: ['ignore', 'ignore', 'pipe'],
      env: { ...process.env, PORTCULLIS_RUN: process.env.PORTCULLIS_RUN ?? 'source', MI_UPSTREAM_PASSWORD: upstream.password, MI_CONTROL_PASSWORD: controlRedis ? CONTROL_REDIS_PASSWORD : control!.password },
    })
    let log = ''
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (log += d))
    const exited = once(child, 'exit')
    await waitFor(() => /admin API listening/.test(log) || child.exitCode !== null, `instance ${name} to start`, 120_000)
    if (child.exitCode !== null) throw new Error(`instance ${name} exited: ${log}`)
    await waitFor(() => log.includes('"target":"db-defer"') || child.exitCode !== null, `instance ${name}'s db-defer listener`, 120_000)
    const line = (msg: string, target?: string) =>
      JSON.parse(log.split('\n').find((l) => l.includes(`"msg":"${msg}"`) && (!target || l.includes(`"target":"${target}"`)))!)
    const admin = line('admin API listening').url as string
    const db = Number(String(line('listening', 'db').listen).split(':').pop())
    const dbDefer = Number(String(line('listening', 'db-defer').listen).split(':').pop())
    return { name, child, admin, db, dbDefer, log: () => log, exited }
  }

  t.before(async () => {
    env = await testEnv()
    upstream = await startPostgres()
    if (kind === 'redis') controlRedis = await startRedis({ password: CONTROL_REDIS_PASSWORD })
    else control = await startPostgres()
    const seed = new pg.Client({ host: upstream.host, port: upstream.port, user: upstream.user, password: upstream.password, database: upstream.database })
    await seed.connect()
    await seed.query(`CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL)`)
    await seed.query(`INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 20) g`)
    await seed.end()
    // one after the other: three tsx boots at once on two cores only slow each other down
    for (const name of ['a', 'b', 'c']) instances[name] = await startInstance(name)
    const { a, b, c } = instances
    lb = await startHaproxy({
      frontends: [
        { name: 'all', backends: [a!, b!, c!].map((i) => ({ host: '127.0.0.1', port: i.db })) },
        { name: 'ab', backends: [a!, b!].map((i) => ({ host: '127.0.0.1', port: i.db })) },
      ],
    })
    adminToken = await env.token('root', ['admins', 'dba'])
  })

  t.teardown(async () => {
    await lb?.stop()
    for (const i of Object.values(instances)) {
      if (i.child.exitCode === null && i.child.signalCode === null) {
        i.child.kill('SIGTERM')
        await i.exited
      }
    }
    await Promise.all([upstream?.stop(), control?.stop(), controlRedis?.stop()])
    await env?.cleanup()
  })

  async function client(port: number, sub: string, groups = ['agents']): Promise<pg.Client> {
    const c = new pg.Client({ host: '127.0.0.1', port, user: sub, database: upstream.database, password: await env.token(sub, groups) })
    c.on('error', () => {})
    await c.connect()
    return c
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

  async function api(i: Instance, method: string, path: string, body?: unknown, token = adminToken) {
    const res = await fetch(`${i.admin}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
      ...(body ? { body: JSON.stringify(body) } : {}),
    })
    return { status: res.status, json: (await res.json()) as any }
  }

  /** the pending request of this subject, as instance `via` lists it */
  async function pendingOn(via: Instance, subject: string): Promise<string> {
    let id: string | undefined
    await waitFor(async () => {
      const r = await api(via, 'GET', '/api/approvals')
      id = (r.json.approvals as { id: string; subject: string }[]).find((a) => a.subject === subject)?.id
      return id !== undefined
    }, `a request of ${subject} to be pending on ${via.name}`)
    return id!
  }

  /** resolves with ms from now until the client's connection ends */
  function endsWithin(c: pg.Client): Promise<number> {
    const t0 = Date.now()
    return new Promise((resolve) => {
      const done = () => resolve(Date.now() - t0)
      c.once('end', done)
    })
  }

  t.test('(1) a statement held on A, approved through B, runs on A; one denied through C fails on A with its id', async (t) => {
    const { a, b, c } = instances
    const agent = await client(a!.db, 'agent-1')
    t.teardown(() => agent.end().catch(() => {}))

    const sql1 = `UPDATE items SET name = 'approved' WHERE id = 1`
    const held = agent.query(sql1)
    const id = await pendingOn(b!, 'agent-1')
    t.match(await api(b!, 'GET', `/api/approvals/${id}`), { status: 200, json: { approval: { status: 'pending', subject: 'agent-1' } } })
    const t0 = Date.now()
    const approved = await api(b!, 'POST', `/api/approvals/${id}/approve`)
    t.match(approved, { status: 200, json: { approval: { id, status: 'approved', decidedBy: 'root' } } })
    const res = await held
    const ms = Date.now() - t0
    t.equal(res.rowCount, 1)
    t.ok(ms < 1000, `ran on A ${ms} ms after B's approval (poll is ${POLL}: the change was pushed)`)
    t.same(await direct(`SELECT name FROM items WHERE id = 1`), [{ name: 'approved' }], 'the upstream changed')
    t.match(await api(c!, 'POST', `/api/approvals/${id}/approve`), { status: 409, json: { error: { code: 'conflict' } } }, 'decided once')

    const sql2 = `UPDATE items SET name = 'denied' WHERE id = 2`
    const refused = agent.query(sql2).then(
      () => undefined,
      (err: Error & { code?: string; detail?: string }) => err,
    )
    const id2 = await pendingOn(c!, 'agent-1')
    t.match(await api(c!, 'POST', `/api/approvals/${id2}/deny`, { reason: 'not today' }), { status: 200, json: { approval: { status: 'denied' } } })
    const err = await refused
    t.match(err, { code: '42501', message: new RegExp(`denied by root: not today.*${id2}`), detail: `approval request ${id2}` })
    t.same(await direct(`SELECT name FROM items WHERE id = 2`), [{ name: 'item 2' }], 'the upstream did not change')
    t.match((await agent.query('SELECT 1 AS ok')).rows, [{ ok: 1 }], 'the session goes on')
  })

  t.test('(2) an approval window granted through B covers the same statement by the same subject on C', async (t) => {
    const { a, b, c } = instances
    const onA = await client(a!.db, 'agent-2')
    const onC = await client(c!.db, 'agent-2')
    const other = await client(c!.db, 'agent-3')
    t.teardown(() => Promise.all([onA, onC, other].map((x) => x.end().catch(() => {}))))
    const sql = `DELETE FROM items WHERE id = 3`
    const held = onA.query(sql)
    const id = await pendingOn(b!, 'agent-2')
    t.match(await api(b!, 'POST', `/api/approvals/${id}/approve`), { status: 200 })
    t.equal((await held).rowCount, 1)
    const before = (await api(b!, 'GET', '/api/approvals')).json.approvals.length
    const again = await onC.query(sql)
    t.equal(again.rowCount, 0, 'ran on C at once (the row is already gone)')
    t.equal((await api(b!, 'GET', '/api/approvals')).json.approvals.length, before, 'and asked nobody')
    // another subject is not covered by agent-2's window
    // settled at once into a value: the denial may come before anyone awaits it
    const asked = other.query(sql).then(() => undefined, (err: Error) => err)
    const id3 = await pendingOn(a!, 'agent-3')
    await api(a!, 'POST', `/api/approvals/${id3}/deny`)
    t.match(await asked, { code: '42501', message: /denied by root/ })
  })

  t.test('(6) defer mode, minApprovals 2: asked on A, approved by two approvers through B and C, run once on C', async (t) => {
    const { a, b, c } = instances
    const onA = await client(a!.dbDefer, 'agent-6')
    const onB = await client(b!.dbDefer, 'agent-6')
    const onC = await client(c!.dbDefer, 'agent-6')
    t.teardown(() => Promise.all([onA, onB, onC].map((x) => x.end().catch(() => {}))))
    const sql = 'DELETE FROM items WHERE id = $1'
    const first = await onA.query(sql, [10]).catch((e) => e)
    t.equal(first.code, 'PA001')
    const id = /request (apr_\w+)/.exec(first.message)![1]!
    const one = await api(b!, 'POST', `/api/approvals/${id}/approve`, { reason: 'looked at it' })
    t.match(one, { status: 200, json: { approval: { status: 'pending', approvals: [{ by: 'root' }] } } }, 'one of two')
    t.match(await api(c!, 'POST', `/api/approvals/${id}/approve`), { status: 409, json: { error: { code: 'already_counted' } } }, 'the same approver through another instance is not a second')
    const two = await api(c!, 'POST', `/api/approvals/${id}/approve`, undefined, await env.token('dba-2', ['dba']))
    t.match(two, { status: 200, json: { approval: { status: 'approved' } } })
    t.same(two.json.approval.approvals.map((v: { by: string }) => v.by), ['root', 'dba-2'])
    const other = await onC.query(sql, [11]).catch((e) => e)
    t.equal(other.code, 'PA001', 'another parameter is not released')
    t.equal((await onC.query(sql, [10])).rowCount, 1, 'the identical statement runs on C')
    const again = await onB.query(sql, [10]).catch((e) => e)
    t.equal(again.code, 'PA001', 'once: on B it asks again')
    t.notMatch(again.message, id)
    t.same(await direct(`SELECT id FROM items WHERE id IN (10, 11) ORDER BY id`), [{ id: 11 }])
  })

  t.test('(3) a revocation posted to A ends the subject\'s sessions on B and C; the registry spans every instance', async (t) => {
    const { a, b, c } = instances
    const onB = await client(b!.db, 'agent-r')
    const onC = await client(c!.db, 'agent-r')
    const survivor = await client(b!.db, 'agent-s')
    t.teardown(() => Promise.all([onB, onC, survivor].map((x) => x.end().catch(() => {}))))
    const endB = endsWithin(onB)
    const endC = endsWithin(onC)
    const t0 = Date.now()
    t.match(await api(a!, 'POST', '/api/revocations', { subject: 'agent-r' }), { status: 200, json: { revoked: { subject: 'agent-r' } } })
    const [msB, msC] = await Promise.all([endB, endC])
    t.ok(Date.now() - t0 < 1000, `sessions on B and C ended ${msB} / ${msC} ms after the revocation`)
    t.match((await survivor.query('SELECT 1 AS ok')).rows, [{ ok: 1 }], "another subject's session is untouched")
    await t.rejects(client(c!.db, 'agent-r'), /revoked/, 'and the subject cannot come back on C')

    const la = await client(a!.db, 'list-a')
    const lc = await client(c!.db, 'list-c')
    t.teardown(() => Promise.all([la, lc].map((x) => x.end().catch(() => {}))))
    for (const via of [a!, b!, c!]) {
      await waitFor(async () => {
        const r = await api(via, 'GET', '/api/sessions')
        const subjects = (r.json.sessions as { subject: string }[]).map((s) => s.subject)
        return ['list-a', 'list-c', 'agent-s'].every((s) => subjects.includes(s))
      }, `${via.name} to list every instance's sessions`)
    }
    const listed = (await api(b!, 'GET', '/api/sessions')).json.sessions as { id: string; subject: string; instance: string; lastActivity: number }[]
    const onCid = listed.find((s) => s.subject === 'list-c')!
    t.not(onCid.instance, listed.find((s) => s.subject === 'agent-s')!.instance, 'each names its instance')
    t.type(onCid.lastActivity, 'number')
    const endLc = endsWithin(lc)
    t.match(await api(b!, 'DELETE', `/api/sessions/${onCid.id}`), { status: 200, json: { killed: 1 } })
    await endLc
    t.pass("DELETE on B ended the session C held")
    t.match(await api(b!, 'DELETE', `/api/sessions/ses_nosuchsession`), { status: 404 })
    t.match((await la.query('SELECT 1 AS ok')).rows, [{ ok: 1 }])
  })

  if (kind === 'postgres') t.test('(5) the control store stopped for 10 s under traffic: allowed keeps running, approvals refused clearly, then all resumes', async (t) => {
    const { b, c } = instances
    // traffic through HAProxy on every instance, as a load balancer sends it
    const readers = await Promise.all([0, 1, 2].map((i) => client(lb.ports.all!, `reader-${i}`)))
    const writer = await client(b!.db, 'agent-5')
    t.teardown(() => Promise.all([...readers, writer].map((x) => x.end().catch(() => {}))))
    let ok = 0
    let failed: unknown
    let running = true
    const traffic = Promise.all(
      readers.map(async (r) => {
        while (running) {
          try {
            await r.query('SELECT count(*) FROM items')
            ok++
          } catch (err) {
            failed ??= err
          }
        }
      }),
    )
    await waitFor(() => ok > 10, 'traffic to flow')
    await control!.stopServer()
    const stoppedAt = Date.now()
    await waitFor(async () => (await api(b!, 'GET', '/healthz')).json.controlStore.ok === false, 'B to see the store down')
    const health = await api(b!, 'GET', '/healthz')
    t.match(health, { status: 200, json: { status: 'degraded', controlStore: { kind: 'postgres', ok: false, error: String } } })
    t.notMatch(JSON.stringify(health.json), new RegExp(`${control!.port}|${control!.password}`), 'healthz names no address or password')
    const okAtStop = ok
    const t0 = Date.now()
    await t.rejects(writer.query(`UPDATE items SET name = 'while down' WHERE id = 5`), {
      code: '42501',
      message: /approval service unavailable/,
    })
    t.ok(Date.now() - t0 < 1000, 'refused at once, not after a timeout')
    t.match(await api(b!, 'GET', '/api/sessions'), { status: 503, json: { error: { code: 'control_store_unavailable' } } })
    t.match(await api(c!, 'GET', '/api/approvals'), { status: 503, json: { error: { code: 'control_store_unavailable' } } })
    t.match(await api(c!, 'POST', '/api/revocations', { subject: 'nobody' }), { status: 503, json: { error: { code: 'control_store_unavailable' } } })
    await new Promise((r) => setTimeout(r, Math.max(0, 10_000 - (Date.now() - stoppedAt))))
    t.ok(ok > okAtStop, `allowed statements kept running while the store was down (${ok - okAtStop} of them)`)
    await control!.startServer()
    for (const i of [instances.a!, b!, c!]) await waitFor(async () => (await api(i, 'GET', '/healthz')).json.status === 'ok', `${i.name} to reconnect`)
    running = false
    await traffic
    t.equal(failed, undefined, 'no allowed statement failed')
    t.same(await direct(`SELECT name FROM items WHERE id = 5`), [{ name: 'item 5' }], 'the refused write did not happen')
    const sql = `UPDATE items SET name = 'after' WHERE id = 5`
    const held = writer.query(sql)
    const id = await pendingOn(c!, 'agent-5')
    t.match(await api(c!, 'POST', `/api/approvals/${id}/approve`), { status: 200 })
    t.equal((await held).rowCount, 1, 'approvals work again without a restart')
  })

  t.test('(4) kill -9 A while it holds a request: the request reads withdrawn on B within the lease; reconnecting through HAProxy works on B', async (t) => {
    const { a, b } = instances
    const agent = await client(a!.db, 'agent-4')
    const sql = `UPDATE items SET name = 'never' WHERE id = 4`
    const held = agent.query(sql).catch((err: Error) => err)
    const id = await pendingOn(b!, 'agent-4')
    const t0 = Date.now()
    a!.child.kill('SIGKILL')
    await a!.exited
    t.type(await held, Error, "A's client lost its connection")
    await waitFor(async () => (await api(b!, 'GET', `/api/approvals/${id}`)).json.approval?.status === 'withdrawn', 'the request to read withdrawn on B', 10_000)
    const ms = Date.now() - t0
    t.ok(ms < 2000 + 2 * 300 + 1000, `withdrawn ${ms} ms after the kill (lease ${LEASE}, heartbeat ${HEARTBEAT})`)
    t.match((await api(b!, 'GET', `/api/approvals/${id}`)).json.approval, { status: 'withdrawn', reason: /stopped answering/ })
    t.match(await api(b!, 'POST', `/api/approvals/${id}/approve`), { status: 409 }, 'and can no longer be approved')
    t.same(await direct(`SELECT name FROM items WHERE id = 4`), [{ name: 'item 4' }])
    await waitFor(async () => {
      const subjects = ((await api(b!, 'GET', '/api/sessions')).json.sessions as { subject: string }[]).map((s) => s.subject)
      return !subjects.includes('agent-4') && !subjects.includes('list-a')
    }, "A's sessions to leave the registry")

    const again = await client(lb.ports.ab!, 'agent-4')
    t.teardown(() => again.end().catch(() => {}))
    t.match((await again.query('SELECT name FROM items WHERE id = 4')).rows, [{ name: 'item 4' }], 'a client reconnecting through HAProxy works')
    const sessions = (await api(b!, 'GET', '/api/sessions')).json.sessions as { subject: string; instance: string }[]
    const bInstance = (await api(b!, 'GET', '/healthz')).json.instance
    t.match(sessions.find((s) => s.subject === 'agent-4'), { instance: bInstance }, 'on B')
  })
}
