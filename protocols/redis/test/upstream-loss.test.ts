// When Redis drops a connection the gateway behaves as Redis would towards its own client: only
// commands in flight get an error; a session with nothing in flight is closed without a word (its
// own connection) or carries on over a new lane (the shared one). And a client that half-closes, or
// sends QUIT, gets every reply due first.
import t from 'tap'
import { connect, type Socket } from 'node:net'
import { once } from 'node:events'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'
import { RawClient, startGateway, type Gateway } from './harness.ts'

const run = promisify(execFile)

/** a direct connection to the upstream, logged in as the gateway's user */
async function observer(gw: Gateway): Promise<RawClient> {
  const c = await RawClient.connect(gw.redis.port)
  c.send(`AUTH gateway ${gw.redis.password}\r\nCLIENT SETNAME test-observer\r\n`)
  const ok = await c.lines(2)
  if (ok !== '+OK\r\n+OK\r\n') throw new Error(`observer login: ${ok}`)
  return c
}

/** the upstream's client connections other than the observer's */
async function upstreamClients(up: RawClient): Promise<{ id: string; name: string; db: string }[]> {
  up.send('CLIENT LIST\r\n')
  const out = await up.read(x => /^\$(\d+)\r\n/.test(x) && x.length >= Number(/^\$(\d+)/.exec(x)![1]) + 4)
  return out
    .split('\n')
    .filter(l => l.startsWith('id='))
    .map(l => Object.fromEntries(l.trim().split(' ').map(kv => kv.split('=') as [string, string])))
    .filter(c => c.name !== 'test-observer')
    .map(c => ({ id: c.id!, name: c.name ?? '', db: c.db! }))
}

async function kill(up: RawClient, id: string): Promise<void> {
  up.send(`CLIENT KILL ID ${id}\r\n`)
  const n = await up.lines(1)
  if (n !== ':1\r\n') throw new Error(`CLIENT KILL ID ${id}: ${n}`)
}

/** lets the gateway see the upstream's FIN before the next command is sent */
const settle = (): Promise<void> => new Promise(r => setTimeout(r, 200))

t.test('an idle session on the lane is not sent a stray error when the lane dies; its next command gets a new lane', async t => {
  const gw = await startGateway(t)
  const token = await gw.token()
  const up = await observer(gw)
  const raw = await RawClient.connect(gw.port)
  const io = new Redis({ port: gw.port, password: token, lazyConnect: true })
  t.teardown(() => { raw.close(); up.close(); io.disconnect() })
  await io.connect()
  raw.send(`AUTH ${token}\r\nSET k v\r\n`)
  t.equal(await raw.lines(2), '+OK\r\n+OK\r\n')
  t.equal(await io.get('k'), 'v')
  const lane = (await upstreamClients(up)).find(c => c.name === 'portcullis-lane')!
  t.ok(lane, 'both share the lane')
  await kill(up, lane.id)
  await settle()
  raw.send('GET k\r\n')
  t.equal(await raw.lines(2), '$1\r\nv\r\n', 'the next reply is the reply to the next command, no error before it')
  t.notOk(raw.closed, 'the session goes on')
  t.equal(await io.get('k'), 'v', 'ioredis gets its value, no error')
  const lanes = (await upstreamClients(up)).filter(c => c.name === 'portcullis-lane')
  t.equal(lanes.length, 1)
  t.not(lanes[0]!.id, lane.id, 'over a new lane')
})

t.test('a session whose own upstream connection is dropped while idle is closed without a word', async t => {
  const gw = await startGateway(t)
  const token = await gw.token()
  const up = await observer(gw)
  const raw = await RawClient.connect(gw.port)
  t.teardown(() => { raw.close(); up.close() })
  // SELECT 1 binds connection state: the session gets a connection of its own
  raw.send(`AUTH ${token}\r\nSELECT 1\r\nSET k v\r\n`)
  t.equal(await raw.lines(3), '+OK\r\n+OK\r\n+OK\r\n')
  const own = (await upstreamClients(up)).find(c => c.db === '1')!
  t.ok(own, 'its own connection, on db 1')
  await kill(up, own.id)
  t.equal(await raw.read(() => raw.closed), '', 'not a byte before the close')
  t.ok(raw.closed)
})

