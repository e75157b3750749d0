// 1 KB JSON chat completions (1 KB request body, ~1 KB answer) at 50 connections: direct to the
// stand-in upstream, through Portcullis (OpenAI profile; inspect: a field rule that does not match;
// mask: the answer's user.email field and the email detector), through nginx proxy_pass, through
// the minimal node:http + undici relay and through Portkey's gateway (mask: its regexReplace guardrail).
import { field, type Context } from '../lib/context.ts'
import { autocannon, type HttpLoadResult } from '../lib/autocannon.ts'
import { MODES, type GatewayHandle, type GatewayMode } from '../lib/gateway.ts'
import { httpLatency, type LatencyResult } from '../lib/http-latency.ts'
import { startNginx, type Nginx } from '../lib/nginx.ts'
import { cpuMicros, freePort } from '../lib/proc.ts'
import { startUpstream } from '../lib/upstream.ts'
import { PORTKEY, RELAY, portkeyHeaders, startHttpRelay, startPortkey, type Proxy } from '../lib/relays.ts'
import type { Row, Scenario, Value } from '../lib/types.ts'

export const httpTarget = async (name: string, upstream: { host: string; port: number }) => ({
  name,
  protocol: 'http',
  listen: `127.0.0.1:${await freePort()}`,
  upstream: { url: `http://${upstream.host}:${upstream.port}` },
  options: { profile: 'openai' },
})

export const httpMasking = (mode: GatewayMode, target: string) => mode === 'mask'
  ? [{ id: 'bench-pii', when: { targets: [target] }, fields: ['user.email'], detectors: ['email'], method: 'redact' }]
  : [{ id: 'bench-nohit', when: { targets: [target] }, fields: ['nomatch'], method: 'redact' }]

// a 1 KB request: one user message padded to size
const body = (() => {
  const base = { model: 'gpt-4o-mini', max_tokens: 256, messages: [{ role: 'user', content: '' }] }
  const pad = 1024 - JSON.stringify(base).length
  base.messages[0].content = 'Summarise the quarterly report for the board. '.repeat(40).slice(0, pad)
  return JSON.stringify(base)
})()

