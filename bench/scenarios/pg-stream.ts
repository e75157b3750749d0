// A big result streamed to a wire-level client (1,000,000 rows, ~100 MB; quick: 100,000): MB/s direct, through
// Portcullis (inspect: no column rule hits; mask: the email column redacted) and through pgbouncer,
// plus the gateway process's peak RSS (VmHWM of its own child process, read from /proc).
import { field, type Context } from '../lib/context.ts'
import { MODES, type GatewayHandle } from '../lib/gateway.ts'
import { streamQuery, type WireResult } from '../lib/pg-wire.ts'
import { startPgbouncer, type Pgbouncer } from '../lib/postgres.ts'
import { ScenarioError, type Row, type Scenario } from '../lib/types.ts'
import { pgTarget } from './pg-pgbench.ts'

type StreamResult = WireResult

const SQL = 'SELECT id, email, payload FROM bench_rows'

/** one simple Query, counted at the wire: every DataRow must arrive */
async function stream(conn: { host: string; port: number; user: string; password?: string }, rows: number, label: string, sql = SQL): Promise<StreamResult> {
  const r = await streamQuery({ ...conn, database: 'bench', sql, label })
  if (r.rows !== rows) throw new ScenarioError(`query via ${label}: ${r.rows} of ${rows} rows arrived`)
  return r
}

const scenario: Scenario = {
  name: 'postgres 1M-row stream',
  quick: true,
  async run(base) {
    const ctx = base as Context
    const pg = await ctx.postgres()
    const rows = ctx.quick ? 100_000 : 1_000_000
    await pg.psql(`CREATE TABLE bench_rows AS SELECT g AS id, 'user' || g || '@example.com' AS email, repeat(md5(g::text), 2) AS payload FROM generate_series(1, ${rows}) g`)
    const label = `${rows.toLocaleString('en-US')}-row result`
    // every path first answers a 10-row query of the same shape, untimed: what is measured is a
    // running gateway's (or pooler's) throughput, not its first statement (a fresh gateway process,
    // started for its RSS, compiles the SQL parser and looks the table's columns up on first use)
    const measure = (path: 'direct' | 'portcullis' | 'reference', name: string, conn: Parameters<typeof stream>[0]) =>
      ctx.attempt(path, 'stream', async () => {
        await stream(conn, 10, name, `${SQL} LIMIT 10`)
        return ctx.repeat(() => stream(conn, rows, name))
      })

    const direct = await measure('direct', 'direct', { host: pg.host, port: pg.port, user: 'postgres' })
    const bouncer = await ctx.attempt<Pgbouncer>('reference', 'start pgbouncer', () => startPgbouncer(pg))
    const reference = typeof bouncer === 'string' ? bouncer : await measure('reference', 'pgbouncer', { host: bouncer.host, port: bouncer.port, user: 'postgres' })
    if (typeof bouncer !== 'string') await bouncer.stop()

    const out: Row[] = []
    for (const mode of MODES) {
      const gw = await ctx.attempt<GatewayHandle>('portcullis', `start gateway (${mode})`, async () => ctx.gateway(mode, {
        targets: [await pgTarget('bench-pg', pg)],
        masking: [{ id: `bench-${mode}`, when: { targets: ['bench-pg'] }, columns: [mode === 'mask' ? 'bench_rows.email' : 'bench_secrets.secret'], method: 'redact' }],
      }, { fresh: true }))
      let p: StreamResult | string = typeof gw === 'string' ? gw : ''
      let rss: number | string = typeof gw === 'string' ? gw : 'n/a (no /proc)'
      if (typeof gw !== 'string') {
        const idle = gw.peakRssMB()
        p = await measure('portcullis', `Portcullis (${mode})`, { ...gw.targets['bench-pg'], user: 'bench', password: gw.token })
        rss = gw.peakRssMB() ?? rss
        await gw.stop()
        if (idle !== undefined && typeof rss === 'number') {
          out.push({ scenario: label, metric: 'gateway RSS at start MB', mode, higherIsBetter: false, direct: '—', portcullis: idle, reference: '—' })
        }
      }
      out.push({ scenario: label, metric: `MB/s${mode === 'mask' ? ' (email column masked)' : ''}`, mode, higherIsBetter: true, referenceName: 'pgbouncer', direct: field(direct, 'mbps'), portcullis: field(p, 'mbps'), reference: field(reference, 'mbps') })
      out.push({ scenario: label, metric: 'gateway peak RSS MB', mode, higherIsBetter: false, direct: '—', portcullis: rss, reference: '—', note: mode === 'inspect' && typeof gw !== 'string' ? `RSS is the VmHWM of the gateway child process (libpg_query included), run ${gw.runtime === 'build' ? 'from the build (dist/)' : 'from the sources through tsx'}` : undefined })
    }
    await pg.psql('DROP TABLE bench_rows')
    return out
  },
}
export default scenario
