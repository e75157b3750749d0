// The shapes every scenario shares. A row is one measured quantity seen three ways (direct, through
// Portcullis, through the reference proxy); a value is a number or the reason there is none.
import type { GatewayHandle, GatewayMode } from './gateway.ts'
import type { PostgresServer } from './postgres.ts'
import type { RedisServer } from './redis.ts'

/** a measured number, or why there is none ('n/a (redis codec not available yet)') */
export type Value = number | string

export interface Row {
  scenario: string
  /** what is measured, with its unit: 'TPS', 'p99 ms', 'MB/s' */
  metric: string
  /** true for throughput, false for latencies and memory: decides nothing, only how to read ratios */
  higherIsBetter: boolean
  /** Portcullis mode this row's Portcullis value was taken in */
  mode?: GatewayMode
  direct: Value
  portcullis: Value
  /** Portcullis with 2 node:cluster workers, where the scenario measures it (same mode) */
  portcullis2?: Value
  reference: Value
  /** 'pgbouncer', 'nutcracker', 'nginx' */
  referenceName?: string
  /**
   * more paths measured the same way, by column name ('Node relay', 'Portkey'): each becomes a
   * value column and a Portcullis ÷ column in the table (lib/table.ts); a row without one reads '—'
   */
  columns?: Record<string, Value>
  note?: string
}

export interface BenchContext {
  quick: boolean
  /** how many times a full run repeats each measurement (quick: 1) */
  repeats: number
  /** `--workers N` (default 1): node:cluster workers of every Portcullis the run starts */
  workers: number
  /** scratch directory, removed at the end */
  tmp: string
  /** shared servers, started on first use and stopped at the end */
  postgres(): Promise<PostgresServer>
  redis(): Promise<RedisServer>
  /** Portcullis in a child process serving the given targets (shared per mode unless fresh); the scenario calls stop() */
  gateway(mode: GatewayMode, spec: GatewaySpec, opts?: { fresh?: boolean; workers?: number }): Promise<GatewayHandle>
  log(line: string): void
}

export interface GatewaySpec {
  targets: Record<string, unknown>[]
  /** masking rules for this mode */
  masking: Record<string, unknown>[]
}

export interface Scenario {
  name: string
  /** part of `--quick` */
  quick: boolean
  run(ctx: BenchContext): Promise<Row[]>
}

/**
 * Thrown when requests failed through the gateway: the run goes on, the row says so, and the
 * process exits 1 at the end. Anything missing (a codec not written yet, a reference proxy not
 * installed) is not an error: it becomes 'n/a (reason)'.
 */
export class ScenarioError extends Error {
  constructor(message: string) {
    super(message)
    this.name = 'ScenarioError'
  }
}

/** a piece is not there: report n/a, do not fail */
export class Unavailable extends Error {
  constructor(reason: string) {
    super(reason)
    this.name = 'Unavailable'
  }
}
