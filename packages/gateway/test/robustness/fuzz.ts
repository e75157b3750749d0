// The fuzz driver: many connections in parallel, many cases per connection where the protocol lets
// the session go on. A connection logs in with captured real handshake bytes, then writes cases; after
// each batch a sentinel (a normal request with a unique marker) shows the gateway got through the
// batch. A case that ends the connection (FIN/RST, or the gateway closing on bad input) opens the next
// one. Pre-login cases mutate the handshake itself on a connection of their own.
import { connect, type Socket } from 'node:net'
import { frameHttp, framePostgres, frameRedis, type Framed, type Message } from './frames.ts'
import { int, makeCase, pick, prng, split, type Case, type Mutation, type Rand } from './mutate.ts'

export type Protocol = 'postgres' | 'redis' | 'http'

export interface FuzzOptions {
  protocol: Protocol
  port: number
  /** captured client→gateway streams */
  seeds: Buffer[]
  cases: number
  seed: number
  /** connections in flight */
  parallel?: number
  /** a valid token, used where a seed has none (pg/Redis log in with the captured handshake, HTTP sentinels reuse the captured request's token) */
  token: string
  /** a case that gets no answer within this long leaves the gateway waiting for more bytes: cut */
  stallMs?: number
}

export interface FuzzStats {
  protocol: Protocol
  seed: number
  cases: number
  preLoginCases: number
  connections: number
  /** the gateway answered the sentinel after the batch */
  answered: number
  /** the gateway closed the connection (bad input) */
  closedByGateway: number
  /** the client ended the case with FIN / RST */
  fin: number
  rst: number
  /** the gateway waited for more bytes (an incomplete message): the client cut it */
  stalled: number
  /** a captured login that did not get the gateway's ready answer (must be 0) */
  loginFailures: number
  mutations: Partial<Record<Mutation, number>>
  ms: number
}

interface Driver {
  framed: Framed[]
  /** bytes that log in, and what the gateway sends once the session is ready */
  login(seed: Framed): Buffer[]
  ready(recv: Buffer): boolean
  sentinel(marker: string): Buffer
  /** share of cases that mutate the login itself */
  preLogin: number
  /** share of post-login cases that end their connection (beyond those the gateway ends) */
  terminal: number
  /** share of post-login cases made only of framing-preserving mutations */
  gentle: number
  batch: number
}

function pgQuery(sql: string): Buffer {
  const body = Buffer.from(sql + '\0', 'utf8')
  const b = Buffer.alloc(5 + body.length)
  b[0] = 0x51 // Q
  b.writeInt32BE(4 + body.length, 1)
  body.copy(b, 5)
  return b
}
const PG_SYNC = Buffer.from([0x53, 0, 0, 0, 4]) // S

function resp(...args: string[]): Buffer {
  return Buffer.from(`*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join(''))
}

function drivers(protocol: Protocol, seeds: Buffer[], token: string): Driver {
  switch (protocol) {
    case 'postgres':
      return {
        framed: seeds.map(framePostgres),
        login: (f) => f.handshake.map((m) => m.bytes),
        // ReadyForQuery ('Z', length 5) after the login
        ready: (recv) => recv.includes(Buffer.from([0x5a, 0, 0, 0, 5])),
        sentinel: (marker) => Buffer.concat([PG_SYNC, pgQuery(`ROLLBACK; SELECT '${marker}'`)]),
        preLogin: 0.15,
        terminal: 0.02,
        gentle: 0.85,
        batch: 6,
      }
    case 'redis':
      return {
        framed: seeds.map(frameRedis),
        login: (f) => f.handshake.map((m) => m.bytes),
        ready: (recv) => recv.includes('+OK\r\n') || recv.includes('server'),
        sentinel: (marker) => Buffer.concat([resp('DISCARD'), resp('ECHO', marker)]),
        preLogin: 0.15,
        terminal: 0.03,
        gentle: 0.8,
        batch: 6,
      }
    case 'http': {
      // the HTTP codec binds a connection to one token: the sentinel speaks with the captured one
      token = /\r\nauthorization: Bearer (\S+)\r\n/i.exec(seeds[0]!.toString('latin1'))?.[1] ?? token
      return {
        framed: seeds.map(frameHttp),
        login: () => [],
        ready: () => true,
        sentinel: (marker) => {
          const body = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: marker }] })
          return Buffer.from(
            `POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${token}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
          )
        },
        preLogin: 0,
        terminal: 0.02,
        gentle: 0.9,
        batch: 6,
      }
    }
  }
}

