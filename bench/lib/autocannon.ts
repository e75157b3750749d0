// autocannon in its own process (the CLI, --json), so the load generator never shares an event loop
// with the bench or the gateway. Any error, timeout or non-2xx answer means requests failed.
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { run } from './proc.ts'
import { ScenarioError } from './types.ts'

export type HttpLoadResult = { rps: number; p50Ms: number; p99Ms: number; mbps: number; /** requests answered */ total: number }

const here = dirname(fileURLToPath(import.meta.url))
const CLI = join(here, '..', 'node_modules', 'autocannon', 'autocannon.js')

export interface HttpLoadOptions {
  url: string
  connections: number
  seconds: number
  method?: string
  headers?: Record<string, string>
  body?: string
  label: string
}

export async function autocannon(o: HttpLoadOptions): Promise<HttpLoadResult> {
  // a run in which no answer came back in time, and none failed, is too short for this path: run
  // it again, longer; only errors, timeouts, non-2xx answers or nothing at all after that fail it
  for (let seconds = o.seconds; ; seconds *= 2) {
    const r = await autocannonOnce({ ...o, seconds })
    if (r !== 'no-requests') return r
    if (seconds >= o.seconds * 8) throw new ScenarioError(`autocannon via ${o.label}: no answer completed in ${seconds} s`)
  }
}

async function autocannonOnce(o: HttpLoadOptions): Promise<HttpLoadResult | 'no-requests'> {
  // a generous per-request timeout: a slow answer is a slow number, only a lost one is a failure
  const args = [CLI, '-j', '-n', '-t', '30', '-c', String(o.connections), '-d', String(o.seconds), '-m', o.method ?? 'GET']
  for (const [k, v] of Object.entries(o.headers ?? {})) args.push('-H', `${k}=${v}`)
  if (o.body) args.push('-b', o.body)
  args.push(o.url)
  const r = await run(process.execPath, args, { timeoutMs: (o.seconds + 60) * 1000 })
  let res: any
  try {
    res = JSON.parse(r.stdout)
  } catch {
    throw new ScenarioError(`autocannon via ${o.label}: exit ${r.code}: ${(r.stderr || r.stdout).trim().slice(-300)}`)
  }
  const bad = (res.errors ?? 0) + (res.timeouts ?? 0) + (res.non2xx ?? 0)
  if (bad === 0 && !res.requests?.total) return 'no-requests'
  if (bad > 0) {
    throw new ScenarioError(`autocannon via ${o.label}: ${res.errors} errors, ${res.timeouts} timeouts, ${res.non2xx} non-2xx of ${res.requests?.total ?? 0} requests`)
  }
  return {
    rps: res.requests.average,
    p50Ms: res.latency.p50,
    p99Ms: res.latency.p99,
    mbps: res.throughput.average / 1e6,
    total: res.requests.total,
  }
}
