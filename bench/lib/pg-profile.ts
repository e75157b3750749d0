// `node --import tsx bench/lib/pg-profile.ts [--clients 8] [--mode simple] [--seconds 8] [--cpu DIR] [--alloc FILE] [--trace-gc] [--tail]`
// One gateway (from dist/, inspect mode as pg-cpu-per-tx.ts runs it) under one pgbench -S load,
// profiled: --cpu writes a V8 CPU profile of the gateway into DIR (read it with cpuprofile-top.ts),
// --alloc a sampling allocation profile covering the load (heapprofile-top.ts FILE --per N, N the
// transactions printed here), --trace-gc prints the gateway's GC lines. --tail: which of the slowest
// 1% of transactions overlapped a GC pause or a 50 ms timer's callback in the gateway (tail-probe.mjs,
// wall-clock times matched with pgbench's per-transaction log), against the share of all of them.
// Prints pgbench's result.
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { fileURLToPath } from 'node:url'
import { Context } from './context.ts'
import { pgbench } from './pgbench.ts'
import { run } from './proc.ts'
import { pgTarget } from '../scenarios/pg-pgbench.ts'

const { values } = parseArgs({
  options: { clients: { type: 'string' }, mode: { type: 'string' }, seconds: { type: 'string' }, cpu: { type: 'string' }, alloc: { type: 'string' }, 'trace-gc': { type: 'boolean' }, tail: { type: 'boolean' } },
})
const clients = Number(values.clients ?? 8)
const mode = (values.mode ?? 'simple') as 'simple' | 'extended' | 'prepared'
const seconds = Number(values.seconds ?? 8)
const root = fileURLToPath(new URL('../..', import.meta.url))

const ctx = new Context({ quick: true, repeats: 1 })
try {
  const pg = await ctx.postgres()
  await run('pgbench', ['-i', '-q', '-s', '1', '-h', pg.host, '-p', String(pg.port), '-U', 'postgres', 'bench'])
  const dir = mkdtempSync(join(ctx.tmp, 'gw-'))
  const masking = [{ id: 'bench-nohit', when: { targets: ['bench-pg'] }, columns: ['bench_secrets.secret'], method: 'redact' }]
  writeFileSync(join(dir, 'spec.json'), JSON.stringify({ dir, targets: [await pgTarget('bench-pg', pg)], masking }))
  const flags = [
    ...(values.cpu ? ['--cpu-prof', `--cpu-prof-dir=${values.cpu}`] : []),
    ...(values.alloc ? ['--import', join(root, 'bench/lib/alloc-sampling.mjs')] : []),
    ...(values['trace-gc'] ? ['--trace-gc'] : []),
    ...(values.tail ? ['--import', join(root, 'bench/lib/tail-probe.mjs')] : []),
  ]
  const probe = join(ctx.tmp, 'tail-probe.json')
  const txLog = join(ctx.tmp, 'tail-tx.log')
  // the allocation window: the measured load after a 2 s warm-up (SIGUSR2 around it, alloc-sampling.mjs)
  const env = { ...process.env, NODE_ENV: 'production', ...(values.alloc ? { ALLOC_PROF: values.alloc, ALLOC_PROF_DELAY_MS: 'signal' } : {}), ...(values.tail ? { TAIL_PROBE: probe } : {}) }
  const gw = spawn(process.execPath, [...flags, join(root, 'dist/bench-gateway-child.mjs'), join(dir, 'spec.json')], { stdio: ['pipe', 'pipe', 'inherit'], env })
  const ready = await new Promise<{ ready?: boolean; targets: Record<string, { host: string; port: number }>; token: string }>(r =>
    createInterface({ input: gw.stdout! }).on('line', l => {
      if (l.startsWith('@@bench ')) return r(JSON.parse(l.slice(8)))
      if (values['trace-gc'] && /Scavenge|Mark-Compact|Mark-sweep/.test(l)) process.stdout.write(`gc ${Date.now()} ${l}\n`)
    }),
  )
  if (!ready.ready) throw new Error(`gateway: ${JSON.stringify(ready)}`)
  const conn = { ...ready.targets['bench-pg'], user: 'bench', password: ready.token, database: 'bench', tmp: ctx.tmp, label: 'Portcullis' }
  await pgbench({ ...conn, clients, seconds: 2, mode })
  const signalled = values.alloc || values.tail
  if (signalled) gw.kill('SIGUSR2')
  const out = await pgbench({ ...conn, clients, seconds, mode, ...(values.tail ? { keepLog: txLog } : {}) })
  if (signalled) {
    gw.kill('SIGUSR2')
    await new Promise(r => setTimeout(r, 1000))
  }
  if (values.tail) tail(txLog, probe)
  process.stdout.write(`${clients}/${mode}: ${JSON.stringify(out)}\n`)
  gw.kill('SIGTERM')
  await new Promise(r => gw.once('close', r))
} finally {
  await ctx.close()
}

/** the slowest 1% of transactions against what held the gateway's main thread while they ran */
function tail(txLog: string, probeFile: string): void {
  const { gc, timers } = JSON.parse(readFileSync(probeFile, 'utf8')) as { gc: [number, number, number][]; timers: [number, number, string][] }
  // client_id transaction_no latency_us script_no epoch_s epoch_us: [start, end] in epoch ms
  const txs = readFileSync(txLog, 'utf8').split('\n').filter(Boolean).map(l => {
    const f = l.split(' ').map(Number)
    const end = f[4]! * 1000 + f[5]! / 1000
    return { start: end - f[2]! / 1000, end, ms: f[2]! / 1000 }
  })
  const byLatency = [...txs].sort((a, b) => b.ms - a.ms)
  const slow = byLatency.slice(0, Math.max(1, Math.floor(txs.length / 100)))
  const overlaps = (t: { start: number; end: number }, events: [number, number, ...unknown[]][]) => events.some(([at, d]) => at < t.end && at + d > t.start)
  const share = (set: typeof txs, events: [number, number, ...unknown[]][]) => ((100 * set.filter(t => overlaps(t, events)).length) / set.length).toFixed(1)
  const sum = (xs: number[]) => xs.reduce((a, b) => a + b, 0)
  const q = (xs: number[], p: number) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) * p)] ?? 0
  process.stdout.write(
    `tail: ${txs.length} transactions, p99 ${q(txs.map(t => t.ms), 0.99).toFixed(3)} ms; slowest 1% (${slow.length}, from ${slow.at(-1)!.ms.toFixed(3)} ms)\n` +
      `  GC: ${gc.length} pauses, ${sum(gc.map(g => g[1])).toFixed(1)} ms in all, longest ${Math.max(0, ...gc.map(g => g[1])).toFixed(2)} ms; overlap ${share(slow, gc)}% of the slowest, ${share(txs, gc)}% of all\n` +
      [...new Set(timers.map(x => x[2]))].map(name => {
        const mine = timers.filter(x => x[2] === name)
        return `  ${name === 'writer thread answer' ? name : `50 ms timer ${name}`}: ${mine.length} callbacks, ${sum(mine.map(x => x[1])).toFixed(1)} ms in all, p99 ${q(mine.map(x => x[1]), 0.99).toFixed(3)} ms; overlap ${share(slow, mine)}% of the slowest, ${share(txs, mine)}% of all\n`
      }).join('') +
      `  all of them: ${timers.length} callbacks, ${sum(timers.map(x => x[1])).toFixed(1)} ms in all, p99 ${q(timers.map(x => x[1]), 0.99).toFixed(3)} ms; overlap ${share(slow, timers)}% of the slowest, ${share(txs, timers)}% of all\n`,
  )
}
