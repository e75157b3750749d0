// A streamed chat completion (SSE, every delta carrying an email address): time to first byte and
// events per second, direct, through Portcullis (inspect; mask: the email detector rewrites every
// delta) and through nginx with proxy_buffering off.
import { field, type Context } from '../lib/context.ts'
import { MODES, type GatewayHandle } from '../lib/gateway.ts'
import { startNginx, type Nginx } from '../lib/nginx.ts'
import { readSse, type SseResult } from '../lib/sse-client.ts'
import { startUpstream } from '../lib/upstream.ts'
import { ScenarioError, type Row, type Scenario } from '../lib/types.ts'
import { httpMasking, httpTarget } from './http-json.ts'

const scenario: Scenario = {
  name: 'http SSE',
  quick: true,
  async run(base) {
    const ctx = base as Context
    const events = ctx.quick ? 2000 : 20000
    const streams = ctx.quick ? 3 : 9
    const upstream = await startUpstream(events)
    let leakNote: string | undefined
    try {
      const measure = (path: 'direct' | 'portcullis' | 'reference', label: string, conn: { host: string; port: number }, token?: string, expectMasked = false) =>
        ctx.attempt(path, 'SSE stream', async () => {
          const runs: SseResult[] = []
          for (let i = 0; i < streams; i++) {
            const { leaked, ...r } = await readSse({ ...conn, token, label })
            if (r.events < events) throw new ScenarioError(`SSE via ${label}: ${r.events} of ${events} events arrived`)
            if (expectMasked && leaked) leakNote = 'the mask mode let an email address through in the SSE stream'
            runs.push(r)
          }
          const { medianOf } = await import('../lib/stats.ts')
          return medianOf(runs)
        })
      const direct = await measure('direct', 'direct', upstream)
      const nginx = await ctx.attempt<Nginx>('reference', 'start nginx', () => startNginx(ctx.tmp, upstream))
      const reference: SseResult | string = typeof nginx === 'string' ? nginx : await measure('reference', 'nginx', nginx)
      if (typeof nginx !== 'string') await nginx.stop()
      const rows: Row[] = []
      for (const mode of MODES) {
        const gw = await ctx.attempt<GatewayHandle>('portcullis', `start gateway (${mode})`, async () => ctx.gateway(mode, {
          targets: [await httpTarget('bench-http', upstream)],
          masking: httpMasking(mode, 'bench-http'),
        }))
        let p: SseResult | string = typeof gw === 'string' ? gw : ''
        if (typeof gw !== 'string') {
          p = await measure('portcullis', `Portcullis (${mode})`, gw.targets['bench-http'], gw.token, mode === 'mask')
          await gw.stop()
        }
        const common = { scenario: `SSE chat stream, ${events} events`, referenceName: 'nginx', mode }
        rows.push({ ...common, metric: 'events/s', higherIsBetter: true, direct: field(direct, 'eventsPerSec'), portcullis: field(p, 'eventsPerSec'), reference: field(reference, 'eventsPerSec') })
        rows.push({ ...common, metric: 'TTFB ms', higherIsBetter: false, direct: field(direct, 'ttfbMs'), portcullis: field(p, 'ttfbMs'), reference: field(reference, 'ttfbMs') })
      }
      if (leakNote) rows[rows.length - 2].note = leakNote
      return rows
    } finally {
      await upstream.stop()
    }
  },
}
export default scenario
