// `node --import tsx bench/lib/pg-profile.ts [--clients 8] [--mode simple] [--seconds 8] [--cpu DIR] [--alloc FILE] [--trace-gc]`
// One gateway (from dist/, inspect mode as pg-cpu-per-tx.ts runs it) under one pgbench -S load,
// profiled: --cpu writes a V8 CPU profile of the gateway into DIR (read it with cpuprofile-top.ts),
// --alloc a sampling allocation profile covering the load (heapprofile-top.ts FILE --per N, N the
// transactions printed here), --trace-gc prints the gateway's GC lines. Prints pgbench's result.
import { mkdtempSync, writeFileSync } from 'node:fs'
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
  options: { clients: { type: 'string' }, mode: { type: 'string' }, seconds: { type: 'string' }, cpu: { type: 'string' }, alloc: { type: 'string' }, 'trace-gc': { type: 'boolean' } },
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
  ]
  // the allocation window: the measured load after a 2 s warm-up (SIGUSR2 around it, alloc-sampling.mjs)
  const env = { ...process.env, NODE_ENV: 'production', ...(values.alloc ? { ALLOC_PROF: values.alloc, ALLOC_PROF_DELAY_MS: 'signal' } : {}) }
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
  if (values.alloc) gw.kill('SIGUSR2')
  const out = await pgbench({ ...conn, clients, seconds, mode })
  if (values.alloc) {
    gw.kill('SIGUSR2')
    await new Promise(r => setTimeout(r, 1000))
  }
  process.stdout.write(`${clients}/${mode}: ${JSON.stringify(out)}\n`)
  gw.kill('SIGTERM')
  await new Promise(r => gw.once('close', r))
} finally {
  await ctx.close()
}