class Conn {
  socket: Socket
  recv: Buffer[] = []
  recvBytes = 0
  closed = false
  private waiter: (() => void) | undefined
  readonly closedPromise: Promise<void>

  constructor(port: number) {
    this.socket = connect({ host: '127.0.0.1', port, noDelay: true })
    this.socket.on('data', (d: Buffer) => {
      // only the tail matters (a marker, a ReadyForQuery); a huge reply is not kept
      this.recv.push(d)
      this.recvBytes += d.length
      while (this.recvBytes > 65536 && this.recv.length > 1) this.recvBytes -= this.recv.shift()!.length
      this.waiter?.()
    })
    this.socket.on('error', () => {})
    this.closedPromise = new Promise((resolve) =>
      this.socket.once('close', () => {
        this.closed = true
        this.waiter?.()
        resolve()
      }),
    )
  }

  connected(): Promise<boolean> {
    return new Promise((resolve) => {
      this.socket.once('connect', () => resolve(true))
      this.socket.once('close', () => resolve(false))
    })
  }

  text(): Buffer {
    if (this.recv.length > 1) this.recv = [Buffer.concat(this.recv)]
    return this.recv[0] ?? Buffer.alloc(0)
  }

  reset(): void {
    this.recv = []
    this.recvBytes = 0
  }

  /** resolves true once cond holds, false on close or after ms */
  async until(cond: (b: Buffer) => boolean, ms: number): Promise<'ok' | 'closed' | 'timeout'> {
    const end = Date.now() + ms
    for (;;) {
      if (cond(this.text())) return 'ok'
      if (this.closed) return 'closed'
      const left = end - Date.now()
      if (left <= 0) return 'timeout'
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left)
        this.waiter = () => {
          clearTimeout(t)
          resolve()
        }
      })
      this.waiter = undefined
    }
  }

  async write(bytes: Buffer, chunks: number[], r: Rand): Promise<void> {
    let at = 0
    const gap = r() < 0.5
    for (const n of chunks) {
      if (this.closed) return
      this.socket.write(bytes.subarray(at, at + n))
      at += n
      if (gap) await new Promise((resolve) => setImmediate(resolve))
    }
  }

  /** ends the case's connection the way the case says */
  async finish(c: Case, r: Rand): Promise<void> {
    if (c.end === 'rst') {
      await this.write(c.bytes.subarray(0, c.cutAt), split(r, c.cutAt), r)
      if (!this.closed) this.socket.resetAndDestroy()
    } else {
      await this.write(c.bytes, c.chunks, r)
      if (!this.closed) this.socket.end()
    }
    await Promise.race([this.closedPromise, new Promise((resolve) => setTimeout(resolve, 300))])
    this.socket.destroy()
  }

  /** the client is done with a live connection: FIN, as psql leaves, then the socket goes */
  async leave(): Promise<void> {
    if (!this.closed) this.socket.end()
    await Promise.race([this.closedPromise, new Promise((resolve) => setTimeout(resolve, 300))])
    this.socket.destroy()
  }

  destroy(): void {
    this.socket.destroy()
  }
}

