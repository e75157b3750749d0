// Runs pgbench and reads what it prints: TPS and average latency from its summary, p50/p99 from the
// per-transaction log (-l), failures from its exit status and "failed transactions" line.
import { appendFileSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { run } from './proc.ts'
import { percentile } from './stats.ts'
import { ScenarioError } from './types.ts'

export type PgbenchResult = { tps: number; avgMs: number; p50Ms: number; p99Ms: number; transactions: number }

export interface PgbenchOptions {
  host: string
  port: number
  user: string
  database: string
  password?: string
  clients: number
  seconds: number
  mode?: 'simple' | 'extended' | 'prepared'
  /** built-in select-only (-S) unless a script file is given */
  script?: string
  tmp: string
  /** names the path in error messages */
  label: string
  /** the per-transaction log lines (-l) are appended to this file too (pg-profile.ts --tail) */
  keepLog?: string
}

export async function pgbench(o: PgbenchOptions): Promise<PgbenchResult> {
  // -T counts connection setup: on a busy machine 32 connections can take the whole run, which
  // says nothing about the path. Such a run (no transaction, no failure) is run again, longer.
  for (let seconds = o.seconds; ; seconds *= 2) {
    const r = await pgbenchOnce({ ...o, seconds })
    if (r !== 'no-transactions') return r
    if (seconds >= o.seconds * 8) throw new ScenarioError(`pgbench via ${o.label}: no transaction completed in ${seconds} s`)
  }
}

async function pgbenchOnce(o: PgbenchOptions): Promise<PgbenchResult | 'no-transactions'> {
  const logDir = mkdtempSync(join(o.tmp, 'pgbench-'))
  const args = [
    '-h', o.host, '-p', String(o.port), '-U', o.user,
    '-n', // no vacuum: the bench measures queries, and a proxy's policy may refuse VACUUM
    '-c', String(o.clients), '-j', String(Math.min(o.clients, 2)),
    '-T', String(o.seconds), '-M', o.mode ?? 'simple',
    '-l', `--log-prefix=${join(logDir, 'tx')}`,
    ...(o.script ? ['-f', o.script] : ['-S']),
    o.database,
  ]
  const env = { ...process.env, PGPASSWORD: o.password ?? '', PGCONNECT_TIMEOUT: '10' }
  const r = await run('pgbench', args, { env, timeoutMs: (o.seconds + 60) * 1000 })
  try {
    const out = r.stdout + r.stderr
    const failed = /number of failed transactions: (\d+)/.exec(out)
    const txs = /number of transactions actually processed: (\d+)/.exec(out)
    if (r.code !== 0 || (failed && Number(failed[1]) > 0)) {
      throw new ScenarioError(`pgbench via ${o.label} failed (exit ${r.code}): ${tail(out)}`)
    }
    if (txs && Number(txs[1]) === 0) return 'no-transactions'
    const tps = /tps = ([\d.]+) \(without initial connection time\)/.exec(out) ?? /tps = ([\d.]+)/.exec(out)
    const avg = /latency average = ([\d.]+) ms/.exec(out)
    if (!tps || !avg) throw new ScenarioError(`pgbench via ${o.label}: no summary in output: ${tail(out)}`)
    const lat = latenciesFromLogs(logDir)
    if (o.keepLog) for (const f of readdirSync(logDir)) appendFileSync(o.keepLog, readFileSync(join(logDir, f)))
    return { tps: Number(tps[1]), avgMs: Number(avg[1]), p50Ms: percentile(lat, 50) / 1000, p99Ms: percentile(lat, 99) / 1000, transactions: Number(txs?.[1] ?? 0) }
  } finally {
    rmSync(logDir, { recursive: true, force: true })
  }
}

/** per-transaction log lines: client_id transaction_no latency_us script_no epoch epoch_us */
function latenciesFromLogs(dir: string): number[] {
  const lat: number[] = []
  for (const f of readdirSync(dir)) {
    for (const line of readFileSync(join(dir, f), 'utf8').split('\n')) {
      const i = line.indexOf(' ')
      const j = line.indexOf(' ', i + 1)
      const k = line.indexOf(' ', j + 1)
      if (k < 0) continue
      lat.push(Number(line.slice(j + 1, k)))
    }
  }
  return lat
}

function tail(s: string): string {
  return s.trim().split('\n').slice(-6).join(' | ')
}
