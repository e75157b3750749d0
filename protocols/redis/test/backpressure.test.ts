// A client that asks for large values and never reads them: the gateway's memory stays bounded
// (8 MiB held per session moves it off the shared lane, where Redis holds the backlog; 64 MiB held
// from replies already in flight on the lane closes it), and the other sessions on the lane keep
// getting answers. The gateway runs in this process: its RSS is this process's.
import t from 'tap'
import { connect, type Socket } from 'node:net'
import { once } from 'node:events'
import { Redis } from 'ioredis'
import { RawClient, startGateway, type Gateway } from './harness.ts'

const BIG = 50 * 1024 * 1024
// generous: one 50 MiB reply held for the client, one being framed, and the allocator's slack
const RSS_BOUND = 300 * 1024 * 1024

async function observer(gw: Gateway): Promise<RawClient> {
  const c = await RawClient.connect(gw.redis.port)
  c.send(`AUTH gateway ${gw.redis.password}\r\nCLIENT SETNAME test-observer\r\n`)
  await c.lines(2)
  return c
}

/** the upstream's connections: name and output buffer bytes */
async function upstreamClients(up: RawClient): Promise<{ name: string; omem: number }[]> {
  up.send('CLIENT LIST\r\n')
  const out = await up.read(x => /^\$(\d+)\r\n/.test(x) && x.length >= Number(/^\$(\d+)/.exec(x)![1]) + 4)
  return out
    .split('\n')
    .filter(l => l.startsWith('id='))
    .map(l => Object.fromEntries(l.trim().split(' ').map(kv => kv.split('=') as [string, string])))
    .filter(c => c.name !== 'test-observer')
    .map(c => ({ name: c.name ?? '', omem: Number(c.omem) }))
}

/** a client that sends and never reads */
async function deafClient(port: number, data: string): Promise<Socket> {
  const sock = connect({ host: '127.0.0.1', port })
  await once(sock, 'connect')
  sock.pause()
  sock.write(data)
  return sock
}

/** the highest RSS seen while `work` runs */
async function peakRss(work: () => Promise<void>): Promise<number> {
  let peak = process.memoryUsage.rss()
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage.rss())), 10)
  try {
    await work()
  } finally {
    clearInterval(timer)
  }
  return Math.max(peak, process.memoryUsage.rss())
}

const mib = (n: number): string => `${Math.round(n / 1024 / 1024)} MiB`

t.test('20 GETs of a 50 MiB value never read: the session leaves the lane, Redis holds the backlog, others go on', async t => {
  const gw = await startGateway(t)
  const token = await gw.token()
  const up = await observer(gw)
  const other = new Redis({ port: gw.port, password: token, lazyConnect: true })
  t.teardown(() => { up.close(); other.disconnect() })
  up.send(`EVAL "redis.call('SET', KEYS[1], string.rep('x', ${BIG}))" 1 big\r\n`)
  t.equal(await up.lines(1), '$-1\r\n')
  await other.connect()
  await other.set('small', 'ok')
  const base = process.memoryUsage.rss()
  let deaf: Socket | undefined
  const peak = await peakRss(async () => {
    deaf = await deafClient(gw.port, `AUTH ${token}\r\n` + 'GET big\r\n'.repeat(20))
    // until Redis holds what the client does not read: on a connection of the session's own
    let held = 0
    for (let i = 0; i < 400 && held < BIG; i++) {
      t.equal(await other.get('small'), 'ok')
      held = Math.max(0, ...(await upstreamClients(up)).filter(c => c.name !== 'portcullis-lane').map(c => c.omem))
      if (held < BIG) await new Promise(r => setTimeout(r, 25))
    }
    t.ok(held >= BIG, `Redis holds the backlog (${mib(held)} in its output buffer for the session)`)
  })
  t.teardown(() => deaf?.destroy())
  t.ok(peak - base < RSS_BOUND, `gateway RSS grew by ${mib(peak - base)} (bound ${mib(RSS_BOUND)}; 1 GiB was asked for)`)
  const lanes = (await upstreamClients(up)).filter(c => c.name === 'portcullis-lane')
  t.equal(lanes.length, 1, 'the other session is still on the lane')
  t.equal(await other.get('small'), 'ok')
  // the client starts reading: every reply arrives, in full
  let got = 0
  deaf!.on('data', (d: Buffer) => (got += d.length))
  deaf!.resume()
  const expected = '+OK\r\n'.length + 20 * (`$${BIG}\r\n`.length + BIG + 2)
  for (let i = 0; i < 2000 && got < expected; i++) await new Promise(r => setTimeout(r, 10))
  t.equal(got, expected, 'a slow reader loses nothing')
})

