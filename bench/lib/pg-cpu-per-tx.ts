// `node --import tsx bench/lib/pg-cpu-per-tx.ts [--rounds 3] [--seconds 3] [--combos 1/simple,8/simple,8/prepared,8/extended] [--compare DIR]`
// CPU per transaction of the gateway and of the plain Node relay under the same pgbench -S load,
// read from /proc/PID/stat (user and system time), rounds interleaved (direct, relay, Portcullis in
// turn), medians printed. On a shared machine TPS moves 2–3× from run to run with the load; the CPU a
// process spends per transaction moves much less, and it is what sets TPS once the machine is quiet.
// Portcullis runs from dist/ (node scripts/build.mjs first), in inspect mode as in pg-pgbench.ts,
// with --trace-gc: what it allocates per transaction (young generation filled between scavenges)
// does not depend on the load at all. ALLOC_PROF=FILE: an allocation profile of the gateway
// (alloc-sampling.mjs; read it with heapprofile-top.ts).
import { readFileSync, mkdtempSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { Context } from './context.ts'
import { pgbench, type PgbenchResult } from './pgbench.ts'
import { run } from './proc.ts'
import { startTcpRelay } from './relays.ts'
import { pgTarget } from '../scenarios/pg-pgbench.ts'

const { values } = parseArgs({ options: { rounds: { type: 'string' }, seconds: { type: 'string' }, combos: { type: 'string' }, compare: { type: 'string' } } })
const rounds = Number(values.rounds ?? 3)
const seconds = Number(values.seconds ?? 3)
const combos = (values.combos ?? '1/simple,8/simple,8/prepared,8/extended').split(',').map(s => {
  const [c, m] = s.split('/')
  return [Number(c), m as 'simple' | 'extended' | 'prepared'] as const
})
const root = fileURLToPath(new URL('../..', import.meta.url))

/** user and system time of a process so far, µs (the kernel counts in ticks of 10 ms) */
function cpu(pid: number): { user: number; system: number } {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
  return { user: Number(f[11]) * 10_000, system: Number(f[12]) * 10_000 }
}

const ctx = new Context({ quick: true, repeats: 1 })
try {
  const pg = await ctx.postgres()
  await run('pgbench', ['-i', '-q', '-s', '1', '-h', pg.host, '-p', String(pg.port), '-U', 'postgres', 'bench'])
  // the relay of the bench, and one gateway process of our own: its pid is what /proc is read for
  const relay = await startTcpRelay(pg)
  const dir = mkdtempSync(join(ctx.tmp, 'gw-'))
  const masking = [{ id: 'bench-nohit', when: { targets: ['bench-pg'] }, columns: ['bench_secrets.secret'], method: 'redact' }]
  /** a gateway from `dist` (a build of this tree, or of another commit: --compare) */
  const startGateway = async (dist: string, name: string) => {
    const spec = join(dir, `${name.replace(/\W+/g, '_')}.json`)
    writeFileSync(spec, JSON.stringify({ dir: mkdtempSync(join(dir, 'rec-')), targets: [await pgTarget('bench-pg', pg)], masking }))
    const gw = spawn(process.execPath, [...(process.env.ALLOC_PROF ? ['--import', join(root, 'bench/lib/alloc-sampling.mjs')] : []), '--trace-gc', join(dist, 'bench-gateway-child.mjs'), spec], { stdio: ['pipe', 'pipe', 'inherit'], env: { ...process.env, NODE_ENV: 'production' } })
    const heap = { allocatedMB: 0 }
    const lastAfter = new Map<string, number>()
    const ready = await new Promise<{ ready?: boolean; targets: Record<string, { host: string; port: number }>; token: string }>(r =>
      createInterface({ input: gw.stdout! }).on('line', l => {
        if (l.startsWith('@@bench ')) return r(JSON.parse(l.slice(8)))
        // "Scavenge 42.5 (62.7) -> 30.1 (62.9) MB": the heap before and after; what was allocated since
        // the last one is this one's before minus that one's after
        // (per isolate: the recorder's writer thread has a heap of its own)
        const m = /^\[(\d+:0x[0-9a-f]+)\].* Scavenge ([\d.]+) \([\d.]+\) -> ([\d.]+) /.exec(l)
        if (!m) return
        const last = lastAfter.get(m[1])
        if (last !== undefined) heap.allocatedMB += Number(m[2]) - last
        lastAfter.set(m[1], Number(m[3]))
      }),
    )
    if (!ready.ready) throw new Error(`gateway: ${JSON.stringify(ready)}`)
    return { gw, name, heap, conn: { ...ready.targets['bench-pg'], user: 'bench', password: ready.token }, pid: gw.pid }
  }
  const gateways = [await startGateway(join(root, 'dist'), 'Portcullis')]
  // --compare DIR: a second gateway from DIR/dist (e.g. `git archive` of the commit before, built),
  // measured in the same rounds: before/after figures from one sitting
  if (values.compare) gateways.push(await startGateway(join(values.compare, 'dist'), 'Portcullis (compare)'))
  const noHeap = { allocatedMB: 0 }
  const paths = [
    { name: 'direct', conn: { host: pg.host, port: pg.port, user: 'postgres' }, pid: undefined as number | undefined, heap: noHeap },
    { name: 'relay', conn: { host: relay.host, port: relay.port, user: 'postgres' }, pid: relay.pid, heap: noHeap },
    ...gateways.map(g => ({ name: g.name, conn: g.conn, pid: g.pid, heap: g.heap })),
  ]
  for (const g of gateways) for (const [clients, mode] of combos) await pgbench({ ...g.conn, database: 'bench', clients, seconds: 1, mode, tmp: ctx.tmp, label: 'warm-up' })
  const got = new Map<string, (PgbenchResult & { userUs: number; systemUs: number; allocKB: number })[]>()
  for (let r = 0; r < rounds; r++) {
    for (const [clients, mode] of combos) {
      for (const p of paths) {
        const before = p.pid ? cpu(p.pid) : { user: 0, system: 0 }
        const allocBefore = p.heap.allocatedMB
        const out = await pgbench({ ...p.conn, database: 'bench', clients, seconds, mode, tmp: ctx.tmp, label: p.name })
        const after = p.pid ? cpu(p.pid) : { user: 0, system: 0 }
        const key = `${clients}/${mode} ${p.name}`
        got.set(key, [...(got.get(key) ?? []), { ...out, userUs: (after.user - before.user) / out.transactions, systemUs: (after.system - before.system) / out.transactions, allocKB: ((p.heap.allocatedMB - allocBefore) * 1024) / out.transactions }])
      }
    }
  }
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]
  const load = readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ')
  process.stdout.write(`load ${load} · ${rounds} rounds × ${seconds} s · medians\n`)
  for (const [clients, mode] of combos) {
    const m = (name: string, k: 'tps' | 'p50Ms' | 'p99Ms' | 'userUs' | 'systemUs' | 'allocKB') => median(got.get(`${clients}/${mode} ${name}`)!.map(x => x[k]))
    const us = (name: string) => `${(m(name, 'userUs') + m(name, 'systemUs')).toFixed(1)} µs (user ${m(name, 'userUs').toFixed(1)})`
    process.stdout.write(
      `${clients}/${mode}: TPS direct ${m('direct', 'tps').toFixed(0)}, relay ${m('relay', 'tps').toFixed(0)}, Portcullis ${m('Portcullis', 'tps').toFixed(0)}` +
        ` · p50 ms ${m('direct', 'p50Ms')} / ${m('relay', 'p50Ms')} / ${m('Portcullis', 'p50Ms')} · p99 ms ${m('direct', 'p99Ms')} / ${m('relay', 'p99Ms')} / ${m('Portcullis', 'p99Ms')}` +
        ` · CPU per transaction: relay ${us('relay')}, Portcullis ${us('Portcullis')} · Portcullis allocates ${m('Portcullis', 'allocKB').toFixed(2)} KB\n`,
    )
    const c = 'Portcullis (compare)'
    if (values.compare) {
      process.stdout.write(
        `  compare (${values.compare}): TPS ${m(c, 'tps').toFixed(0)} · p50 ms ${m(c, 'p50Ms')} · p99 ms ${m(c, 'p99Ms')} · CPU per transaction ${us(c)} · allocates ${m(c, 'allocKB').toFixed(2)} KB\n`,
      )
    }
  }
  for (const g of gateways) {
    g.gw.kill('SIGTERM')
    await new Promise(r => g.gw.once('close', r))
  }
  await relay.stop()
} finally {
  await ctx.close()
}