const scenario: Scenario = {
  name: 'http JSON',
  quick: true,
  async run(base) {
    const ctx = base as Context
    const seconds = ctx.quick ? 2 : 10
    const upstream = await startUpstream(10)
    try {
      const auth = (token?: string | Record<string, string>) => (typeof token === 'string' ? { authorization: `Bearer ${token}` } : (token ?? {}))
      const load = (path: 'direct' | 'portcullis' | 'reference', label: string, origin: string, token?: string | Record<string, string>) =>
        ctx.attempt(path, 'POST /v1/chat/completions', () => ctx.repeat(() => autocannon({
          url: `${origin}/v1/chat/completions`, method: 'POST', connections: 50, seconds, body, label,
          headers: { 'content-type': 'application/json', ...auth(token) },
        })))
      // one connection, one request at a time: the latency a proxy adds to each round trip
      const single = (path: 'direct' | 'portcullis' | 'reference', label: string, origin: string, token?: string | Record<string, string>) =>
        ctx.attempt(path, 'POST /v1/chat/completions, 1 connection', () => ctx.repeat(() => httpLatency({
          url: `${origin}/v1/chat/completions`, body, label, requests: ctx.quick ? 300 : 3000,
          headers: { 'content-type': 'application/json', ...auth(token) },
        })))
      const direct = await load('direct', 'direct', `http://${upstream.host}:${upstream.port}`)
      const direct1 = await single('direct', 'direct', `http://${upstream.host}:${upstream.port}`)
      const nginx = await ctx.attempt<Nginx>('reference', 'start nginx', () => startNginx(ctx.tmp, upstream))
      const reference: HttpLoadResult | string = typeof nginx === 'string' ? nginx : await load('reference', 'nginx', `http://${nginx.host}:${nginx.port}`)
      const reference1: LatencyResult | string = typeof nginx === 'string' ? nginx : await single('reference', 'nginx', `http://${nginx.host}:${nginx.port}`)
      if (typeof nginx !== 'string') await nginx.stop()
      const relay = await ctx.attempt<Proxy>('reference', 'start the Node relay', () => startHttpRelay(upstream))
      const origin = (p: Proxy) => `http://${p.host}:${p.port}`
      // the CPU each process spends per request (/proc): steadier than req/s on a shared machine
      const perRequest = async (pid: number | undefined, measure: () => Promise<HttpLoadResult | string>): Promise<[HttpLoadResult | string, Value]> => {
        const before = pid === undefined ? undefined : cpuMicros(pid)
        const r = await measure()
        const after = before === undefined ? undefined : cpuMicros(pid!)
        // with repeats, the median run's count stands for each
        return [r, typeof r !== 'string' && before !== undefined && after !== undefined ? (after - before) / (r.total * ctx.repeats) : 'n/a']
      }
      const [relayed, relayCpu]: [HttpLoadResult | string, Value] = typeof relay === 'string' ? [relay, relay] : await perRequest(relay.pid, () => load('reference', RELAY, origin(relay)))
      const relayed1: LatencyResult | string = typeof relay === 'string' ? relay : await single('reference', RELAY, origin(relay))
      if (typeof relay !== 'string') await relay.stop()
      // Portkey: once per mode (mask: its own regexReplace guardrail on the answer's text)
      const portkey = await ctx.attempt<Proxy>('reference', 'start Portkey', () => startPortkey())
      const viaPortkey = new Map<GatewayMode, HttpLoadResult | string>()
      let portkey1: LatencyResult | string = typeof portkey === 'string' ? portkey : ''
      for (const mode of MODES) {
        if (typeof portkey === 'string') { viaPortkey.set(mode, portkey); continue }
        viaPortkey.set(mode, await load('reference', `${PORTKEY} (${mode})`, origin(portkey), portkeyHeaders(upstream, mode === 'mask')))
        if (mode === 'inspect') portkey1 = await single('reference', PORTKEY, origin(portkey), portkeyHeaders(upstream, false))
      }
      if (typeof portkey !== 'string') await portkey.stop()
      const others = (mode: GatewayMode, k: keyof HttpLoadResult): Record<string, Value> => ({ [RELAY]: field(relayed, k), [PORTKEY]: field(viaPortkey.get(mode)!, k) })
      const rows: Row[] = []
      for (const mode of MODES) {
        const gw = await ctx.attempt<GatewayHandle>('portcullis', `start gateway (${mode})`, async () => ctx.gateway(mode, {
          targets: [await httpTarget('bench-http', upstream)],
          masking: httpMasking(mode, 'bench-http'),
        }))
        let p: HttpLoadResult | string = typeof gw === 'string' ? gw : ''
        let p1: LatencyResult | string = typeof gw === 'string' ? gw : ''
        let cpu: Value = typeof gw === 'string' ? gw : ''
        if (typeof gw !== 'string') {
          const t = gw.targets['bench-http']
          ;[p, cpu] = await perRequest(ctx.workers === 1 ? gw.pid : undefined, () => load('portcullis', `Portcullis (${mode})`, `http://${t.host}:${t.port}`, gw.token))
          if (mode === 'inspect') p1 = await single('portcullis', `Portcullis (${mode})`, `http://${t.host}:${t.port}`, gw.token)
          await gw.stop()
        }
        const common = { scenario: '1 KB JSON chat completion 50 connections', referenceName: 'nginx' }
        rows.push({ ...common, metric: 'req/s', mode, higherIsBetter: true, direct: field(direct, 'rps'), portcullis: field(p, 'rps'), reference: field(reference, 'rps'), columns: others(mode, 'rps') })
        rows.push({ ...common, metric: 'CPU µs/request', mode, higherIsBetter: false, direct: '—', portcullis: cpu, reference: '—', columns: { [RELAY]: relayCpu } })
        if (mode === 'inspect') {
          rows.push({ ...common, metric: 'p50 ms', mode, higherIsBetter: false, direct: field(direct, 'p50Ms'), portcullis: field(p, 'p50Ms'), reference: field(reference, 'p50Ms'), columns: others(mode, 'p50Ms') })
          rows.push({ ...common, metric: 'p99 ms', mode, higherIsBetter: false, direct: field(direct, 'p99Ms'), portcullis: field(p, 'p99Ms'), reference: field(reference, 'p99Ms'), columns: others(mode, 'p99Ms') })
          rows.push({ scenario: '1 KB JSON chat completion 1 connection', referenceName: 'nginx', metric: 'p50 ms', mode, higherIsBetter: false, direct: field(direct1, 'p50Ms'), portcullis: field(p1, 'p50Ms'), reference: field(reference1, 'p50Ms'),
            columns: { [RELAY]: field(relayed1, 'p50Ms'), [PORTKEY]: field(portkey1, 'p50Ms') } })
        }
      }
      return rows
    } finally {
      await upstream.stop()
    }
  },
}
export default scenario
