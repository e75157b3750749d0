import t from 'tap'
import { connect } from 'node:net'
import { once } from 'node:events'
import { RawClient, startGateway, type Gateway } from './harness.ts'

// connections the upstream redis-server holds right now (besides the one asking)
async function upstreamClients(gw: Gateway): Promise<number> {
  const s = connect({ host: gw.redis.host, port: gw.redis.port })
  await once(s, 'connect')
  const c = new RawClient(s)
  c.send(`AUTH gateway ${gw.redis.password}\r\nINFO clients\r\n`)
  const out = await c.read(x => x.includes('connected_clients'))
  c.close()
  return Number(/connected_clients:(\d+)/.exec(out)![1]) - 1
}

async function settle(gw: Gateway, want: number): Promise<number> {
  let n = -1
  for (let i = 0; i < 50; i++) {
    n = await upstreamClients(gw)
    if (n === want) break
    await new Promise(r => setTimeout(r, 50))
  }
  return n
}

const cases: [string, string | ((token: string) => string), RegExp][] = [
  ['a bulk of the wrong type', '*2\r\n$3\r\nGET\r\n:1\r\n', /^-ERR Protocol error: expected '\$', got ':'\r\n$/],
  ['a bad multibulk length', '*abc\r\n', /^-ERR Protocol error: invalid multibulk length\r\n$/],
  ['a bulk over maxMessageBytes', '*2\r\n$3\r\nSET\r\n$5000\r\n', /^-ERR Protocol error: bulk length 5000 over the limit of 1024\r\n$/],
  ['an array over the element limit', '*2000000\r\n', /^-ERR Protocol error: multibulk length 2000000 over the limit/],
  ['unbalanced quotes inline', 'SET "a b\r\n', /^-ERR Protocol error: unbalanced quotes in request\r\n$/],
  ['an inline line over 64 KiB', 'GET ' + 'x'.repeat(70_000), /^-ERR Protocol error: too big inline request\r\n$/],
]

t.test('malformed input gets a protocol error and a close, before and after AUTH', async t => {
  const gw = await startGateway(t, { limits: '{ maxMessageBytes: 1024 }' })
  const token = await gw.token()
  for (const [name, input, want] of cases) {
    for (const authed of [false, true]) {
      const c = await RawClient.connect(gw.port)
      if (authed) {
        c.send(`AUTH ${token}\r\nSET ok 1\r\n`)
        t.equal(await c.lines(2), '+OK\r\n+OK\r\n')
      }
      c.send(typeof input === 'string' ? input : input(token))
      const out = await c.read(() => c.closed)
      t.match(out, want, `${name}${authed ? ' (authenticated)' : ''}`)
      t.ok(c.closed, 'the connection is closed')
    }
  }
  t.equal(await settle(gw, 0), 0, 'no upstream connection is left behind')
})

t.test('replies before a protocol error still come, in order', async t => {
  const gw = await startGateway(t)
  const c = await RawClient.connect(gw.port)
  c.send(`AUTH ${await gw.token()}\r\nSET a 1\r\nGET a\r\n*1\r\n$x\r\n`)
  const out = await c.read(() => c.closed)
  t.equal(out, '+OK\r\n+OK\r\n$1\r\n1\r\n-ERR Protocol error: invalid bulk length\r\n')
})

t.test('a client that disconnects mid-command or mid-approval leaves nothing upstream', async t => {
  // one upstream connection per client here, to count them (a shared lane: multiplex.test.ts)
  const gw = await startGateway(t, { options: '{ multiplex: false }', rules: `
  - { id: rw, when: { class: [read, write] }, action: allow }
  - { id: del, when: { class: [delete] }, action: approve, approvers: [ops] }` })
  const token = await gw.token()
  const a = await RawClient.connect(gw.port)
  a.send(`AUTH ${token}\r\nSET k v\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nonly-part`)
  await a.lines(2)
  const b = await RawClient.connect(gw.port)
  b.send(`AUTH ${token}\r\nDEL k\r\n`)
  await b.lines(1)
  while (!gw.core.approvals.list().some(r => r.status === 'pending')) await new Promise(r => setTimeout(r, 20))
  t.equal(await settle(gw, 2), 2)
  a.close()
  b.close()
  t.equal(await settle(gw, 0), 0)
  for (let i = 0; i < 50 && gw.core.approvals.list().some(r => r.status === 'pending'); i++) await new Promise(r => setTimeout(r, 20))
  t.notOk(gw.core.approvals.list().some(r => r.status === 'pending'), 'the pending approval was withdrawn')
})

t.test('garbage from a client that never authenticates does not reach the upstream', async t => {
  const gw = await startGateway(t)
  const c = await RawClient.connect(gw.port)
  c.send('FLUSHALL\r\nSET a b\r\n*1\r\n$4\r\nPING\r\n')
  t.equal(await c.lines(3), '-NOAUTH Authentication required.\r\n'.repeat(3))
  t.equal(await upstreamClients(gw), 0, 'no upstream connection before AUTH')
  c.close()
})

t.test('an upstream that is down ends the session with an error instead of hanging', async t => {
  const gw = await startGateway(t)
  await gw.redis.stop()
  const c = await RawClient.connect(gw.port)
  t.teardown(() => c.close())
  c.send(`AUTH ${await gw.token()}\r\nGET a\r\n`)
  t.equal(await c.read(() => c.closed), '-ERR upstream connection lost\r\n')
  t.ok(c.closed)
})
