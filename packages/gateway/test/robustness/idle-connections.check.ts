// 1,000 idle connections must not tax the 50 that work. Measured as a ratio inside one run on the same
// gateway and upstream (never an absolute time): rounds of 50 Redis clients each doing sequential GETs,
// without and with 1,000 idle logged-in connections open (600 Redis after AUTH, 400 HTTP keep-alive
// after one request). The arms alternate round by round (without, with, without, ..., without), and
// each round with the idle set is compared with the mean of the two rounds without it on either side:
// load that drifts over the run cancels, and the median of those ratios outvotes a round that a
// neighbour's burst spoiled. The gateway, redis-server and this process run at nice -10 where that is
// permitted (root), so other work on a shared machine barely touches either arm (see prioritise).
// `pnpm check:idle` runs the same with more rounds (PORTCULLIS_IDLE_ROUNDS).
//
// Each measured round follows one that is not measured. Opening 1,000 sessions (600 token checks, 400
// HTTP requests) leaves work behind that is not the idle connections' cost: V8 re-optimises the code
// those paths touched and collects their garbage on its helper threads (perf: TurboFan's
// GraphReducer and Scavenger on the gateway's V8 worker threads), and the first round after the
// opening paid for it. Closing them is the same on the other arm. Before that round a full garbage
// collection (env.ts collectGarbage) clears what the opening or closing left, on both arms alike: at
// load ~20 the rounds with the idle set had cost ~1.2x the main thread's CPU per request without it.
//
// What idle sessions cost, and why it is ~nothing now: each session's recorder held a 1 MiB batch
// chunk for its whole life, so 1,000 idle sessions held 1,000 MiB of SharedArrayBuffers (beyond the
// 32-chunk pool: every login allocated and zeroed a fresh MiB, 23% of the gateway's CPU in a profile
// of this check, and RSS climbed ~150 MiB per 1,000 sessions). A recorder now starts with 16 KiB and
// rests on it once its writes are done (core recording-idle-memory.test.ts). The rest of an idle
// session is a socket, its timer in Node's shared idle-timeout list, and a Map entry: nothing is
// scanned per request.
import t from 'tap'
import { connect, type Socket } from 'node:net'
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import { Agent, request } from 'node:http'
import { prioritise, startWorld, sleep } from './env.ts'
import { normalRequests } from './checks.ts'
import { resp } from './wire.ts'
import { hygieneTest } from './hygiene.ts'
import { prepareData } from './capture.ts'

const ACTIVE = 50
const IDLE_REDIS = 600
const IDLE_HTTP = 400
const REQUESTS_PER_CLIENT = 80
/** measured rounds with the idle set (each between two without it) */
const ROUNDS = Number(process.env.PORTCULLIS_IDLE_ROUNDS ?? 9)
/** throughput and p99 with the idle connections within this ratio of the run without them */
const TOLERANCE = 0.2

const w = await startWorld()
t.teardown(() => w.cleanup())
await prepareData(w)

interface Active {
  socket: Socket
  get(): Promise<void>
}

async function activeClient(port: number, token: string): Promise<Active> {
  const socket = connect({ host: '127.0.0.1', port, noDelay: true })
  socket.on('error', () => {})
  await once(socket, 'connect')
  let pending = 0
  let want = 0
  let done: (() => void) | undefined
  socket.on('data', (d: Buffer) => {
    pending += d.length
    if (want > 0 && pending >= want) {
      pending -= want
      want = 0
      done?.()
    }
  })
  const rpc = (bytes: Buffer, replyBytes: number) =>
    new Promise<void>((resolve) => {
      want = replyBytes
      done = resolve
      socket.write(bytes)
    })
  await rpc(resp('AUTH', token), 5) // +OK\r\n
  const get = resp('GET', 'robust:idle-test')
  return { socket, get: () => rpc(get, 7) } // $1\r\nv\r\n
}

interface Round {
  throughput: number
  p99: number
  /** the gateway's own CPU per 1,000 requests, ms: shows whether a gap is the gateway's work or a neighbour's load */
  cpuPerK: number
  /** of that, its main thread's (the rest: V8's compiler and GC helpers, the recording writer, libuv's pool) */
  mainPerK: number
}

