import t from 'tap'
import pg from 'pg'
import { connect, type Socket } from 'node:net'
import { once } from 'node:events'
import { startGateway, DEFAULT_RULES, type Gateway } from './harness.ts'
import { serializeStartupMessage, serializePasswordMessage, serializeQuery } from '../src/frontend.ts'
import { Framer } from '../src/framer.ts'
import { BufferReader } from '../src/buffer-reader.ts'
import { parseNoticeFields } from '../src/backend.ts'
import { BufferWriter } from '../src/buffer-writer.ts'

/** a hand-driven client: speaks the protocol only as far as a test needs */
class RawClient {
  readonly socket: Socket
  private framer = new Framer(1 << 24)
  private frames: { code: string; raw: Buffer }[] = []
  private waiters: (() => void)[] = []
  closed = false
  dataRows = 0
  readonly connected: Promise<unknown>

  constructor(gw: Gateway) {
    this.socket = connect({ host: gw.host, port: gw.port })
    this.connected = once(this.socket, 'connect')
    this.socket.on('data', chunk => {
      for (const f of this.framer.push(chunk)) {
        // rows are only counted: a large result must not pile up in the test either
        if (f.code === 0x44) this.dataRows++
        else this.frames.push({ code: String.fromCharCode(f.code), raw: f.raw })
      }
      this.wake()
    })
    this.socket.on('close', () => {
      this.closed = true
      this.wake()
    })
    this.socket.on('error', () => {})
  }

  private wake() {
    for (const w of this.waiters.splice(0)) w()
  }

  /** frames up to and including the first with one of the codes; undefined if the socket closed first */
  async until(codes: string): Promise<{ code: string; raw: Buffer }[] | undefined> {
    for (;;) {
      const i = this.frames.findIndex(f => codes.includes(f.code))
      if (i >= 0) return this.frames.splice(0, i + 1)
      if (this.closed) return undefined
      await new Promise<void>(r => this.waiters.push(r))
    }
  }

  async login(token: string, app: string): Promise<void> {
    await this.connected
    this.socket.write(serializeStartupMessage({ user: 'agent-1', database: 'app', application_name: app }))
    await this.until('R')
    this.socket.write(serializePasswordMessage(token))
    const got = await this.until('Z')
    if (!got) throw new Error('login failed')
  }
}

function errorFields(raw: Buffer) {
  return parseNoticeFields(new BufferReader(raw, 5))
}

async function upstreamBackends(direct: pg.Client, app: string): Promise<number> {
  const r = await direct.query('select count(*)::int as n from pg_stat_activity where application_name = $1', [app])
  return r.rows[0].n
}

async function eventually(fn: () => Promise<boolean>): Promise<boolean> {
  for (let i = 0; i < 50; i++) {
    if (await fn()) return true
    await new Promise(r => setTimeout(r, 100))
  }
  return false
}

