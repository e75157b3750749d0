// An upstream that cannot be reached, on each protocol: the client gets a protocol-native error
// that says so, and not one byte of what it receives names the upstream's address.
import t from 'tap'
import { connect, createServer, type AddressInfo } from 'node:net'
import { once } from 'node:events'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { parseConfig } from '@portcullis/core'
import { startGateway } from '../src/index.ts'
import { silentLogger } from '../src/log.ts'
import { testEnv } from './helpers.ts'

/** every byte the server sends until it closes, after writing `send(first reply)` in turn */
async function exchange(port: number, steps: Array<(got: Buffer) => Buffer | string | undefined>): Promise<Buffer> {
  const sock = connect({ host: '127.0.0.1', port })
  await once(sock, 'connect')
  const parts: Buffer[] = []
  let step = 0
  const next = (got: Buffer) => {
    const out = steps[step++]?.(got)
    if (out !== undefined) sock.write(out)
  }
  sock.on('data', (c: Buffer) => {
    parts.push(c)
    next(c)
  })
  sock.on('error', () => {})
  next(Buffer.alloc(0))
  await Promise.race([once(sock, 'close'), new Promise((r) => setTimeout(r, 10_000))])
  sock.destroy()
  return Buffer.concat(parts)
}

t.test('an unreachable upstream: Postgres, Redis and HTTP clients get an error that names no address', async (t) => {
  const closed = createServer()
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r))
  const port = (closed.address() as AddressInfo).port
  await new Promise<void>((r) => closed.close(() => r()))

  const env = await testEnv()
  t.teardown(env.cleanup)
  process.env.PORTCULLIS_TEST_ADDR_PW = 'pw'
  t.teardown(() => delete process.env.PORTCULLIS_TEST_ADDR_PW)
  const targets = `
  - { name: pg, protocol: postgres, listen: 127.0.0.1:0, upstream: { host: 127.0.0.1, port: ${port}, database: app, user: app, password: { secret: pw } } }
  - { name: cache, protocol: redis, listen: 127.0.0.1:0, upstream: { host: 127.0.0.1, port: ${port} } }
  - { name: llm, protocol: http, listen: 127.0.0.1:0, upstream: { url: "http://127.0.0.1:${port}" }, options: { profile: openai } }`
  const rules = `
  - { id: read, when: { groups: [agents], class: [session, read] }, action: allow }`
  const yaml = env.yaml({ admin: false, targets, rules }).replace('recording:', 'secrets: { pw: { env: PORTCULLIS_TEST_ADDR_PW } }\nrecording:')
  const gw = await startGateway(parseConfig(yaml, join(env.dir, 'p.yaml')), { log: silentLogger, auditStream: new PassThrough().resume() })
  t.teardown(() => gw.close(100))
  const token = await env.token('agent-1', ['agents'])

  const params = Buffer.from('user\0agent\0database\0postgres\0\0')
  const startup = Buffer.alloc(8)
  startup.writeInt32BE(8 + params.length)
  startup.writeInt32BE(196608, 4)
  const pw = Buffer.from(token + '\0')
  const password = Buffer.alloc(5)
  password[0] = 0x70
  password.writeInt32BE(4 + pw.length, 1)
  const pg = await exchange(gw.targets.pg!.port, [() => Buffer.concat([startup, params]), () => Buffer.concat([password, pw])])
  const redis = await exchange(gw.targets.cache!.port, [() => `*2\r\n$4\r\nAUTH\r\n$${token.length}\r\n${token}\r\n*1\r\n$4\r\nPING\r\n`])
  const http = await exchange(gw.targets.llm!.port, [() => `GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\nConnection: close\r\n\r\n`])

  t.ok(pg.includes(Buffer.from('E')) && pg.toString('latin1').includes('upstream'), 'Postgres: an ErrorResponse about the upstream')
  t.match(redis.toString('latin1'), /^-|\r\n-/m, 'Redis: an error reply')
  t.match(http.toString('latin1'), /^HTTP\/1\.1 502 /, 'HTTP: 502')
  for (const [name, got] of [['postgres', pg], ['redis', redis], ['http', http]] as const) {
    const text = got.toString('latin1')
    t.notOk(text.includes(String(port)), `${name}: the upstream port is not in what the client got`)
    t.notOk(text.includes('127.0.0.1'), `${name}: the upstream host is not in what the client got`)
  }
})
