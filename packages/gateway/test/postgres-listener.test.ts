// The gateway's own listeners in front of a real Postgres 15, plain and sniffing: the sniffing stage
// reads the first bytes before the codec does, and must neither answer what Postgres would close on
// silently nor lose a byte it read ahead, however the client's bytes are cut.
import t from 'tap'
import { connect, type Socket } from 'node:net'
import { once } from 'node:events'
import { PassThrough } from 'node:stream'
import pg from 'pg'
import { startPostgres } from '@portcullis/fixtures/postgres'
import { startGateway } from '../src/index.ts'
import { silentLogger } from '../src/log.ts'
import { testEnv } from './helpers.ts'

const quiet = { log: silentLogger, auditStream: new PassThrough().resume() }
const PASSWORD_ENV = 'PORTCULLIS_GW_TEST_PG_PASSWORD'

/** connects, runs `steps`, and keeps every byte the server sends until its EOF */
async function exchange(port: number, steps: (s: Socket) => Promise<void> | void): Promise<{ bytes: Buffer; ended: boolean }> {
  const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true })
  s.setNoDelay(true)
  await once(s, 'connect')
  const chunks: Buffer[] = []
  let ended = false
  const finished = new Promise<void>((resolve) => {
    s.on('end', () => {
      ended = true
      resolve()
    })
    s.on('close', () => resolve())
  })
  s.on('error', () => undefined)
  s.on('data', (c: Buffer) => chunks.push(c))
  await steps(s)
  await finished
  s.destroy()
  return { bytes: Buffer.concat(chunks), ended }
}

/** message codes and bytes, BackendKeyData (random per connection) left out */
function comparable(bytes: Buffer): string[] {
  const out: string[] = []
  for (let off = 0; off + 5 <= bytes.length; ) {
    const end = off + 1 + bytes.readInt32BE(off + 1)
    out.push(bytes[off] === 0x4b /* K */ ? 'K' : bytes.toString('latin1', off, end))
    off = end
  }
  return out
}

function message(code: string, body: Buffer): Buffer {
  const head = Buffer.alloc(5)
  head.write(code, 0, 'latin1')
  head.writeInt32BE(4 + body.length, 1)
  return Buffer.concat([head, body])
}

const cstring = (s: string) => Buffer.from(s + '\0')

function startupMessage(params: Record<string, string>): Buffer {
  const body = Buffer.concat([Buffer.from([0, 3, 0, 0]), ...Object.entries(params).flatMap(([k, v]) => [cstring(k), cstring(v)]), Buffer.from([0])])
  const len = Buffer.alloc(4)
  len.writeInt32BE(4 + body.length)
  return Buffer.concat([len, body])
}

const TERMINATE = Buffer.from([0x58, 0, 0, 0, 4])

t.test('postgres through the gateway listeners, plain and sniffing', async (t) => {
  const upstream = await startPostgres()
  t.teardown(() => upstream.stop())
  process.env[PASSWORD_ENV] = upstream.password
  const env = await testEnv()
  t.teardown(env.cleanup)
  const up = `{ host: ${upstream.host}, port: ${upstream.port}, database: ${upstream.database}, user: ${upstream.user}, password: { secret: pg } }`
  // no handshake timeout to close a connection the gateway forgot: it must close on its own
  const limits = '{ handshakeTimeout: 1h }'
  const targets = `
  - { name: pg, protocol: postgres, listen: 127.0.0.1:0, upstream: ${up}, limits: ${limits} }
  - { name: sniffed, protocol: postgres, listen: 127.0.0.1:0, upstream: ${up}, limits: ${limits}, options: { sniff: true } }`
  const yaml = env.yaml({ admin: false, targets }) + `\nsecrets:\n  pg: { env: ${PASSWORD_ENV} }\n`
  const { parseConfig } = await import('@portcullis/core')
  const gw = await startGateway(parseConfig(yaml, `${env.dir}/portcullis.yaml`), quiet)
  t.teardown(() => gw.close(100))
  const token = await env.token('ann', ['agents'])
  const direct = new pg.Client({ host: upstream.host, port: upstream.port, user: upstream.user, database: upstream.database, password: upstream.password })
  await direct.connect()
  t.teardown(() => direct.end())

  const session = Buffer.concat([
    startupMessage({ user: 'ann', database: 'app', application_name: 'gw-listener' }),
    message('p', cstring(token)),
    message('Q', cstring(`select 1 as one, 'a text with FROM in it' as t`)),
    message('Q', cstring('select n from generate_series(1, 5) n')),
    TERMINATE,
  ])

  for (const name of ['pg', 'sniffed']) {
    const port = gw.targets[name]!.port
    await t.test(`${name}: before the StartupMessage the connection closes without a word, as Postgres does`, async (t) => {
      const cases: [string, (s: Socket) => void][] = [
        ['Terminate first', (s) => void s.write(TERMINATE)],
        ['FIN with nothing sent', (s) => void s.end()],
        ['half a length word, then FIN', (s) => void s.end(Buffer.from([0, 0]))],
        ['half a StartupMessage, then FIN', (s) => void s.end(session.subarray(0, 11))],
      ]
      for (const [what, steps] of cases) {
        const got = await exchange(port, steps)
        t.ok(got.ended, `${what}: closed`)
        t.equal(got.bytes.length, 0, `${what}: not a byte`)
      }
    })

    await t.test(`${name}: the whole session, however it is cut, gets every answer and then EOF`, async (t) => {
      const whole = await exchange(port, (s) => void s.write(session))
      const reference = comparable(whole.bytes)
      t.equal(reference.filter((m) => m[0] === 'Z').length, 3, 'login and both queries answered')
      t.ok(whole.ended, 'then EOF')
      for (let size = 1; size <= 13; size++) {
        const got = await exchange(port, async (s) => {
          for (let off = 0; off < session.length; off += size) {
            s.write(session.subarray(off, off + size))
            await new Promise((r) => setImmediate(r))
          }
        })
        t.same(comparable(got.bytes), reference, `${size}-byte chunks`)
      }
      // the whole session and the client's FIN together, Terminate left out: the same answers
      const fin = await exchange(port, (s) => void s.end(session.subarray(0, session.length - TERMINATE.length)))
      t.same(comparable(fin.bytes), reference, 'ended by FIN in the same write')
    })
  }

  let left = -1
  for (let i = 0; i < 100 && left !== 0; i++) {
    left = (await direct.query(`select count(*)::int as n from pg_stat_activity where application_name = 'gw-listener'`)).rows[0].n
    if (left !== 0) await new Promise((r) => setTimeout(r, 50))
  }
  t.equal(left, 0, 'no upstream backend left')
})
