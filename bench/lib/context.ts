// The run's shared state: lazily started servers, the gateway launcher, and the bookkeeping that
// turns a missing piece into 'n/a (reason)' and a failure through the gateway into a failed run.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { GatewayProcess, type GatewayHandle, type GatewayMode } from './gateway.ts'
import { startPostgres, type PostgresServer } from './postgres.ts'
import { startRedis, type RedisServer } from './redis.ts'
import { medianOf } from './stats.ts'
import { Unavailable, type BenchContext, type GatewaySpec, type Value } from './types.ts'

export type Path = 'direct' | 'portcullis' | 'reference'

export class Context implements BenchContext {
  readonly quick: boolean
  readonly repeats: number
  /** `--workers N`: every Portcullis the run starts has N node:cluster workers */
  readonly workers: number
  readonly tmp = mkdtempSync(join(tmpdir(), 'portcullis-bench-'))
  /** failures through the gateway: each one makes the run exit 1 */
  readonly failures: string[] = []
  private pg?: Promise<PostgresServer>
  private rd?: Promise<RedisServer>
  private scenario = ''
  private readonly gateways = new Map<GatewayMode, GatewayProcess>()

  constructor(opts: { quick: boolean; repeats: number; workers?: number }) {
    this.quick = opts.quick
    this.repeats = opts.repeats
    this.workers = opts.workers ?? 1
  }

  enter(scenario: string): void { this.scenario = scenario }

  postgres(): Promise<PostgresServer> { return (this.pg ??= startPostgres()) }
  redis(): Promise<RedisServer> { return (this.rd ??= startRedis(this.tmp)) }

  /**
   * Portcullis configured with the scenario's targets. One process per mode serves the whole run
   * (reconfigured by reload); `fresh` starts a process of its own, for a clean peak RSS. `workers`
   * (default: the run's --workers) above 1 is a cluster: always a process of its own (no reload).
   */
  async gateway(mode: GatewayMode, spec: GatewaySpec, opts: { fresh?: boolean; workers?: number } = {}): Promise<GatewayHandle> {
    const workers = opts.workers ?? this.workers
    if (opts.fresh || workers > 1) return (await GatewayProcess.start(this.tmp, spec, true, workers)).handle
    const running = this.gateways.get(mode)
    if (running?.alive) {
      try {
        return await running.configure(spec)
      } catch (err) {
        if (err instanceof Unavailable) throw err
        // a reload that failed says nothing about the data path: measure on a new process instead
        this.log(`reload of the ${mode} gateway failed (${(err as Error).message.split('\n')[0]}); starting a new one`)
        await running.stop()
      }
    }
    const { process: p, handle } = await GatewayProcess.start(this.tmp, spec, false)
    this.gateways.set(mode, p)
    return handle
  }

  log(line: string): void { process.stderr.write(`[bench] ${line}\n`) }

  /**
   * Runs one measurement on one path. A missing piece becomes 'n/a (reason)'; an error becomes
   * 'error (…)' in the table, and counts as a failed run only on the Portcullis path.
   */
  async attempt<T>(path: Path, what: string, fn: () => Promise<T>): Promise<T | string> {
    try {
      return await fn()
    } catch (err) {
      if (err instanceof Unavailable) return `n/a (${err.message})`
      const msg = (err as Error).message ?? String(err)
      this.log(`${this.scenario}: ${what} via ${path} failed: ${msg}`)
      if (path === 'portcullis') this.failures.push(`${this.scenario}: ${what}: ${msg}`)
      return `error (${msg.split('\n')[0].slice(0, 80)})`
    }
  }

  /** repeats a measurement and keeps the median of each field */
  async repeat<T extends Record<string, number>>(fn: () => Promise<T>): Promise<T> {
    const runs: T[] = []
    for (let i = 0; i < this.repeats; i++) runs.push(await fn())
    return medianOf(runs)
  }

  async close(): Promise<void> {
    const stops: Promise<unknown>[] = [...this.gateways.values()].map(g => g.stop())
    if (this.pg) stops.push(this.pg.then(s => s.stop(), () => {}))
    if (this.rd) stops.push(this.rd.then(s => s.stop(), () => {}))
    await Promise.all(stops)
    rmSync(this.tmp, { recursive: true, force: true })
  }
}

/** one field of a measurement, or the reason there is none */
export function field<T extends object>(v: T | string, key: keyof T): Value {
  return typeof v === 'string' ? v : (v[key] as number)
}