export async function fuzz(opts: FuzzOptions): Promise<FuzzStats> {
  const d = drivers(opts.protocol, opts.seeds, opts.token)
  const seeds = d.framed.filter((f) => f.traffic.length > 0)
  if (seeds.length === 0) throw new Error(`no ${opts.protocol} traffic captured`)
  const stallMs = opts.stallMs ?? 1500
  const stats: FuzzStats = {
    protocol: opts.protocol,
    seed: opts.seed,
    cases: 0,
    preLoginCases: 0,
    connections: 0,
    answered: 0,
    closedByGateway: 0,
    fin: 0,
    rst: 0,
    stalled: 0,
    loginFailures: 0,
    mutations: {},
    ms: 0,
  }
  const started = Date.now()
  let markers = 0
  const count = (c: Case) => {
    stats.cases++
    for (const m of c.mutations) stats.mutations[m] = (stats.mutations[m] ?? 0) + 1
    if (c.end === 'fin') stats.fin++
    if (c.end === 'rst') stats.rst++
  }

  // the run's client sockets not yet closed (a closed one is let go: a long run opens thousands)
  const conns = new Set<Conn>()
  const worker = async (w: number) => {
    const r = prng(opts.seed * 7919 + w)
    while (stats.cases < opts.cases) {
      const seed = pick(r, seeds)
      const conn = new Conn(opts.port)
      conns.add(conn)
      void conn.closedPromise.then(() => conns.delete(conn))
      stats.connections++
      if (!(await conn.connected())) {
        stats.loginFailures++
        continue
      }
      const login = d.login(seed)
      if (login.length > 0 && r() < d.preLogin) {
        // a case over the login itself (plus the start of the traffic), on a connection of its own
        const c = makeCase(r, [...seed.handshake, ...seed.traffic.slice(0, 2)], 1)
        stats.preLoginCases++
        count(c)
        await conn.finish(c, r)
        continue
      }
      let ok = true
      for (const bytes of login) {
        conn.socket.write(bytes)
        // Postgres asks for the password first; the captured client waited for that, so do we
        if (opts.protocol === 'postgres' && bytes !== login[login.length - 1]) ok = (await conn.until((b) => b.includes(0x52 /* R */), stallMs * 4)) === 'ok'
      }
      if (ok && login.length > 0) ok = (await conn.until(d.ready, stallMs * 4)) === 'ok'
      if (!ok) {
        stats.loginFailures++
        conn.destroy()
        continue
      }
      conn.reset()
      while (stats.cases < opts.cases && !conn.closed) {
        const batch: Case[] = []
        for (let k = 1 + int(r, d.batch); k > 0; k--) {
          const c = makeCase(r, seed.traffic, d.terminal, d.gentle)
          batch.push(c)
          if (c.end !== 'keep') break
        }
        const last = batch[batch.length - 1]!
        for (const c of batch.slice(0, -1)) await conn.write(c.bytes, c.chunks, r)
        if (last.end !== 'keep') {
          for (const c of batch) count(c)
          await conn.finish(last, r)
          break
        }
        await conn.write(last.bytes, last.chunks, r)
        const marker = `mk${opts.seed}x${w}x${markers++}`
        conn.socket.write(d.sentinel(marker))
        const got = await conn.until((b) => b.includes(marker), stallMs)
        if (got === 'ok') {
          stats.answered++
          for (const c of batch) count(c)
          conn.reset()
          continue
        }
        // closed on bad input, or waiting for bytes that never come: the batch is one case done
        count(batch[0]!)
        if (got === 'closed') stats.closedByGateway++
        else stats.stalled++
        conn.destroy()
        break
      }
      // the cases ran out on a connection that still answers: the client leaves it. Left open, the
      // after-batch checks counted its live session (its backend, fds, unsealed recording) as one
      // the gateway leaked: up to one per worker per batch, which was the whole of what they saw
      if (!conn.closed && !conn.socket.destroyed) await conn.leave()

    }
  }
  await Promise.all(Array.from({ length: opts.parallel ?? 16 }, (_, i) => worker(i)))
  // every client socket of the run is closed before the after-batch checks look: what they find
  // open is the gateway's (every path above destroys or leaves its connection, so this settles)
  await Promise.all([...conns].map((c) => c.closedPromise))
  stats.ms = Date.now() - started
  return stats
}

export function formatStats(s: FuzzStats): string {
  const muts = Object.entries(s.mutations)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ')
  return (
    `${s.protocol}: ${s.cases} cases (${s.preLoginCases} before login) on ${s.connections} connections in ${(s.ms / 1000).toFixed(1)} s ` +
    `(${Math.round((s.cases * 1000) / Math.max(1, s.ms))}/s), seed ${s.seed}; sentinel answered ${s.answered}, gateway closed ${s.closedByGateway}, ` +
    `stalled ${s.stalled}, FIN ${s.fin}, RST ${s.rst}, login failures ${s.loginFailures}; mutations: ${muts}`
  )
}

export type { Message }
