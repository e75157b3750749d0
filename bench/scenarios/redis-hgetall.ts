// HGETALL of a small user hash: direct, through Portcullis (inspect: a field rule that does not
// match; mask: the email field masked) and through nutcracker.
import { field, type Context } from '../lib/context.ts'
import { MODES, type GatewayHandle } from '../lib/gateway.ts'
import { redisBenchmark, type RedisBenchResult } from '../lib/redis-benchmark.ts'
import { startNutcracker, type Nutcracker } from '../lib/redis.ts'
import { requireTool } from '../lib/proc.ts'
import type { Row, Scenario } from '../lib/types.ts'
import { redisTarget } from './redis-getset.ts'

const COMMAND = ['HGETALL', 'user:1']

const scenario: Scenario = {
  name: 'redis HGETALL',
  quick: true,
  async run(base) {
    const ctx = base as Context
    requireTool('redis-benchmark')
    requireTool('redis-cli')
    const redis = await ctx.redis()
    await redis.cli('HSET', 'user:1', 'name', 'Alice Smith', 'email', 'alice.smith@example.com', 'plan', 'pro', 'note', 'renews in March')
    const requests = ctx.quick ? 40_000 : 200_000
    const measure = (path: 'direct' | 'portcullis' | 'reference', label: string, conn: { host: string; port: number; password?: string }) =>
      ctx.attempt(path, 'HGETALL', () => ctx.repeat(async () => {
        const r = await redisBenchmark({ ...conn, clients: 50, requests, pipeline: 1, command: COMMAND, label })
        const res = r.HGETALL
        if (!res) throw new Error(`no HGETALL result: ${JSON.stringify(r)}`)
        return res as RedisBenchResult
      }))

    const direct = await measure('direct', 'direct', redis)
    const twem = await ctx.attempt<Nutcracker>('reference', 'start nutcracker', () => startNutcracker(ctx.tmp, redis))
    const reference = typeof twem === 'string' ? twem : await measure('reference', 'nutcracker', twem)
    if (typeof twem !== 'string') await twem.stop()
    const rows: Row[] = []
    for (const mode of MODES) {
      const gw = await ctx.attempt<GatewayHandle>('portcullis', `start gateway (${mode})`, async () => ctx.gateway(mode, {
        targets: [await redisTarget('bench-redis', redis)],
        masking: [{ id: `bench-${mode}`, when: { targets: ['bench-redis'] }, fields: [mode === 'mask' ? 'email' : 'nomatch'], method: 'redact' }],
      }))
      let p: RedisBenchResult | string = typeof gw === 'string' ? gw : ''
      if (typeof gw !== 'string') {
        p = await measure('portcullis', `Portcullis (${mode})`, { ...gw.targets['bench-redis'], password: gw.token })
        await gw.stop()
      }
      rows.push({ scenario: 'HGETALL 4-field hash 50 clients', metric: 'ops/s', mode, higherIsBetter: true, referenceName: 'nutcracker', direct: field(direct, 'rps'), portcullis: field(p, 'rps'), reference: field(reference, 'rps') })
    }
    return rows
  },
}
export default scenario