t.test('robustness', async t => {
  const gw = await startGateway({
    limits: { maxMessageBytes: 4096 },
    rules: [...DEFAULT_RULES, { id: 'agents-schema', when: { groups: ['agents'], class: ['schema-change'] }, action: 'approve', approvers: ['dba'] }],
  })
  t.teardown(() => gw.stop())
  const direct = new pg.Client({ connectionString: gw.pg.url })
  await direct.connect()
  t.teardown(() => direct.end())

  t.test('an oversized startup packet is closed without a word, as Postgres does (server-behaviour.test.ts)', async t => {
    const c = new RawClient(gw)
    await c.connected
    const header = Buffer.alloc(8)
    header.writeInt32BE(50_000, 0)
    header.writeInt32BE(196608, 4)
    c.socket.write(header)
    t.equal(await c.until('E'), undefined, 'closed before any message')
    t.ok(c.closed, 'the connection is closed')
  })

  t.test('a bad startup packet ends with a FATAL', async t => {
    const c = new RawClient(gw)
    await c.connected
    const bad = Buffer.alloc(12)
    bad.writeInt32BE(12, 0)
    bad.writeInt32BE(0x20000, 4) // protocol 2.0
    c.socket.write(bad)
    const got = await c.until('E')
    t.match(errorFields(got!.at(-1)!.raw), { S: 'FATAL', C: '08P01', M: /unsupported frontend protocol 2\.0/ })
  })

  t.test('an oversized message after login: FATAL, the upstream connection is closed, the gateway serves on', async t => {
    const c = new RawClient(gw)
    await c.login(await gw.token(), 'oversized-test')
    t.equal(await upstreamBackends(direct, 'oversized-test'), 1)
    c.socket.write(serializeQuery('select ' + "'x'," .repeat(2000) + '1'))
    const got = await c.until('E')
    t.match(errorFields(got!.at(-1)!.raw), { S: 'FATAL', C: '54000', M: /exceeds the limit of 4096 bytes/ })
    t.ok(await eventually(async () => (await upstreamBackends(direct, 'oversized-test')) === 0), 'no upstream backend is left')
    const again = new pg.Client({ connectionString: await gw.url() })
    await again.connect()
    t.equal((await again.query('select 1 as one')).rows[0].one, 1, 'a new client is served')
    await again.end()
  })

  t.test('an unknown message type: FATAL 08P01 and the upstream is closed', async t => {
    const c = new RawClient(gw)
    await c.login(await gw.token(), 'garbage-test')
    c.socket.write(Buffer.from([0x7a, 0, 0, 0, 4]))
    const got = await c.until('E')
    t.match(errorFields(got!.at(-1)!.raw), { S: 'FATAL', C: '08P01', M: /invalid frontend message type 'z'/ })
    t.ok(await eventually(async () => (await upstreamBackends(direct, 'garbage-test')) === 0))
  })

  t.test('a fast-path FunctionCall is refused and the session goes on', async t => {
    const c = new RawClient(gw)
    await c.login(await gw.token(), 'fastpath-test')
    // FunctionCall pg_backend_pid(): oid 2026, no argument formats, no arguments, text result
    c.socket.write(new BufferWriter().int32(2026).int16(0).int16(0).int16(0).message('F'))
    const got = await c.until('Z')
    const err = got!.find(f => f.code === 'E')
    t.match(errorFields(err!.raw), { S: 'ERROR', C: '42501', M: /fast-path/ })
    t.notOk(got!.some(f => f.code === 'V'), 'no FunctionCallResponse')
    c.socket.write(serializeQuery('select 1'))
    const next = await c.until('Z')
    t.ok(next!.some(f => f.code === 'C'), 'the next query runs')
    c.socket.destroy()
  })

  t.test('a client that resets the connection mid-statement leaves no upstream backend (the statement is cancelled)', async t => {
    const c = new RawClient(gw)
    await c.login(await gw.token(), 'vanish-test')
    c.socket.write(serializeQuery('select pg_sleep(20)'))
    await new Promise(r => setTimeout(r, 200))
    c.socket.resetAndDestroy()
    t.ok(await eventually(async () => (await upstreamBackends(direct, 'vanish-test')) === 0))
  })

  t.test('a client that closes (FIN) mid-statement: as with Postgres, the statement ends, then so does the backend', async t => {
    // a FIN may be a half-close that still reads the reply: Postgres answers it, and so does the gateway
    const c = new RawClient(gw)
    await c.login(await gw.token(), 'fin-test')
    c.socket.write(serializeQuery('select pg_sleep(1)'))
    await new Promise(r => setTimeout(r, 200))
    c.socket.destroy()
    t.ok(await eventually(async () => (await upstreamBackends(direct, 'fin-test')) === 0))
  })

  t.test('a client that stops reading holds the upstream back (backpressure) and gets every row later', async t => {
    const c = new RawClient(gw)
    await c.login(await gw.token(), 'backpressure-test')
    c.socket.pause()
    c.socket.write(serializeQuery("select repeat('x', 1000) from generate_series(1, 60000)"))
    const blocked = await eventually(async () => {
      const r = await direct.query("select wait_event from pg_stat_activity where application_name = 'backpressure-test'")
      return r.rows[0]?.wait_event === 'ClientWrite'
    })
    t.ok(blocked, 'the upstream backend waits to write: the gateway stopped reading from it')
    c.socket.resume()
    const done = await c.until('Z')
    t.ok(done)
    t.equal(c.dataRows, 60000)
    c.socket.destroy()
  })

  t.test('cancel reaches the running statement through the gateway key', async t => {
    const c = new pg.Client({ connectionString: await gw.url() })
    await c.connect()
    t.teardown(() => c.end())
    const started = Date.now()
    const q = c.query('select pg_sleep(30)').catch(e => e)
    await new Promise(r => setTimeout(r, 300))
    const canceller = new pg.Client({ connectionString: await gw.url() })
    // pg's cancel opens a new connection with the key the gateway handed out
    ;(canceller as unknown as { cancel(c: pg.Client, q: unknown): void }).cancel(c, (c as unknown as { activeQuery: unknown }).activeQuery)
    const e = await q
    t.equal(e.code, '57014')
    t.ok(Date.now() - started < 25_000, 'the sleep was cut short')
    t.equal((await c.query('select 2 as two')).rows[0].two, 2)
  })

  t.test('cancel while waiting for approval withdraws the request', async t => {
    const c = new pg.Client({ connectionString: await gw.url() })
    c.on('error', () => {})
    await c.connect()
    t.teardown(() => c.end())
    const q = c.query('create table never_made (id int)').catch(e => e)
    let id: string | undefined
    for (let i = 0; i < 100 && !id; i++) {
      await new Promise(r => setTimeout(r, 50))
      id = gw.core.approvals.list().find(a => a.status === 'pending')?.id
    }
    t.ok(id)
    const canceller = new pg.Client({ connectionString: await gw.url() })
    ;(canceller as unknown as { cancel(c: pg.Client, q: unknown): void }).cancel(c, (c as unknown as { activeQuery: unknown }).activeQuery)
    const e = await q
    t.equal(e.code, '57014')
    t.equal(gw.core.approvals.get(id!)?.status, 'withdrawn')
    t.equal((await c.query('select 3 as three')).rows[0].three, 3, 'the session goes on')
  })

  t.test('an expired token ends the session with FATAL 28000 at the next statement', async t => {
    const c = new RawClient(gw)
    await c.login(await gw.issuer.mint({ sub: 'agent-1', groups: ['agents'], ttlSeconds: 1 }), 'expiry-test')
    await new Promise(r => setTimeout(r, 1500))
    c.socket.write(serializeQuery('select 1'))
    const got = await c.until('E')
    t.match(errorFields(got!.at(-1)!.raw), { S: 'FATAL', C: '28000', M: /token expired/ })
    t.ok(await eventually(async () => (await upstreamBackends(direct, 'expiry-test')) === 0))
  })
})
