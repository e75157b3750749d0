// Runs redis-benchmark --csv and reads requests/s and latency percentiles per test. Errors from the
// server (-e prints them) mean requests failed on that path.
import { run } from './proc.ts'
import { ScenarioError } from './types.ts'

export type RedisBenchResult = { rps: number; p50Ms: number; p99Ms: number }

export interface RedisBenchOptions {
  host: string
  port: number
  password?: string
  clients: number
  requests: number
  pipeline: number
  /** -t tests (get,set) or a custom command */
  tests?: string[]
  command?: string[]
  label: string
}

export async function redisBenchmark(o: RedisBenchOptions): Promise<Record<string, RedisBenchResult>> {
  const args = ['-h', o.host, '-p', String(o.port), '-c', String(o.clients), '-n', String(o.requests),
    '-P', String(o.pipeline), '-r', '10000', '-d', '64', '--csv', '-e']
  if (o.password) args.push('-a', o.password)
  if (o.tests) args.push('-t', o.tests.join(','))
  if (o.command) args.push(...o.command)
  const r = await run('redis-benchmark', args, { timeoutMs: 300_000, env: { ...process.env } })
  const out = r.stdout + r.stderr
  const serverError = /(Error from server:[^\n]*|NOPERM[^\n]*|NOAUTH[^\n]*|AUTH failed[^\n]*)/i.exec(out)
  if (r.code !== 0 || serverError) {
    throw new ScenarioError(`redis-benchmark via ${o.label}: ${serverError?.[1] ?? `exit ${r.code}: ${out.trim().slice(-300)}`}`)
  }
  const results: Record<string, RedisBenchResult> = {}
  let header: string[] | undefined
  for (const line of r.stdout.split('\n')) {
    if (!line.startsWith('"')) continue
    const cells = line.split('","').map(c => c.replace(/^"|"$/g, ''))
    if (cells[0] === 'test') { header = cells; continue }
    if (!header) continue
    const at = (name: string) => Number(cells[header!.indexOf(name)])
    results[cells[0].split(' ')[0].toUpperCase()] = { rps: at('rps'), p50Ms: at('p50_latency_ms'), p99Ms: at('p99_latency_ms') }
  }
  if (Object.keys(results).length === 0) throw new ScenarioError(`redis-benchmark via ${o.label}: no results: ${out.trim().slice(-300)}`)
  return results
}
