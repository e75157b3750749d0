// A hand-driven Postgres client for tests that assert on every byte the client receives.
import { connect, type Socket } from 'node:net'
import { once } from 'node:events'
import { serializeParse, serializePasswordMessage, serializeStartupMessage } from '../src/frontend.ts'
import { BufferWriter } from '../src/buffer-writer.ts'
import { Framer } from '../src/framer.ts'
import { BufferReader } from '../src/buffer-reader.ts'
import { parseNoticeFields } from '../src/backend.ts'
import type { Gateway } from './harness.ts'

export interface RawFrame {
  code: string
  raw: Buffer
}

export class RawSession {
  readonly socket: Socket
  private readonly framer = new Framer(1 << 24)
  /** every frame received, in order (none is consumed by `until`) */
  readonly received: RawFrame[] = []
  private next = 0
  private waiters: (() => void)[] = []
  closed = false
  readonly connected: Promise<unknown>

  constructor(gw: Gateway) {
    this.socket = connect({ host: gw.host, port: gw.port })
    this.connected = once(this.socket, 'connect')
    this.socket.on('data', chunk => {
      for (const f of this.framer.push(chunk)) this.received.push({ code: String.fromCharCode(f.code), raw: Buffer.from(f.raw) })
      this.wake()
    })
    this.socket.on('close', () => {
      this.closed = true
      this.wake()
    })
    this.socket.on('error', () => {})
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w()
  }

  /** frames since the last call up to and including the first with one of the codes; undefined if the socket closed first */
  async until(codes: string): Promise<RawFrame[] | undefined> {
    for (;;) {
      const i = this.received.findIndex((f, k) => k >= this.next && codes.includes(f.code))
      if (i >= 0) {
        const got = this.received.slice(this.next, i + 1)
        this.next = i + 1
        return got
      }
      if (this.closed) return undefined
      await new Promise<void>(r => this.waiters.push(r))
    }
  }

  /** every frame left once the socket has closed */
  async rest(): Promise<RawFrame[]> {
    while (!this.closed) await new Promise<void>(r => this.waiters.push(r))
    const got = this.received.slice(this.next)
    this.next = this.received.length
    return got
  }

  /** StartupMessage with `parameters`, then the token; resolves with what came up to ReadyForQuery or the error */
  async start(token: string, parameters: Record<string, string> = {}): Promise<RawFrame[]> {
    await this.connected
    this.socket.write(serializeStartupMessage({ user: 'agent-1', database: 'app', ...parameters }))
    const asked = await this.until('RE')
    if (!asked || asked.at(-1)!.code === 'E') return asked ?? []
    this.socket.write(serializePasswordMessage(token))
    return (await this.until('ZE')) ?? []
  }
}

export function errorFields(frame: RawFrame | undefined): Record<string, string> {
  return frame ? parseNoticeFields(new BufferReader(frame.raw, 5)) : {}
}

/** name → value of the ParameterStatus frames among `frames` */
export function parameterStatus(frames: RawFrame[]): Record<string, string> {
  const out: Record<string, string> = {}
  for (const f of frames) {
    if (f.code !== 'S') continue
    const r = new BufferReader(f.raw, 5)
    const name = r.cstring()
    out[name] = r.cstring()
  }
  return out
}

/** Parse (unnamed) / Bind (unnamed, no parameters) / Execute: one statement of an extended batch */
export function extendedStatement(sql: string): Buffer {
  const bind = new BufferWriter().cstring('').cstring('').int16(0).int16(0).int16(0).message('B')
  const execute = new BufferWriter().cstring('').int32(0).message('E')
  return Buffer.concat([serializeParse('', sql), bind, execute])
}

export const SYNC = Buffer.from([0x53, 0, 0, 0, 4])

/** the text of every DataRow column among `frames` (NULL as 'NULL') */
export function dataRows(frames: RawFrame[]): string[][] {
  const out: string[][] = []
  for (const f of frames) {
    if (f.code !== 'D') continue
    const r = new BufferReader(f.raw, 5)
    const n = r.int16()
    const row: string[] = []
    for (let i = 0; i < n; i++) {
      const len = r.int32()
      row.push(len < 0 ? 'NULL' : r.bytes(len).toString())
    }
    out.push(row)
  }
  return out
}
