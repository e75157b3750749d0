// Slow readers: a client asks for a large result on each protocol and stops reading. The gateway must
// hold back (TCP backpressure to the upstream), not buffer the result: its RSS stays within
// SLOW_READER_RSS_BOUND above what it used before, on every protocol, while the result waits.
import t from 'tap'
import { Redis } from 'ioredis'
import { connect } from 'node:net'
import { once } from 'node:events'
import { pgGatewayBackends, redisGatewayClients, sleep, startWorld, waitFor, type World } from './env.ts'
import { normalRequests } from './checks.ts'
import { rawPg, rawRedis } from './wire.ts'
import { hygieneTest } from './hygiene.ts'
import { prepareData } from './capture.ts'

/** what a stalled large result may add to the gateway's RSS (README "Robustness" states the same) */
export const SLOW_READER_RSS_BOUND = 128 * 1024 * 1024
/** how long the client sits on the unread result while RSS is sampled */
const HOLD_MS = 4000

const w = await startWorld()
t.teardown(() => w.cleanup())
await prepareData(w)

/** the highest RSS seen while the client does not read, above the RSS before it asked */
async function peakGrowth(w: World, before: number): Promise<number> {
  let peak = 0
  for (const end = Date.now() + HOLD_MS; Date.now() < end; ) {
    peak = Math.max(peak, w.gateway.rssBytes() - before)
    await sleep(100)
  }
  return peak
}

async function settledRss(w: World): Promise<number> {
  ;(globalThis as { gc?: () => void }).gc?.()
  await sleep(500)
  return w.gateway.rssBytes()
}

const mb = (n: number) => `${(n / 1048576).toFixed(0)} MiB`

t.test('postgres: a client that stops reading a 300 MB result keeps the gateway within the RSS bound', async (t) => {
  const c = await rawPg(w.gateway.ports.pg, 'robust-slow', await w.token('robust-slow'))
  const before = await settledRss(w)
  c.socket.pause()
  c.query("SELECT repeat('x', 1000) AS v FROM generate_series(1, 300000)")
  const growth = await peakGrowth(w, before)
  t.ok(growth <= SLOW_READER_RSS_BOUND, `RSS grew by ${mb(growth)} while the result waited (bound ${mb(SLOW_READER_RSS_BOUND)})`)
  c.socket.destroy()
  await waitFor(async () => (await pgGatewayBackends(w.pg)) === 0, 'the upstream backend to go', 15_000).catch(() => {})
  t.equal(await pgGatewayBackends(w.pg), 0, 'the upstream backend ends with the client')
})

t.test('redis: a client that pipelines 20 GETs of a 16 MiB value and stops reading keeps the gateway within the RSS bound', async (t) => {
  // the value is written past the gateway
  const direct = new Redis({ host: w.redis.host, port: w.redis.port, password: w.redis.password, lazyConnect: true })
  await direct.connect()
  await direct.set('robust:big', Buffer.alloc(16 << 20, 'x'))
  await direct.quit()
  const c = await rawRedis(w.gateway.ports.redis, await w.token('robust-slow'))
  const before = await settledRss(w)
  c.socket.pause()
  for (let i = 0; i < 20; i++) c.send('GET', 'robust:big')
  const growth = await peakGrowth(w, before)
  t.ok(growth <= SLOW_READER_RSS_BOUND, `RSS grew by ${mb(growth)} while 320 MiB of replies waited (bound ${mb(SLOW_READER_RSS_BOUND)})`)
  c.socket.destroy()
  await sleep(1000)
  t.same((await redisGatewayClients(w.redis)).filter((l) => !/ name=portcullis-lane /.test(l)), [], 'no upstream connection of the ended session')
})

t.test('http: a client that stops reading a 200 MB response keeps the gateway within the RSS bound', async (t) => {
  const token = await w.token('robust-slow')
  const s = connect({ host: '127.0.0.1', port: w.gateway.ports.http })
  s.on('error', () => {})
  await once(s, 'connect')
  let head = ''
  s.once('data', (d: Buffer) => {
    head = d.toString('latin1').split('\r\n')[0]!
    s.pause()
  })
  const before = await settledRss(w)
  s.write(`GET /big HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${token}\r\n\r\n`)
  const growth = await peakGrowth(w, before)
  t.match(head, /^HTTP\/1\.1 200/, 'the response started')
  t.ok(growth <= SLOW_READER_RSS_BOUND, `RSS grew by ${mb(growth)} while the body waited (bound ${mb(SLOW_READER_RSS_BOUND)})`)
  s.destroy()
})

t.test('after the slow readers every protocol answers', async (t) => {
  t.same(await normalRequests(w), [])
})

t.test('secret hygiene after the slow readers: no password, key or token in logs, audit or recordings', (t) => hygieneTest(t, w))
