// pgvector top-k search (k = 10, 64-dimension vectors, exact scan of 2,000 rows) against PGlite
// served over pglite-socket: queries/s direct, through Portcullis (inspect; mask: the items' label
// column masked) and through pgbouncer. PGlite is one backend, so all paths use 4 clients.
import { writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { field, type Context } from '../lib/context.ts'
import { MODES, type GatewayHandle } from '../lib/gateway.ts'
import { pgbench, type PgbenchResult } from '../lib/pgbench.ts'
import { startPgbouncer, type Pgbouncer } from '../lib/postgres.ts'
import { freePort, requireTool } from '../lib/proc.ts'
import { Unavailable, type Row, type Scenario } from '../lib/types.ts'

const ITEMS = 2000
const CLIENTS = 4

const scenario: Scenario = {
  name: 'pgvector top-k on PGlite',
  quick: true,
  async run(base) {
    const ctx = base as Context
    requireTool('pgbench')
    const mod = (await import('@portcullis/fixtures/pglite').catch(() => undefined)) as Record<string, any> | undefined
    if (typeof mod?.startPglite !== 'function') {
      const na = 'n/a (PGlite fixture not available yet)'
      return [{ scenario: 'pgvector top-10', metric: 'queries/s', higherIsBetter: true, direct: na, portcullis: na, reference: na }]
    }
    const lite = await mod.startPglite({ seed: false })
    try {
      await lite.db.exec(`
        CREATE TABLE items (id int PRIMARY KEY, label text, embedding vector(64));
        INSERT INTO items SELECT g, 'item ' || g, array_agg(random())::real[]::vector(64)
          FROM generate_series(1, ${ITEMS}) g, generate_series(1, 64) d GROUP BY g;
      `)
      const script = join(ctx.tmp, 'topk.sql')
      writeFileSync(script, [
        `\\set id random(1, ${ITEMS})`,
        'SELECT id, label FROM items ORDER BY embedding <-> (SELECT embedding FROM items WHERE id = :id) LIMIT 10;',
        '',
      ].join('\n'))
      const seconds = ctx.quick ? 2 : 10
      const run = (path: 'direct' | 'portcullis' | 'reference', label: string, conn: { host: string; port: number; user: string; password?: string }) =>
        ctx.attempt(path, 'top-k', () => ctx.repeat(() => pgbench({ ...conn, database: lite.database, clients: CLIENTS, seconds, mode: 'extended', script, tmp: ctx.tmp, label }).catch(err => {
          // PGlite serves every connection from one backend: the gateway's own catalog lookup (a
          // mask rule resolving the items table) can land between another client's Bind and
          // Execute and drop its unnamed portal. Real Postgres gives each connection its own
          // backend, so this is the fixture's limit, reported as such rather than as a timing.
          if (path === 'portcullis' && /portal "" does not exist/.test(String((err as Error).message))) {
            throw new Unavailable('PGlite shares one backend across connections; the catalog lookup broke a concurrent pipeline')
          }
          throw err
        })))

      const direct = await run('direct', 'direct', { host: lite.host, port: lite.port, user: lite.user, password: lite.password })
      const bouncer = await ctx.attempt<Pgbouncer>('reference', 'start pgbouncer', () => startPgbouncer({ host: lite.host, port: lite.port }, lite.database))
      const reference: PgbenchResult | string = typeof bouncer === 'string' ? bouncer : await run('reference', 'pgbouncer', { host: bouncer.host, port: bouncer.port, user: 'postgres' })
      if (typeof bouncer !== 'string') await bouncer.stop()

      const rows: Row[] = []
      for (const mode of MODES) {
        const gw = await ctx.attempt<GatewayHandle>('portcullis', `start gateway (${mode})`, async () => ctx.gateway(mode, {
          targets: [{
            name: 'bench-vector', protocol: 'postgres', listen: `127.0.0.1:${await freePort()}`,
            upstream: { host: lite.host, port: lite.port, database: lite.database, user: lite.user },
          }],
          masking: [{ id: `bench-${mode}`, when: { targets: ['bench-vector'] }, columns: [mode === 'mask' ? 'items.label' : 'bench_secrets.secret'], method: 'redact' }],
        }))
        let p: PgbenchResult | string = typeof gw === 'string' ? gw : ''
        if (typeof gw !== 'string') {
          p = await run('portcullis', `Portcullis (${mode})`, { ...gw.targets['bench-vector'], user: 'bench', password: gw.token })
          await gw.stop()
        }
        rows.push({ scenario: `pgvector top-10 of ${ITEMS} × 64-d, ${CLIENTS} clients`, metric: 'queries/s', mode, higherIsBetter: true, referenceName: 'pgbouncer', direct: field(direct, 'tps'), portcullis: field(p, 'tps'), reference: field(reference, 'tps') })
      }
      return rows
    } finally {
      await lite.stop()
    }
  },
}
export default scenario
