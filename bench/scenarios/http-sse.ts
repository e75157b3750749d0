// A streamed chat completion (SSE, every delta carrying an email address): time to first byte and
// events per second, direct, through Portcullis (inspect; mask: the email detector rewrites every
// delta), through nginx with proxy_buffering off, through the minimal node:http + undici relay and
// through Portkey's gateway (mask: its regexReplace guardrail).
import { field, type Context } from '../lib/context.ts'
import { MODES, type GatewayHandle } from '../lib/gateway.ts'
import { startNginx, type Nginx } from '../lib/nginx.ts'
import { readSse, type SseResult } from '../lib/sse-client.ts'
import { cpuMicros } from '../lib/proc.ts'
import { startUpstream } from '../lib/upstream.ts'
import { PORTKEY, RELAY, portkeyHeaders, startHttpRelay, startPortkey, type Proxy } from '../lib/relays.ts'
import type { GatewayMode } from '../lib/gateway.ts'
import { ScenarioError, type Row, type Scenario, type Value } from '../lib/types.ts'
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
      const measure = (path: 'direct' | 'portcullis' | 'reference', label: string, conn: { host: string; port: number }, token?: string, expectMasked = false, headers?: Record<string, string>) =>
        ctx.attempt(path, 'SSE stream', async () => {
          const runs: SseResult[] = []
          for (let i = 0; i < streams; i++) {
            const { leaked, ...r } = await readSse({ ...conn, token, label, headers })
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
      const relay = await ctx.attempt<Proxy>('reference', 'start the Node relay', () => startHttpRelay(upstream))
      const relayed: SseResult | string = typeof relay === 'string' ? relay : await measure('reference', RELAY, relay)
      if (typeof relay !== 'string') await relay.stop()
      const portkey = await ctx.attempt<Proxy>('reference', 'start Portkey', () => startPortkey())
      const viaPortkey = new Map<GatewayMode, SseResult | string>()
      for (const mode of MODES) {
        viaPortkey.set(mode, typeof portkey === 'string' ? portkey : await measure('reference', `${PORTKEY} (${mode})`, portkey, undefined, false, portkeyHeaders(upstream, mode === 'mask')))
      }
      if (typeof portkey !== 'string') await portkey.stop()
      const others = (mode: GatewayMode, k: keyof SseResult): Record<string, Value> => ({ [RELAY]: field(relayed, k), [PORTKEY]: field(viaPortkey.get(mode)!, k) })
      const rows: Row[] = []
      for (const mode of MODES) {
        const gw = await ctx.attempt<GatewayHandle>('portcullis', `start gateway (${mode})`, async () => ctx.gateway(mode, {
          targets: [await httpTarget('bench-http', upstream)],
          masking: httpMasking(mode, 'bench-http'),
        }))
        let p: SseResult | string = typeof gw === 'string' ? gw : ''
        let cpu: Value = typeof gw === 'string' ? gw : 'n/a (no /proc, or node:cluster workers)'
        if (typeof gw !== 'string') {
          const before = ctx.workers === 1 ? cpuMicros(gw.pid) : undefined
          p = await measure('portcullis', `Portcullis (${mode})`, gw.targets['bench-http'], gw.token, mode === 'mask')
          const after = before === undefined ? undefined : cpuMicros(gw.pid)
          if (before !== undefined && after !== undefined && typeof p !== 'string') cpu = (after - before) / (streams * events)
          await gw.stop()
        }
        const common = { scenario: `SSE chat stream, ${events} events`, referenceName: 'nginx', mode }
        rows.push({ ...common, metric: 'events/s', higherIsBetter: true, direct: field(direct, 'eventsPerSec'), portcullis: field(p, 'eventsPerSec'), reference: field(reference, 'eventsPerSec'), columns: others(mode, 'eventsPerSec') })
        rows.push({ ...common, metric: 'TTFB ms', higherIsBetter: false, direct: field(direct, 'ttfbMs'), portcullis: field(p, 'ttfbMs'), reference: field(reference, 'ttfbMs'), columns: others(mode, 'ttfbMs') })
        rows.push({ ...common, metric: 'gateway CPU µs/event', higherIsBetter: false, direct: '—', portcullis: cpu, reference: '—' })
      }
      if (leakNote) rows[rows.length - 3].note = leakNote
      return rows
    } finally {
      await upstream.stop()
    }
  },
}
export default scenario
