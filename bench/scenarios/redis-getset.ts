// redis-benchmark GET and SET at 50 clients, pipeline 1 and 16: direct, through Portcullis (inspect:
// a key rule that no benchmark key matches; mask: a key rule on every key), through nutcracker and
// through the plain Node relay (a net pipe).
// Redis has no password on every path: twemproxy cannot pass a client's AUTH through.
// GET/SET at -P 1 and -P 16 also through Portcullis (inspect) with 2 node:cluster workers, in the
// same run (the 'Portcullis (2 workers)' column; full runs only, and left out when the run itself
// has --workers N).
import { readFileSync } from 'node:fs'
import { field, type Context } from '../lib/context.ts'
import { MODES, type GatewayHandle } from '../lib/gateway.ts'
import { freePort, requireTool } from '../lib/proc.ts'
import { redisBenchmark, type RedisBenchResult } from '../lib/redis-benchmark.ts'
import { startNutcracker, type Nutcracker } from '../lib/redis.ts'
import { RELAY, startTcpRelay, type Proxy } from '../lib/relays.ts'
import type { Row, Scenario, Value } from '../lib/types.ts'

const PIPELINES = [1, 16]

export const redisTarget = async (name: string, redis: { host: string; port: number }) => ({
  name,
  protocol: 'redis',
  listen: `127.0.0.1:${await freePort()}`,
  upstream: { host: redis.host, port: redis.port },
})

type Res = Record<string, RedisBenchResult>
type Conn = { host: string; port: number; password?: string }

/** user + system time of a process so far, µs (all its threads; the kernel counts 10 ms ticks) */
function cpuUs(pid: number): number | undefined {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')
    return (Number(f[11]) + Number(f[12])) * 10_000
  } catch {
    return undefined
  }
}

