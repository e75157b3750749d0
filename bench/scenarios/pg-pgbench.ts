// pgbench -S (select-only) at 1, 8 and 32 clients in simple, extended and prepared protocol:
// direct, through Portcullis (inspect, mask), through pgbouncer in session pooling and through the
// plain Node relay (a net pipe: what any Node proxy reaches here); and at 8 clients, simple and
// prepared, through Portcullis (inspect) with 2 node:cluster workers, in the same run (the
// 'Portcullis (2 workers)' column; full runs only, and left out when the run itself has --workers N).
import { field } from '../lib/context.ts'
import type { Context } from '../lib/context.ts'
import { MODES, type GatewayHandle } from '../lib/gateway.ts'
import { pgbench, type PgbenchResult } from '../lib/pgbench.ts'
import { startPgbouncer, type Pgbouncer } from '../lib/postgres.ts'
import { freePort, requireTool } from '../lib/proc.ts'
import { RELAY, startTcpRelay, type Proxy } from '../lib/relays.ts'
import type { Row, Scenario } from '../lib/types.ts'

const CLIENTS = [1, 8, 32]
const PROTOCOLS = ['simple', 'extended', 'prepared'] as const
/** the combinations measured again with 2 workers (full runs only: quick stays under 5 minutes) */
const TWO_WORKERS = new Set(['8/simple', '8/prepared'])

export const pgTarget = async (name: string, pg: { host: string; port: number }) => ({
  name,
  protocol: 'postgres',
  listen: `127.0.0.1:${await freePort()}`,
  upstream: { host: pg.host, port: pg.port, database: 'bench', user: 'postgres' },
})