t.test('commands in flight when the own connection is dropped get one error each, in their place', async t => {
  const gw = await startGateway(t)
  const token = await gw.token()
  const up = await observer(gw)
  const raw = await RawClient.connect(gw.port)
  const pusher = await RawClient.connect(gw.redis.port)
  t.teardown(() => { raw.close(); up.close(); pusher.close() })
  raw.send(`AUTH ${token}\r\nSELECT 1\r\n`)
  t.equal(await raw.lines(2), '+OK\r\n+OK\r\n')
  // BLPOP waits upstream: it is in flight when the connection goes, and so is the PING behind it
  raw.send('BLPOP nothing 0\r\nPING\r\n')
  await settle()
  const own = (await upstreamClients(up)).find(c => c.db === '1')!
  await kill(up, own.id)
  t.equal(await raw.read(() => raw.closed), '-ERR upstream connection lost\r\n-ERR upstream connection lost\r\n')
  t.ok(raw.closed)
})

t.test('redis-py and ioredis reconnect after the upstream drops their idle connection', async t => {
  const gw = await startGateway(t)
  const token = await gw.token()
  // redis-py: db=1 puts the session on a connection of its own, the default on the lane. After the
  // kill the socket must show EOF, not a stray error, and the next command must simply work.
  const script = `
import redis, socket, sys, time
gw, upstream, pw, token = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
up = redis.Redis(host='127.0.0.1', port=upstream, username='gateway', password=pw)
own = redis.Redis(host='127.0.0.1', port=gw, username='agent', password=token, db=1)
lane = redis.Redis(host='127.0.0.1', port=gw, username='agent', password=token)
own.set('py', 'own'); lane.set('py', 'lane')
for c in up.client_list():
    if c['db'] == '1' or c['name'] == 'portcullis-lane':
        up.client_kill_filter(_id=c['id'])
time.sleep(0.2)
s = own.connection_pool._available_connections[0]._sock
s.settimeout(5)
print(repr(s.recv(64, socket.MSG_PEEK)))
print(own.get('py'), lane.get('py'))
`
  const { stdout } = await run('/usr/bin/python3', ['-c', script, String(gw.port), String(gw.redis.port), gw.redis.password!, token])
  t.equal(stdout, "b''\nb'own' b'lane'\n", 'EOF on the dropped connection; both clients carry on')

  const up = await observer(gw)
  const io = new Redis({ port: gw.port, password: token, db: 1, lazyConnect: true })
  t.teardown(() => { up.close(); io.disconnect() })
  await io.connect()
  await io.set('io', 'x')
  const own = (await upstreamClients(up)).find(c => c.db === '1')!
  const closed = once(io, 'close')
  await kill(up, own.id)
  await closed
  t.equal(await io.get('io'), 'x', 'ioredis reconnects (SELECT 1 again) without an error')
})

async function halfClose(port: number, data: string): Promise<string> {
  const sock: Socket = connect({ host: '127.0.0.1', port, allowHalfOpen: true })
  await once(sock, 'connect')
  let got = ''
  sock.on('data', d => (got += d.toString('latin1')))
  sock.end(data)
  await once(sock, 'close')
  return got
}

t.test('a client that half-closes after sending gets every reply, then the connection closes', async t => {
  const gw = await startGateway(t)
  const token = await gw.token()
  const gets = 'GET hc\r\n'.repeat(50)
  t.equal(await halfClose(gw.port, `AUTH ${token}\r\nSET hc v\r\n${gets}`), '+OK\r\n+OK\r\n' + '$1\r\nv\r\n'.repeat(50), 'on the lane')
  t.equal(await halfClose(gw.port, `AUTH ${token}\r\nSELECT 2\r\nSET hc w\r\n${gets}`), '+OK\r\n+OK\r\n+OK\r\n' + '$1\r\nw\r\n'.repeat(50), 'on its own connection')
  const { stdout } = await run('sh', ['-c', `printf 'SET cli 1\\nGET cli\\n' | redis-cli -p ${gw.port} --no-auth-warning -a "$0"`, token])
  t.equal(stdout, 'OK\n1\n', 'redis-cli reading commands from a pipe')
})

t.test('QUIT answers what came before, replies +OK and closes; what came after it is not run', async t => {
  const gw = await startGateway(t)
  const token = await gw.token()
  const c = await RawClient.connect(gw.port)
  t.teardown(() => c.close())
  c.send(`AUTH ${token}\r\nSET before 1\r\nQUIT\r\nSET after 1\r\n`)
  t.equal(await c.read(() => c.closed), '+OK\r\n+OK\r\n+OK\r\n')
  t.ok(c.closed)
  const up = await observer(gw)
  t.teardown(() => up.close())
  up.send('EXISTS before after\r\n')
  t.equal(await up.lines(1), ':1\r\n', 'the SET after QUIT never reached Redis')
})