const scenario: Scenario = {
  name: 'redis GET/SET',
  quick: true,
  async run(base) {
    const ctx = base as Context
    requireTool('redis-benchmark')
    const redis = await ctx.redis()
    // quick runs long enough (~1-3 s a test through the gateway) that 50 connections' start (a token
    // check each) is not what is measured: at 5,000 requests it was, and read half the steady rate
    const requests = (p: number) => (ctx.quick ? 40_000 : 200_000) * (p > 1 ? 8 : 1)
    const cpuPerCommand = new Map<string, number>()
    // pid: the proxy's process, whose CPU time per command (SET and GET runs together) is read too:
    // on a loaded machine it moves far less from run to run than ops/s
    const measure = async (path: 'direct' | 'portcullis' | 'reference', label: string, conn: Conn | string, pipelines = PIPELINES, pid?: number) => {
      const out = new Map<number, Res | string>()
      for (const pipeline of pipelines) {
        if (typeof conn === 'string') { out.set(pipeline, conn); continue }
        out.set(pipeline, await ctx.attempt(path, `GET/SET -P ${pipeline}`, async () => {
          const runs: Res[] = []
          const cpus: number[] = []
          for (let i = 0; i < ctx.repeats; i++) {
            const before = pid === undefined ? undefined : cpuUs(pid)
            runs.push(await redisBenchmark({ ...conn, clients: 50, requests: requests(pipeline), pipeline, tests: ['set', 'get'], label }))
            const after = pid === undefined ? undefined : cpuUs(pid)
            if (before !== undefined && after !== undefined) cpus.push((after - before) / (2 * requests(pipeline)))
          }
          const pick = (cmd: string) => {
            const sorted = runs.map(r => r[cmd]).sort((a, b) => a.rps - b.rps)
            return sorted[sorted.length >> 1]
          }
          cpus.sort((a, b) => a - b)
          if (cpus.length > 0) cpuPerCommand.set(`${label} -P ${pipeline}`, cpus[cpus.length >> 1]!)
          return { SET: pick('SET'), GET: pick('GET') }
        }))
      }
      return out
    }

    // one client, one command at a time: the latency a proxy adds to each round trip
    const single = (path: 'direct' | 'portcullis' | 'reference', label: string, conn: Conn | string) => typeof conn === 'string'
      ? Promise.resolve(conn)
      : ctx.attempt(path, 'GET 1 client', () => ctx.repeat(async () => {
        const r = await redisBenchmark({ ...conn, clients: 1, requests: ctx.quick ? 2_000 : 20_000, pipeline: 1, tests: ['get'], label })
        return r.GET
      }))
    const direct = await measure('direct', 'direct', redis)
    const direct1 = await single('direct', 'direct', redis)
    const twem = await ctx.attempt<Nutcracker>('reference', 'start nutcracker', () => startNutcracker(ctx.tmp, redis))
    const reference = await measure('reference', 'nutcracker', typeof twem === 'string' ? twem : twem)
    const reference1 = await single('reference', 'nutcracker', twem)
    if (typeof twem !== 'string') await twem.stop()
    const relay = await ctx.attempt<Proxy>('reference', 'start the Node relay', () => startTcpRelay(redis))
    const relayed = await measure('reference', RELAY, relay, PIPELINES, typeof relay === 'string' ? undefined : relay.pid)
    const relayed1 = await single('reference', RELAY, relay)
    if (typeof relay !== 'string') await relay.stop()
    const through: Record<string, Map<number, Res | string>> = {}
    let through1: RedisBenchResult | string = ''
    for (const mode of MODES) {
      const gw = await ctx.attempt<GatewayHandle>('portcullis', `start gateway (${mode})`, async () => ctx.gateway(mode, {
        targets: [await redisTarget('bench-redis', redis)],
        masking: [{ id: `bench-${mode}`, when: { targets: ['bench-redis'] }, keys: [mode === 'mask' ? 'key:*' : 'nomatch:*'], method: 'redact' }],
      }))
      const conn = typeof gw === 'string' ? gw : { ...gw.targets['bench-redis'], password: gw.token }
      through[mode] = await measure('portcullis', `Portcullis (${mode})`, conn, PIPELINES, typeof gw === 'string' ? undefined : gw.pid)
      if (mode === 'inspect') through1 = await single('portcullis', 'Portcullis (inspect)', conn)
      if (typeof gw !== 'string') await gw.stop()
    }
    let twoWorkers: Map<number, Res | string> | undefined
    if (ctx.workers === 1 && !ctx.quick) {
      const gw = await ctx.attempt<GatewayHandle>('portcullis', 'start gateway (inspect, 2 workers)', async () => ctx.gateway('inspect', {
        targets: [await redisTarget('bench-redis', redis)],
        masking: [{ id: 'bench-inspect', when: { targets: ['bench-redis'] }, keys: ['nomatch:*'], method: 'redact' }],
      }, { workers: 2 }))
      const conn = typeof gw === 'string' ? gw : { ...gw.targets['bench-redis'], password: gw.token }
      // a fresh gateway beside a warm one: both workers take some traffic first, unmeasured
      if (typeof conn !== 'string') await ctx.attempt('portcullis', '2 workers warm-up', () => redisBenchmark({ ...conn, clients: 50, requests: 10_000, pipeline: 1, tests: ['set', 'get'], label: 'warm-up' }))
      twoWorkers = await measure('portcullis', 'Portcullis (inspect, 2 workers)', conn)
      if (typeof gw !== 'string') await gw.stop()
    }

    const rows: Row[] = []
    const sub = (v: Res | string, cmd: string) => (typeof v === 'string' ? v : v[cmd])
    for (const pipeline of PIPELINES) {
      for (const cmd of ['GET', 'SET']) {
        const scenarioName = `redis-benchmark ${cmd} 50 clients -P ${pipeline}`
        const d = sub(direct.get(pipeline)!, cmd), r = sub(reference.get(pipeline)!, cmd), n = sub(relayed.get(pipeline)!, cmd)
        for (const mode of MODES) {
          const p = sub(through[mode].get(pipeline)!, cmd)
          const two = mode === 'inspect' && twoWorkers?.has(pipeline) ? { portcullis2: field(sub(twoWorkers.get(pipeline)!, cmd), 'rps') } : {}
          rows.push({ scenario: scenarioName, metric: 'ops/s', mode, higherIsBetter: true, referenceName: 'nutcracker', direct: field(d, 'rps'), portcullis: field(p, 'rps'), ...two, reference: field(r, 'rps'), columns: { [RELAY]: field(n, 'rps') } })
        }
        const p = sub(through.inspect.get(pipeline)!, cmd)
        rows.push({ scenario: scenarioName, metric: 'p50 ms', mode: 'inspect', higherIsBetter: false, referenceName: 'nutcracker', direct: field(d, 'p50Ms'), portcullis: field(p, 'p50Ms'), reference: field(r, 'p50Ms'), columns: { [RELAY]: field(n, 'p50Ms') } })
      }
    }
    const cpuOf = (label: string, pipeline: number, v: Res | string | undefined): Value => {
      if (typeof v === 'string') return v
      const us = cpuPerCommand.get(`${label} -P ${pipeline}`)
      return us === undefined ? 'n/a (no /proc)' : Math.round(us * 100) / 100
    }
    for (const pipeline of PIPELINES) {
      for (const mode of MODES) {
        rows.push({ scenario: `redis-benchmark GET+SET 50 clients -P ${pipeline}`, metric: 'proxy CPU µs per command', mode, higherIsBetter: false, direct: 'n/a', portcullis: cpuOf(`Portcullis (${mode})`, pipeline, through[mode].get(pipeline)), reference: 'n/a', columns: { [RELAY]: cpuOf(RELAY, pipeline, relayed.get(pipeline)) } })
      }
    }
    rows.push({ scenario: 'redis-benchmark GET 1 client', metric: 'p50 ms', mode: 'inspect', higherIsBetter: false, referenceName: 'nutcracker', direct: field(direct1, 'p50Ms'), portcullis: field(through1, 'p50Ms'), reference: field(reference1, 'p50Ms'), columns: { [RELAY]: field(relayed1, 'p50Ms') } })
    rows[0].note = 'redis runs without a password on every path (twemproxy cannot pass AUTH through); Portcullis still checks a token per connection'
    return rows
  },
}
export default scenario
