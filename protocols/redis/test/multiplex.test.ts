import t from 'tap'
import { connect } from 'node:net'
import { once } from 'node:events'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { readdirSync, readFileSync } from 'node:fs'
import { Redis } from 'ioredis'
import { RawClient, startGateway, type Gateway } from './harness.ts'

const run = promisify(execFile)

/** the upstream's view: its client connections (the gateway's lane is named portcullis-lane) */
async function upstreamClients(gw: Gateway): Promise<{ id: string; name: string; db: string; cmd: string }[]> {
  const s = connect({ host: gw.redis.host, port: gw.redis.port })
  await once(s, 'connect')
  const c = new RawClient(s)
  c.send(`AUTH gateway ${gw.redis.password}\r\nCLIENT SETNAME test-observer\r\nCLIENT LIST\r\n`)
  const out = await c.read(x => /\+OK\r\n\+OK\r\n\$\d+\r\n[\s\S]*\r\n$/.test(x) && x.split('\r\n').length >= 5)
  c.close()
  return out
    .split('\n')
    .filter(l => l.startsWith('id='))
    .map(l => Object.fromEntries(l.trim().split(' ').map(kv => kv.split('=') as [string, string])))
    .filter(c => c.name !== 'test-observer')
    .map(c => ({ id: c.id!, name: c.name ?? '', db: c.db!, cmd: c.cmd! }))
}

/** a direct connection to the upstream, logged in as the gateway's user */
async function observer(gw: Gateway): Promise<RawClient> {
  const s = connect({ host: gw.redis.host, port: gw.redis.port })
  await once(s, 'connect')
  const c = new RawClient(s)
  c.send(`AUTH gateway ${gw.redis.password}\r\n`)
  await c.lines(1)
  return c
}

const client = async (gw: Gateway, token: string): Promise<Redis> => {
  const r = new Redis({ port: gw.port, password: token, lazyConnect: true, enableReadyCheck: false, maxRetriesPerRequest: 0 })
  await r.connect()
  return r
}

t.test('many clients share one upstream connection and each gets its own replies in order', async t => {
  const gw = await startGateway(t)
  const token = await gw.token()
  const clients = await Promise.all(Array.from({ length: 12 }, () => client(gw, token)))
  t.teardown(() => clients.forEach(c => c.disconnect()))
  const results = await Promise.all(
    clients.map(async (c, i) => {
      const p = c.pipeline()
      for (let j = 0; j < 100; j++) p.set(`c${i}:${j}`, `v${i}.${j}`).get(`c${i}:${j}`).incr(`n${i}`)
      return (await p.exec())!
    }),
  )
  results.forEach((res, i) => {
    const gets = res.filter((_, k) => k % 3 === 1).map(([, v]) => v)
    t.same(gets, Array.from({ length: 100 }, (_, j) => `v${i}.${j}`), `client ${i} got its own values, in order`)
    t.equal(res[res.length - 1]![1], 100)
  })
  const ups = await upstreamClients(gw)
  t.equal(ups.length, 1, 'one upstream connection for twelve clients')
  t.equal(ups[0]!.name, 'portcullis-lane')
  clients.forEach(c => c.disconnect())
  let left = 1
  for (let i = 0; i < 100 && left > 0; i++) {
    await new Promise(r => setTimeout(r, 50))
    left = (await upstreamClients(gw)).length
  }
  t.equal(left, 0, 'the lane closes when its last client leaves')
})

t.test('MULTI, SELECT, BLPOP and SUBSCRIBE move their client off the lane; the others keep going', async t => {
  const gw = await startGateway(t)
  const token = await gw.token()
  const [plain, tx, db, blocker, sub, pusher] = await Promise.all(Array.from({ length: 6 }, () => client(gw, token)))
  t.teardown(() => [plain, tx, db, blocker, sub, pusher].forEach(c => c!.disconnect()))
  await Promise.all([plain, tx, db, blocker, sub, pusher].map(c => c!.set('shared', 'x')))
  t.equal((await upstreamClients(gw)).length, 1, 'all on the lane to begin with')

  // replies stay in request order across the move: the SET on the lane is answered before MULTI's
  const raw = await RawClient.connect(gw.port)
  t.teardown(() => raw.close())
  raw.send(`AUTH ${token}\r\n`)
  await raw.lines(1)
  raw.send('SET t 1\r\nMULTI\r\nINCR t\r\nGET t\r\nEXEC\r\n')
  t.equal(await raw.lines(8), '+OK\r\n+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n:2\r\n$1\r\n2\r\n')
  t.equal(await tx!.eval("return redis.call('GET', KEYS[1])", 1, 't'), '2', 'a script runs on the lane')
  t.same(await tx!.multi().incr('t').get('t').exec(), [[null, 3], [null, '3']])

  t.equal(await db!.select(2), 'OK')
  await db!.set('shared', 'in-db-2')
  t.equal(await db!.get('shared'), 'in-db-2')
  t.equal(await plain!.get('shared'), 'x', 'the lane stays on db 0')

  const popped = blocker!.blpop('jobs', 5)
  await sub!.subscribe('news')
  const got = new Promise<string>(resolve => sub!.on('message', (_ch, m) => resolve(m)))
  for (let i = 0; i < 50; i++) t.equal(await plain!.incr('busy'), i + 1)
  await pusher!.rpush('jobs', 'j1')
  await pusher!.publish('news', 'hello')
  t.same(await popped, ['jobs', 'j1'])
  t.equal(await got, 'hello')

  const ups = await upstreamClients(gw)
  t.equal(ups.filter(c => c.name === 'portcullis-lane').length, 1)
  t.equal(ups.filter(c => c.name !== 'portcullis-lane').length, 5, 'raw, tx, db, blocker and sub have their own')
  t.ok(ups.some(c => c.db === '2'), 'the SELECTed client is on db 2 upstream')
})

