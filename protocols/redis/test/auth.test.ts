import t from 'tap'
import { RawClient, startGateway } from './harness.ts'

t.test('commands before AUTH get NOAUTH; a token authenticates', async t => {
  const gw = await startGateway(t)
  const c = await RawClient.connect(gw.port)
  t.teardown(() => c.close())
  c.send('GET k\r\n')
  t.equal(await c.lines(1), '-NOAUTH Authentication required.\r\n')
  c.send('PING\r\n')
  t.equal(await c.lines(1), '-NOAUTH Authentication required.\r\n')
  c.send(`AUTH ${await gw.token()}\r\n`)
  t.equal(await c.lines(1), '+OK\r\n')
  c.send('SET k v\r\nGET k\r\nACL WHOAMI\r\n')
  t.equal(await c.lines(4), '+OK\r\n$1\r\nv\r\n$7\r\ngateway\r\n', 'the upstream sees the gateway\'s own user')
})

t.test('a bad token is WRONGPASS without echoing it', async t => {
  const gw = await startGateway(t)
  const c = await RawClient.connect(gw.port)
  t.teardown(() => c.close())
  c.send('AUTH someone not-a-real-token-xyz\r\n')
  const reply = await c.lines(1)
  t.match(reply, /^-WRONGPASS /)
  t.notMatch(reply, /not-a-real-token-xyz/)
})

t.test('PING before AUTH when the target allows it', async t => {
  const gw = await startGateway(t, { options: '{ pingBeforeAuth: true }' })
  const c = await RawClient.connect(gw.port)
  t.teardown(() => c.close())
  c.send('PING\r\n')
  t.equal(await c.lines(1), '+PONG\r\n')
})

t.test('HELLO 3 AUTH user token speaks RESP3 end to end', async t => {
  const gw = await startGateway(t)
  const c = await RawClient.connect(gw.port)
  t.teardown(() => c.close())
  c.send('HELLO 3\r\n')
  t.match(await c.lines(1), /^-NOAUTH HELLO must be called/)
  c.send(`HELLO 3 AUTH agent ${await gw.token()} SETNAME worker-1\r\n`)
  const hello = await c.read(s => s.includes('modules'))
  t.match(hello, /^%7\r\n/)
  t.match(hello, /\$5\r\nproto\r\n:3\r\n/)
  c.send('HSET h a 1\r\nHGETALL h\r\nCLIENT GETNAME\r\n')
  t.equal(await c.lines(7), ':1\r\n%1\r\n$1\r\na\r\n$1\r\n1\r\n$8\r\nworker-1\r\n')
})

t.test('an expired token must AUTH again', async t => {
  const gw = await startGateway(t)
  const c = await RawClient.connect(gw.port)
  t.teardown(() => c.close())
  // a few seconds of life, so a loaded machine still uses it before it ends; then wait for its end
  const short = await gw.token('agent-1', ['agents'], 3)
  const exp = (JSON.parse(Buffer.from(short.split('.')[1]!, 'base64url').toString()) as { exp: number }).exp
  c.send(`AUTH ${short}\r\nSET a 1\r\n`)
  t.equal(await c.lines(2), '+OK\r\n+OK\r\n')
  await new Promise(r => setTimeout(r, Math.max(0, exp * 1000 - Date.now()) + 100))
  c.send('GET a\r\n')
  t.equal(await c.lines(1), '-ERR token expired; AUTH again\r\n')
  c.send(`AUTH ${await gw.token('agent-1', ['agents'])}\r\nGET a\r\n`)
  t.equal(await c.lines(3), '+OK\r\n$1\r\n1\r\n')
})

t.test('AUTH and HELLO credentials never reach the audit log', async t => {
  const gw = await startGateway(t)
  const token = await gw.token()
  const c = await RawClient.connect(gw.port)
  t.teardown(() => c.close())
  c.send(`HELLO 2 AUTH agent ${token}\r\nAUTH ${token}\r\nSET x y\r\n`)
  await c.read(s => s.endsWith('+OK\r\n+OK\r\n'))
  const text = JSON.stringify(gw.audit())
  t.notOk(text.includes(token))
  t.notOk(text.includes('gw-secret-pw'))
  t.match(gw.audit().find(e => e.statement === 'SET x ?'), { class: 'write', decision: 'allow', rule: 'agents-all' })
})

t.test('a session killed by an admin ends with an error and a close', async t => {
  const gw = await startGateway(t)
  const c = await RawClient.connect(gw.port)
  t.teardown(() => c.close())
  c.send(`AUTH ${await gw.token()}\r\nPING\r\n`)
  t.equal(await c.lines(2), '+OK\r\n+PONG\r\n')
  const [session] = gw.core.sessions()
  t.ok(gw.core.kill(session!.id, 'killed by admin'))
  t.match(await c.read(() => c.closed), /^-ERR session ended: /)
  t.ok(c.closed)
})

t.test('an idle client is closed after the idle timeout; a blocked one is not idle', async t => {
  const gw = await startGateway(t, { limits: '{ idleTimeout: 400ms }' })
  const token = await gw.token()
  const idle = await RawClient.connect(gw.port)
  const blocked = await RawClient.connect(gw.port)
  t.teardown(() => { idle.close(); blocked.close() })
  idle.send(`AUTH ${token}\r\n`)
  blocked.send(`AUTH ${token}\r\nBLPOP q 1.2\r\n`)
  t.equal(await idle.lines(1), '+OK\r\n')
  t.equal(await idle.read(() => idle.closed), '-ERR idle timeout\r\n')
  t.equal(await blocked.lines(2), '+OK\r\n*-1\r\n', 'BLPOP outlived the idle timeout')
})

t.test('tokens sent mid-pipeline (AUTH, HELLO … AUTH) never reach the recording', async t => {
  const gw = await startGateway(t)
  const [first, second, third] = [await gw.token(), await gw.token(), await gw.token()]
  const c = await RawClient.connect(gw.port)
  // one read: the recorder gets this batch's bytes with the two token-carrying commands cut out
  c.send(`AUTH ${first}\r\nSET a 1\r\nAUTH ${second}\r\nHELLO 2 AUTH agent ${third}\r\nGET a\r\n`)
  await c.read(s => s.endsWith('$1\r\n1\r\n'))
  c.close()
  await new Promise(r => setTimeout(r, 200))
  const { readdirSync, readFileSync } = await import('node:fs')
  const files = readdirSync(gw.recordings, { recursive: true }).map(String).filter(f => f.endsWith('.pcr'))
  const bytes = Buffer.concat(files.map(f => readFileSync(`${gw.recordings}/${f}`)))
  t.ok(bytes.includes('SET'), 'the commands around them are recorded')
  for (const token of [first, second, third]) t.equal(bytes.indexOf(token.split('.')[2]!), -1, 'no token signature in the recording')
})