t.test('a session that ramps its lane window on small replies and then asks for large ones is closed past 64 MiB', async t => {
  const gw = await startGateway(t)
  const token = await gw.token()
  const up = await observer(gw)
  const other = new Redis({ port: gw.port, password: token, lazyConnect: true })
  t.teardown(() => { up.close(); other.disconnect() })
  up.send(`EVAL "redis.call('SET', KEYS[1], string.rep('x', ${BIG}))" 1 big\r\n`)
  t.equal(await up.lines(1), '$-1\r\n')
  await other.connect()
  await other.set('small', 'ok')
  // small replies first: the window grows; the replies are read
  const c = await RawClient.connect(gw.port)
  c.send(`AUTH ${token}\r\n` + 'GET small\r\n'.repeat(2000))
  t.equal((await c.lines(1 + 4000)).length, 5 + 2000 * 8)
  const base = process.memoryUsage.rss()
  c.sock.pause()
  let gotBytes = 0
  const peak = await peakRss(async () => {
    c.sock.removeAllListeners('data')
    c.send('GET big\r\n'.repeat(20))
    // the lane reads every reply in flight and the others keep being answered meanwhile
    for (let i = 0; i < 200; i++) {
      t.equal(await other.get('small'), 'ok')
      const ups = await upstreamClients(up)
      if (ups.every(u => u.omem === 0) && i > 5) break
      await new Promise(r => setTimeout(r, 25))
    }
    c.sock.on('data', (d: Buffer) => (gotBytes += d.length))
    c.sock.resume()
    await once(c.sock, 'close')
  })
  t.ok(peak - base < RSS_BOUND, `gateway RSS grew by ${mib(peak - base)} (bound ${mib(RSS_BOUND)})`)
  t.ok(gotBytes < 3 * BIG, `the session was closed after ${mib(gotBytes)}, not given 1 GiB`)
  t.equal(await other.get('small'), 'ok', 'the lane goes on')
})

t.test('commands queued behind one that waits (an approval) are bounded in bytes: the gateway stops reading', async t => {
  const gw = await startGateway(t, {
    rules: `
  - { id: reads, when: { groups: [agents], class: [read, session] }, action: allow }
  - { id: writes, when: { groups: [agents], class: [write] }, action: approve, approvers: [approvers], timeout: 1m }`,
  })
  const sock = connect({ host: '127.0.0.1', port: gw.port })
  await once(sock, 'connect')
  t.teardown(() => sock.destroy())
  sock.write(`AUTH ${await gw.token()}\r\nSET waits 1\r\n`)
  const value = 'v'.repeat(1024 * 1024)
  const total = 64 * (value.length + 40)
  for (let i = 0; i < 64; i++) sock.write(`*3\r\n$3\r\nSET\r\n$4\r\nk${String(i).padStart(3, '0')}\r\n$${value.length}\r\n${value}\r\n`)
  // until the gateway has stopped taking bytes: what it has not read stays in this socket
  let last = -1
  for (let i = 0, same = 0; i < 400 && same < 10; i++) {
    same = sock.writableLength === last ? same + 1 : 0
    last = sock.writableLength
    await new Promise(r => setTimeout(r, 50))
  }
  const read = total - sock.writableLength
  t.ok(read < 24 * 1024 * 1024, `the gateway read ${mib(read)} of ${mib(total)} while the first command waited`)
})