t.test('a lane killed mid-flight fails only the commands in flight; the next command gets a new lane', async t => {
  const gw = await startGateway(t)
  const token = await gw.token()
  const a = await RawClient.connect(gw.port)
  const b = await RawClient.connect(gw.port)
  const up = await observer(gw)
  t.teardown(() => { a.close(); b.close(); up.close() })
  a.send(`AUTH ${token}\r\nSET k 1\r\n`)
  b.send(`AUTH ${token}\r\nGET k\r\n`)
  t.equal(await a.lines(2), '+OK\r\n+OK\r\n')
  t.match(await b.lines(1), /^\+OK\r\n/)
  await b.read(s => s.endsWith('\r\n'))
  const lane = (await upstreamClients(gw)).find(c => c.name === 'portcullis-lane')!
  // writes wait upstream while the lane is killed: the SET is in flight on it
  up.send('CLIENT PAUSE 5000 WRITE\r\n')
  t.equal(await up.lines(1), '+OK\r\n')
  a.send('SET k 2\r\n')
  await new Promise(r => setTimeout(r, 100))
  up.send(`CLIENT KILL ID ${lane.id}\r\nCLIENT UNPAUSE\r\n`)
  t.equal(await up.lines(2), ':1\r\n+OK\r\n')
  t.equal(await a.lines(1), '-ERR upstream connection lost\r\n', 'the command in flight gets an error')
  a.send('GET k\r\n')
  t.equal(await a.lines(2), '$1\r\n1\r\n', 'the session goes on over a new lane')
  b.send('INCR k\r\n')
  t.equal(await b.lines(1), ':2\r\n', 'the other session goes on too')
  t.notOk(a.closed || b.closed)
  const lanes = (await upstreamClients(gw)).filter(c => c.name === 'portcullis-lane')
  t.equal(lanes.length, 1)
  t.not(lanes[0]!.id, lane.id, 'a new lane')
})

t.test('masking, recordings and audit stay per session on a shared lane', async t => {
  const gw = await startGateway(t, {
    masking: `
  - { id: m, when: { groups: [masked] }, fields: [ssn], method: redact }`,
    rules: `
  - { id: all, when: { groups: [agents, masked], class: [read, write, session] }, action: allow }`,
  })
  const open = await client(gw, await gw.token('open-1', ['agents']))
  const masked = await client(gw, await gw.token('masked-1', ['masked']))
  t.teardown(() => { open.disconnect(); masked.disconnect() })
  await open.hset('user:1', 'name', 'Ann', 'ssn', '123-45-6789')
  const [a, b] = await Promise.all([open.hgetall('user:1'), masked.hgetall('user:1')])
  t.same(a, { name: 'Ann', ssn: '123-45-6789' })
  t.same(b, { name: 'Ann', ssn: '[REDACTED]' })
  t.equal((await upstreamClients(gw)).length, 1, 'both went over the lane')
  open.disconnect()
  masked.disconnect()
  await new Promise(r => setTimeout(r, 300))
  const files = readdirSync(gw.recordings, { recursive: true }).map(String).filter(f => f.endsWith('.pcr'))
  const recs = files.map(f => readFileSync(`${gw.recordings}/${f}`))
  t.equal(recs.length, 2, 'one recording per session')
  const maskedRec = recs.find(r => r.includes('masked-1'))!
  const openRec = recs.find(r => r.includes('open-1'))!
  t.ok(maskedRec.includes('[REDACTED]') && !maskedRec.includes('123-45-6789'), 'the masked session recorded its masked reply')
  t.ok(openRec.includes('123-45-6789') && openRec.includes('HSET'), 'the other recorded its own requests and replies')
  const hgetall = gw.audit().filter(e => e.statement === 'HGETALL user:1')
  t.same(hgetall.map(e => [(e.principal as { sub: string }).sub, e.masked]).sort(), [['masked-1', 1], ['open-1', 0]])
})

t.test('redis-cli and redis-benchmark over the lane', async t => {
  const gw = await startGateway(t)
  const token = await gw.token()
  const cli = (...args: string[]) => run('redis-cli', ['-p', String(gw.port), '--no-auth-warning', '-a', token, ...args])
  t.equal((await cli('SET', 'cli', 'v')).stdout.trim(), 'OK')
  t.equal((await cli('GET', 'cli')).stdout.trim(), 'v')
  const { stdout, stderr } = await run('redis-benchmark', ['-p', String(gw.port), '-a', token, '-t', 'get,set', '-n', '4000', '-P', '16', '-c', '20', '-q', '--csv'])
  t.match(stdout, /"SET","\d/)
  t.match(stdout, /"GET","\d/)
  t.notMatch(stdout + stderr, /ERR|NOPERM|NOAUTH|rror/)
})

t.test('multiplex: false gives every client its own upstream connection', async t => {
  const gw = await startGateway(t, { options: '{ multiplex: false }' })
  const token = await gw.token()
  const cs = await Promise.all([client(gw, token), client(gw, token), client(gw, token)])
  t.teardown(() => cs.forEach(c => c.disconnect()))
  await Promise.all(cs.map((c, i) => c.set(`own${i}`, 'v')))
  const ups = await upstreamClients(gw)
  t.equal(ups.length, 3)
  t.notOk(ups.some(c => c.name === 'portcullis-lane'))
})
