// Test helpers that speak the protocol by hand: a raw client that keeps every byte it receives, a
// TCP tap between the gateway and Postgres that reads the frontend messages the gateway sends, and
// the frontend messages the tests need.
import { connect, createServer, type Server, type Socket } from 'node:net'
import { once } from 'node:events'
import type { RunningPostgres } from '@portcullis/fixtures/postgres'
import type { Gateway } from './harness.ts'
import { BufferWriter } from '../src/buffer-writer.ts'
import { BufferReader } from '../src/buffer-reader.ts'
import { parseNoticeFields } from '../src/backend.ts'
import { serializePasswordMessage, serializeStartupMessage } from '../src/frontend.ts'
import { Framer } from '../src/framer.ts'

export interface Msg {
  code: string
  raw: Buffer
}

export class RawClient {
  readonly socket: Socket
  private framer = new Framer(1 << 24)
  private frames: Msg[] = []
  /** every byte received since the login */
  received: Buffer[] = []
  private waiters: (() => void)[] = []
  private loggedIn = false
  closed = false
  private readonly connected: Promise<unknown>

  constructor(gw: Gateway) {
    this.socket = connect({ host: gw.host, port: gw.port })
    this.connected = once(this.socket, 'connect')
    this.socket.on('data', chunk => {
      if (this.loggedIn) this.received.push(chunk)
      for (const f of this.framer.push(chunk)) this.frames.push({ code: String.fromCharCode(f.code), raw: Buffer.from(f.raw) })
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

  /** messages up to and including the next ReadyForQuery; undefined if the socket closed first */
  async untilReady(): Promise<Msg[] | undefined> {
    for (;;) {
      const i = this.frames.findIndex(f => f.code === 'Z')
      if (i >= 0) return this.frames.splice(0, i + 1)
      if (this.closed) return undefined
      await new Promise<void>(r => this.waiters.push(r))
    }
  }

  /** n ReadyForQuery's worth of messages */
  async batches(n: number): Promise<Msg[]> {
    const out: Msg[] = []
    for (let i = 0; i < n; i++) {
      const got = await this.untilReady()
      if (!got) throw new Error(`connection closed after ${out.map(m => m.code).join('')}`)
      out.push(...got)
    }
    return out
  }

  async login(token: string, app = 'raw'): Promise<void> {
    await this.connected
    this.socket.write(serializeStartupMessage({ user: 'agent-1', database: 'app', application_name: app }))
    for (;;) {
      const i = this.frames.findIndex(f => f.code === 'R')
      if (i >= 0) {
        this.frames.splice(0, i + 1)
        break
      }
      await new Promise<void>(r => this.waiters.push(r))
    }
    this.socket.write(serializePasswordMessage(token))
    if (!(await this.untilReady())) throw new Error('login failed')
    this.loggedIn = true
  }

  send(...msgs: Buffer[]): void {
    this.socket.write(Buffer.concat(msgs))
  }

  allReceived(): Buffer {
    return Buffer.concat(this.received)
  }
}

export const codes = (msgs: Msg[]) => msgs.map(m => m.code).join('')

export function errorOf(msgs: Msg[]): Record<string, string> | undefined {
  const e = msgs.find(m => m.code === 'E')
  return e ? parseNoticeFields(new BufferReader(e.raw, 5)) : undefined
}

/** the text values of the DataRows (binary values as latin1) */
export function rowsOf(msgs: Msg[]): (string | null)[][] {
  const out: (string | null)[][] = []
  for (const m of msgs) {
    if (m.code !== 'D') continue
    const r = new BufferReader(m.raw, 5)
    const n = r.int16()
    const row: (string | null)[] = []
    for (let i = 0; i < n; i++) {
      const len = r.int32()
      row.push(len < 0 ? null : r.bytes(len).toString('latin1'))
    }
    out.push(row)
  }
  return out
}

export const parse = (name: string, sql: string) => new BufferWriter().cstring(name).cstring(sql).int16(0).message('P')
export const bind = (portal: string, statement: string, params: (string | null)[] = [], resultFormat = 0) => {
  const w = new BufferWriter().cstring(portal).cstring(statement).int16(0).int16(params.length)
  for (const p of params) {
    if (p === null) w.int32(-1)
    else {
      const b = Buffer.from(p)
      w.int32(b.length).bytes(b)
    }
  }
  return w.int16(1).int16(resultFormat).message('B')
}
export const describe = (kind: 'S' | 'P', name: string) => new BufferWriter().int8(kind.charCodeAt(0)).cstring(name).message('D')
export const execute = (portal: string, maxRows = 0) => new BufferWriter().cstring(portal).int32(maxRows).message('E')
export const close = (kind: 'S' | 'P', name: string) => new BufferWriter().int8(kind.charCodeAt(0)).cstring(name).message('C')
export const query = (sql: string) => new BufferWriter().cstring(sql).message('Q')
export const sync = () => Buffer.from([0x53, 0, 0, 0, 4])

/**
 * A TCP tap in front of Postgres: what the gateway sends upstream, as frontend message codes
 * (after the startup packet), per connection.
 */
export class UpstreamTap {
  private server: Server
  readonly connections: Buffer[][] = []
  port = 0

  constructor(private readonly pg: RunningPostgres) {
    this.server = createServer(client => {
      const chunks: Buffer[] = []
      this.connections.push(chunks)
      const up = connect({ host: pg.host, port: pg.port })
      client.on('data', c => {
        chunks.push(c)
        up.write(c)
      })
      up.on('data', c => client.write(c))
      const end = () => {
        client.destroy()
        up.destroy()
      }
      client.on('close', end)
      up.on('close', end)
      client.on('error', end)
      up.on('error', end)
    })
  }

  async start(): Promise<RunningPostgres> {
    this.server.listen(0, '127.0.0.1')
    await once(this.server, 'listening')
    this.port = (this.server.address() as { port: number }).port
    return { ...this.pg, port: this.port, stop: async () => {} }
  }

  /** the frontend messages of the latest connection: code and raw bytes */
  messages(conn = this.connections.length - 1): Msg[] {
    const all = Buffer.concat(this.connections[conn] ?? [])
    const out: Msg[] = []
    let off = all.length >= 4 ? all.readInt32BE(0) : all.length
    while (off + 5 <= all.length) {
      const len = all.readInt32BE(off + 1)
      if (off + 1 + len > all.length) break
      out.push({ code: String.fromCharCode(all[off]!), raw: all.subarray(off, off + 1 + len) })
      off += 1 + len
    }
    return out
  }

  stop(): Promise<void> {
    return new Promise(r => this.server.close(() => r()))
  }
}
