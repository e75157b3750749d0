// The gateway checks its own login to the upstream before it answers AUTH: with no credential it
// probes (a PING, or the lane's CLIENT SETNAME), so an upstream that wants a password gives the
// client one clear error instead of +OK and then NOAUTH on every command.
import t from 'tap'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { startRedis } from '@portcullis/fixtures/redis'
import { RawClient, startGateway } from './harness.ts'

const run = promisify(execFile)

const NOAUTH = /^-ERR Portcullis could not log in to the upstream: NOAUTH Authentication required\. \(no upstream credential is configured for this target\)\r\n$/

for (const multiplex of [true, false]) {
  t.test(`no credential configured and the upstream sets requirepass: a clear error on AUTH (${multiplex ? 'lane' : 'own connection'})`, async t => {
    const redis = await startRedis({})
    t.teardown(() => redis.stop())
    const gw = await startGateway(t, { external: { host: redis.host, port: redis.port }, options: `{ multiplex: ${multiplex} }` })
    const token = await gw.token()
    const first = await RawClient.connect(gw.port)
    first.send(`AUTH ${token}\r\nSET k v\r\nCONFIG SET requirepass now-locked\r\n`)
    t.equal(await first.lines(3), '+OK\r\n+OK\r\n+OK\r\n', 'logged in as default, which needed no password then')
    first.close()
    // the lane closes with its last session; the next session opens a new connection upstream
    const up = await RawClient.connect(redis.port)
    t.teardown(() => up.close())
    up.send('AUTH now-locked\r\n')
    t.equal(await up.lines(1), '+OK\r\n')
    for (let i = 0; i < 100; i++) {
      up.send('CLIENT LIST\r\n')
      const list = await up.read(s => /^\$\d+\r\n[\s\S]*\r\n$/.test(s))
      if (list.split('\n').filter(l => l.startsWith('id=')).length === 1) break
      await new Promise(r => setTimeout(r, 50))
    }
    const c = await RawClient.connect(gw.port)
    t.teardown(() => c.close())
    c.send(`AUTH ${token}\r\nGET k\r\n`)
    const out = await c.read(() => c.closed)
    t.match(out, NOAUTH, 'one error that says the gateway could not log in, then the close')
    t.notMatch(out, new RegExp(`${redis.port}|127\\.0\\.0\\.1`), 'without the upstream address')
    t.ok(c.closed)
    const { stdout, stderr } = await run('redis-cli', ['-p', String(gw.port), '--no-auth-warning', '-a', token, 'PING']).catch(e => e as { stdout: string; stderr: string })
    t.match(stdout + stderr, /Portcullis could not log in to the upstream: NOAUTH/, 'redis-cli shows why')
  })
}

t.test('a credential the upstream refuses gives the client the upstream\'s reason, not +OK', async t => {
  const gw = await startGateway(t, { options: '{ multiplex: false }' })
  const up = await RawClient.connect(gw.redis.port)
  t.teardown(() => up.close())
  up.send(`AUTH gateway ${gw.redis.password}\r\nACL SETUSER gateway resetpass >another-password\r\n`)
  t.equal(await up.lines(2), '+OK\r\n+OK\r\n')
  const c = await RawClient.connect(gw.port)
  t.teardown(() => c.close())
  c.send(`AUTH ${await gw.token()}\r\n`)
  const out = await c.read(() => c.closed)
  t.equal(out, '-ERR Portcullis could not log in to the upstream: WRONGPASS invalid username-password pair or user is disabled.\r\n')
  t.notMatch(out, /gw-secret-pw|another-password/, 'no password in the error')
})

t.test('the lane checks its login too', async t => {
  const gw = await startGateway(t)
  const up = await RawClient.connect(gw.redis.port)
  t.teardown(() => up.close())
  up.send(`AUTH gateway ${gw.redis.password}\r\nACL SETUSER gateway off\r\n`)
  t.equal(await up.lines(2), '+OK\r\n+OK\r\n')
  const c = await RawClient.connect(gw.port)
  t.teardown(() => c.close())
  c.send(`AUTH ${await gw.token()}\r\nGET x\r\n`)
  t.equal(await c.read(() => c.closed), '-ERR Portcullis could not log in to the upstream: WRONGPASS invalid username-password pair or user is disabled.\r\n')
})
