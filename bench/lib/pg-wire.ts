// A minimal Postgres frontend for the streaming scenario: startup, trust / cleartext / md5 auth, one
// simple Query, then it counts DataRow messages and wire bytes until ReadyForQuery without decoding
// rows, so the client costs next to nothing and MB/s is the path's, not a driver's.
import { connect } from 'node:net'
import { createHash } from 'node:crypto'
import { ScenarioError } from './types.ts'

export type WireResult = { seconds: number; bytes: number; rows: number; mbps: number }

function message(type: string, body: Buffer): Buffer {
  const head = Buffer.alloc(5)
  head.write(type, 0, 'latin1')
  head.writeInt32BE(body.length + 4, 1)
  return Buffer.concat([head, body])
}
const cstr = (s: string) => Buffer.from(s + '\0', 'utf8')

export function streamQuery(o: { host: string; port: number; user: string; password?: string; database: string; sql: string; label: string }): Promise<WireResult> {
  return new Promise((resolve, reject) => {
    const sock = connect(o.port, o.host)
    sock.setNoDelay(true)
    let buf: Buffer = Buffer.alloc(0)
    let t0 = 0n
    let bytes = 0
    let rows = 0
    let querying = false
    const fail = (msg: string) => { sock.destroy(); reject(new ScenarioError(`query via ${o.label}: ${msg}`)) }
    sock.on('connect', () => {
      const params = Buffer.concat([cstr('user'), cstr(o.user), cstr('database'), cstr(o.database), cstr('')])
      const body = Buffer.alloc(4 + params.length)
      body.writeInt32BE(196608, 0)
      params.copy(body, 4)
      const len = Buffer.alloc(4)
      len.writeInt32BE(body.length + 4)
      sock.write(Buffer.concat([len, body]))
    })
    sock.on('error', err => fail(err.message))
    sock.on('close', () => { if (querying) fail('connection closed mid-result') })
    sock.on('data', (chunk: Buffer) => {
      if (querying) bytes += chunk.length
      buf = buf.length ? Buffer.concat([buf, chunk]) : chunk
      let off = 0
      while (buf.length - off >= 5) {
        const type = buf[off]
        const len = buf.readInt32BE(off + 1)
        if (buf.length - off < len + 1) break
        const body = buf.subarray(off + 5, off + 1 + len)
        off += len + 1
        switch (type) {
          case 0x44: // D DataRow: counted, never decoded
            rows++
            break
          case 0x52: { // R Authentication*
            const kind = body.readInt32BE(0)
            if (kind === 3) sock.write(message('p', cstr(o.password ?? '')))
            else if (kind === 5) {
              const inner = createHash('md5').update((o.password ?? '') + o.user).digest('hex')
              const outer = 'md5' + createHash('md5').update(inner).update(body.subarray(4, 8)).digest('hex')
              sock.write(message('p', cstr(outer)))
            } else if (kind !== 0) return fail(`unsupported authentication request ${kind}`)
            break
          }
          case 0x45: // E ErrorResponse
            return fail(body.toString('utf8').replace(/\0/g, ' ').trim().slice(0, 200))
          case 0x5a: // Z ReadyForQuery: first after startup, then at the end of the result
            if (!querying) {
              querying = true
              t0 = process.hrtime.bigint()
              sock.write(message('Q', cstr(o.sql)))
            } else {
              querying = false
              const seconds = Number(process.hrtime.bigint() - t0) / 1e9
              sock.end(message('X', Buffer.alloc(0)))
              return resolve({ seconds, bytes, rows, mbps: bytes / seconds / 1e6 })
            }
            break
        }
      }
      buf = off === buf.length ? Buffer.alloc(0) : buf.subarray(off)
    })
  })
}