/** utime + stime, ms, of the gateway process (all threads) or of its main thread */
function gatewayCpuMs(main = false): number {
  const f = readFileSync(main ? `/proc/${w.gateway.pid}/task/${w.gateway.pid}/stat` : `/proc/${w.gateway.pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
  return (Number(f[11]) + Number(f[12])) * 10
}

async function round(clients: Active[]): Promise<Round> {
  const latencies: number[] = []
  const cpu0 = gatewayCpuMs()
  const main0 = gatewayCpuMs(true)
  const start = process.hrtime.bigint()
  await Promise.all(
    clients.map(async (c) => {
      for (let i = 0; i < REQUESTS_PER_CLIENT; i++) {
        const t0 = process.hrtime.bigint()
        await c.get()
        latencies.push(Number(process.hrtime.bigint() - t0) / 1e6)
      }
    }),
  )
  const wall = Number(process.hrtime.bigint() - start) / 1e9
  latencies.sort((a, b) => a - b)
  return { throughput: latencies.length / wall, p99: latencies[Math.floor(latencies.length * 0.99)]!, cpuPerK: ((gatewayCpuMs() - cpu0) * 1000) / latencies.length, mainPerK: ((gatewayCpuMs(true) - main0) * 1000) / latencies.length }
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

/** waits (up to 5 s) until the gateway used under 10% of a core over 200 ms: nothing left over from the last step */
async function quiet(): Promise<void> {
  const cpu = () => {
    const f = readFileSync(`/proc/${w.gateway.pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
    return Number(f[11]) + Number(f[12]) // utime + stime, clock ticks (100/s)
  }
  for (let i = 0; i < 25; i++) {
    const a = cpu()
    await sleep(200)
    if (cpu() - a <= 2) return
  }
}

async function closeIdle(idle: { sockets: Socket[]; agent: Agent }): Promise<void> {
  for (const s of idle.sockets) s.destroy()
  idle.agent.destroy()
  const target = w.gateway.fds() - IDLE_REDIS - IDLE_HTTP
  for (let i = 0; i < 50 && w.gateway.fds() > target + 20; i++) await sleep(100)
}

async function openIdle(token: string): Promise<{ sockets: Socket[]; agent: Agent }> {
  const sockets: Socket[] = []
  for (let i = 0; i < IDLE_REDIS; i += 50) {
    await Promise.all(
      Array.from({ length: Math.min(50, IDLE_REDIS - i) }, async () => {
        const s = connect({ host: '127.0.0.1', port: w.gateway.ports.redis })
        s.on('error', () => {})
        await once(s, 'connect')
        s.write(resp('AUTH', token))
        await once(s, 'data')
        sockets.push(s)
      }),
    )
  }
  const agent = new Agent({ keepAlive: true, maxSockets: IDLE_HTTP })
  await Promise.all(
    Array.from(
      { length: IDLE_HTTP },
      () =>
        new Promise<void>((resolve, reject) => {
          request({ host: '127.0.0.1', port: w.gateway.ports.http, path: '/v1/models', agent, headers: { authorization: `Bearer ${token}` } }, (res) => res.resume().on('end', resolve))
            .on('error', reject)
            .end()
        }),
    ),
  )
  return { sockets, agent }
}

t.test(`${IDLE_REDIS + IDLE_HTTP} idle connections: throughput and p99 of ${ACTIVE} active clients stay within ${TOLERANCE * 100}% of the run without them`, async (t) => {
  const token = await w.token('robust-active')
  const idleToken = await w.token('robust-idle')
  const clients = await Promise.all(Array.from({ length: ACTIVE }, () => activeClient(w.gateway.ports.redis, token)))
  await clients[0]!.socket.write(resp('SET', 'robust:idle-test', 'v'))
  await sleep(200)
  await round(clients) // warm-up: JIT, lane, caches (and the threads that start lazily now exist)
  const pids = [w.gateway.pid, w.redis.pid(), process.pid].filter((p): p is number => p !== undefined)
  t.comment(prioritise(pids) ? 'gateway, redis-server and this client at nice -10' : 'measured at the default priority (renice not permitted)')
  const without: Round[] = []
  const withIdle: Round[] = []
  /** each round with the idle set over the mean of its two neighbours without it */
  const ratios: { throughput: number; p99: number; cpu: number }[] = []
  let heldFds = 0
  const measure = async () => {
    await quiet()
    // the garbage of the last opening or closing (1,000 logins, or 1,000 sessions ended) is collected
    // now on both arms alike, not by a major GC inside the measured round
    await w.gateway.collectGarbage()
    await round(clients) // settles what opening or closing the idle set left behind (see the top)
    await quiet()
    return round(clients)
  }
  without.push(await measure())
  for (let i = 0; i < ROUNDS; i++) {
    const before = w.gateway.fds()
    const idle = await openIdle(idleToken)
    heldFds = Math.max(heldFds, w.gateway.fds() - before)
    const r = await measure()
    withIdle.push(r)
    await closeIdle(idle)
    without.push(await measure())
    const [a, b] = [without[i]!, without[i + 1]!]
    ratios.push({ throughput: (2 * r.throughput) / (a.throughput + b.throughput), p99: (2 * r.p99) / (a.p99 + b.p99), cpu: (2 * r.cpuPerK) / (a.cpuPerK + b.cpuPerK) })
  }
  t.ok(heldFds >= IDLE_REDIS + IDLE_HTTP, `the gateway held the idle connections (${heldFds} more fds)`)
  const fmt = (rs: Round[]) => rs.map((r) => `${r.throughput.toFixed(0)}/s p99 ${r.p99.toFixed(2)} ms (gateway CPU ${r.cpuPerK.toFixed(0)} ms/1k, main thread ${r.mainPerK.toFixed(0)})`).join(', ')
  t.comment(`without idle: ${fmt(without)}`)
  t.comment(`with ${IDLE_REDIS + IDLE_HTTP} idle: ${fmt(withIdle)}`)
  t.comment(`ratios (with / its neighbours without): ${ratios.map((r) => `${r.throughput.toFixed(2)}/${r.p99.toFixed(2)}`).join(', ')} (throughput/p99)`)
  const tput = median(ratios.map((r) => r.throughput))
  const p99 = median(ratios.map((r) => r.p99))
  const cpu = median(ratios.map((r) => r.cpu))
  t.comment(`median ratios with/without idle: throughput ${tput.toFixed(2)}, p99 ${p99.toFixed(2)}, gateway CPU per request ${cpu.toFixed(2)}`)
  t.ok(tput >= 1 - TOLERANCE, `median throughput ratio with/without idle ${tput.toFixed(2)} (at least ${1 - TOLERANCE})`)
  t.ok(p99 <= 1 + TOLERANCE, `median p99 ratio with/without idle ${p99.toFixed(2)} (at most ${1 + TOLERANCE})`)
  for (const c of clients) c.socket.destroy()
})

t.test('after the idle connections went every protocol answers', async (t) => {
  t.same(await normalRequests(w), [])
})

t.test('secret hygiene after the idle run: no password, key or token in logs, audit or recordings', (t) => hygieneTest(t, w))