const scenario: Scenario = {
  name: 'postgres pgbench -S',
  quick: true,
  async run(base) {
    const ctx = base as Context
    requireTool('pgbench')
    const pg = await ctx.postgres()
    const seconds = ctx.quick ? 2 : 10
    const init = await ctx.attempt('direct', 'pgbench -i', async () => {
      const { run } = await import('../lib/proc.ts')
      const r = await run('pgbench', ['-i', '-q', '-s', ctx.quick ? '1' : '10', '-h', pg.host, '-p', String(pg.port), '-U', 'postgres', 'bench'])
      if (r.code !== 0) throw new Error(r.stderr)
    })
    if (typeof init === 'string') return [{ scenario: this.name, metric: 'TPS', higherIsBetter: true, direct: init, portcullis: init, reference: init }]

    // quick: every client count in simple protocol, the other protocols at 8 clients
    const combos = CLIENTS.flatMap(c => PROTOCOLS.filter(p => !ctx.quick || p === 'simple' || c === 8).map(p => [c, p] as const))
    type Key = `${number}/${string}`
    const direct = new Map<Key, PgbenchResult | string>()
    const reference = new Map<Key, PgbenchResult | string>()
    const through = { inspect: new Map<Key, PgbenchResult | string>(), mask: new Map<Key, PgbenchResult | string>() }
    const twoWorkers = new Map<Key, PgbenchResult | string>()
    const each = async (label: string, store: Map<Key, PgbenchResult | string>, path: 'direct' | 'portcullis' | 'reference',
      conn: { host: string; port: number; user: string; password?: string } | string, only?: Set<string>) => {
      // Each path's first cell of a protocol mode follows an unmeasured second of the same load: the
      // 1-client cell is the first one a freshly started proxy serves, and in a 2 s cell (~5,000
      // transactions, so its p99 is its slowest 50) the first transactions' JIT compiles, first
      // parses and first writes were its p99 — 2.3-2.6 ms for the gateway and 1.2 for the Node
      // relay, where the same gateway after a warm-up read 0.55-0.70 (bench/README, the 1-client tail)
      const warmed = new Set<string>()
      for (const [clients, mode] of combos) {
        {
          const key: Key = `${clients}/${mode}`
          if (only && !only.has(key)) continue
          if (typeof conn === 'string') { store.set(key, conn); continue }
          if (!warmed.has(mode)) {
            warmed.add(mode)
            await ctx.attempt(path, `warm-up (${mode})`, () => pgbench({ ...conn, database: 'bench', clients: 8, seconds: 1, mode, tmp: ctx.tmp, label: 'warm-up' }))
          }
          store.set(key, await ctx.attempt(path, `${clients} clients ${mode}`, () => ctx.repeat(async () => ({
            ...(await pgbench({ ...conn, database: 'bench', clients, seconds, mode, tmp: ctx.tmp, label })),
          }))))
        }
      }
    }

    await each('direct', direct, 'direct', { host: pg.host, port: pg.port, user: 'postgres' })

    const bouncer = await ctx.attempt<Pgbouncer>('reference', 'start pgbouncer', () => startPgbouncer(pg))
    await each('pgbouncer', reference, 'reference', typeof bouncer === 'string' ? bouncer : { host: bouncer.host, port: bouncer.port, user: 'postgres' })
    if (typeof bouncer !== 'string') await bouncer.stop()

    const relayed = new Map<Key, PgbenchResult | string>()
    const relay = await ctx.attempt<Proxy>('reference', 'start the Node relay', () => startTcpRelay(pg))
    await each(RELAY, relayed, 'reference', typeof relay === 'string' ? relay : { host: relay.host, port: relay.port, user: 'postgres' })
    if (typeof relay !== 'string') await relay.stop()

    for (const mode of MODES) {
      const gw = await ctx.attempt<GatewayHandle>('portcullis', `start gateway (${mode})`, async () => ctx.gateway(mode, {
        targets: [await pgTarget('bench-pg', pg)],
        masking: mode === 'mask'
          ? [{ id: 'bench-balance', when: { targets: ['bench-pg'] }, columns: ['pgbench_accounts.abalance'], method: 'redact' }]
          : [{ id: 'bench-nohit', when: { targets: ['bench-pg'] }, columns: ['bench_secrets.secret'], method: 'redact' }],
      }))
      const conn = typeof gw === 'string' ? gw : { ...gw.targets['bench-pg'], user: 'bench', password: gw.token }
      await each(`Portcullis (${mode})`, through[mode], 'portcullis', conn)
      if (typeof gw !== 'string') await gw.stop()
    }
    if (ctx.workers === 1 && !ctx.quick) {
      const gw = await ctx.attempt<GatewayHandle>('portcullis', 'start gateway (inspect, 2 workers)', async () => ctx.gateway('inspect', {
        targets: [await pgTarget('bench-pg', pg)],
        masking: [{ id: 'bench-nohit', when: { targets: ['bench-pg'] }, columns: ['bench_secrets.secret'], method: 'redact' }],
      }, { workers: 2 }))
      const conn = typeof gw === 'string' ? gw : { ...gw.targets['bench-pg'], user: 'bench', password: gw.token }
      // a fresh gateway, beside the 1-worker one that is warm from the combinations before: each
      // worker's parser and classification cache warm up first, unmeasured
      if (typeof conn !== 'string') {
        for (const mode of ['simple', 'prepared'] as const) {
          await ctx.attempt('portcullis', `2 workers warm-up (${mode})`, () => pgbench({ ...conn, database: 'bench', clients: 8, seconds: 1, mode, tmp: ctx.tmp, label: 'warm-up' }))
        }
      }
      await each('Portcullis (inspect, 2 workers)', twoWorkers, 'portcullis', conn, TWO_WORKERS)
      if (typeof gw !== 'string') await gw.stop()
    }

    const rows: Row[] = []
    for (const [clients, proto] of combos) {
      {
        const key: Key = `${clients}/${proto}`
        const name = `pgbench -S ${clients} client${clients > 1 ? 's' : ''} ${proto}`
        const d = direct.get(key)!, r = reference.get(key)!, n = relayed.get(key)!
        const common = { scenario: name, referenceName: 'pgbouncer' }
        for (const mode of MODES) {
          const p = through[mode].get(key)!
          const two = mode === 'inspect' && twoWorkers.has(key) ? { portcullis2: field(twoWorkers.get(key)!, 'tps') } : {}
          rows.push({ ...common, metric: 'TPS', mode, higherIsBetter: true, direct: field(d, 'tps'), portcullis: field(p, 'tps'), ...two, reference: field(r, 'tps'), columns: { [RELAY]: field(n, 'tps') } })
        }
        const p = through.inspect.get(key)!
        const latency = (metric: string, k: keyof PgbenchResult) =>
          rows.push({ ...common, metric, mode: 'inspect', higherIsBetter: false, direct: field(d, k), portcullis: field(p, k), reference: field(r, k), columns: { [RELAY]: field(n, k) } })
        if (clients === 1) latency('p50 ms', 'p50Ms')
        latency('avg ms', 'avgMs')
        latency('p99 ms', 'p99Ms')
      }
    }
    return rows
  },
}
export default scenario
