// One undici Pool per target (per upstream URL and TLS settings), kept while the target config lives.
import { readFileSync } from 'node:fs'
import { Pool } from 'undici'
import type { TargetConfig } from '@portcullis/core'

export interface Upstream {
  pool: Pool
  /** path prefix of target.upstream.url, without a trailing slash */
  prefix: string
  /** ms to wait for the response head */
  headersTimeout: number
  /** ms of silence allowed between body chunks */
  bodyTimeout: number
}

const pools = new WeakMap<TargetConfig, Upstream>()

/** '30s', '500ms', '2m' or a number of ms */
export function durationMs(v: unknown, fallback: number): number {
  if (typeof v === 'number' && Number.isFinite(v) && v > 0) return v
  if (typeof v !== 'string') return fallback
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$/.exec(v)
  if (!m) return fallback
  const n = Number(m[1])
  return m[2] === 's' ? n * 1000 : m[2] === 'm' ? n * 60_000 : n
}

export function upstreamFor(target: TargetConfig): Upstream {
  let u = pools.get(target)
  if (u) return u
  if (!target.upstream.url) throw new Error(`target ${target.name}: http upstream needs a url`)
  const url = new URL(target.upstream.url)
  const tls = target.upstream.tls
  const headersTimeout = durationMs(target.options.upstreamTimeout, 60_000)
  const bodyTimeout = durationMs(target.options.upstreamBodyTimeout, Math.max(headersTimeout, 300_000))
  const ca = tls?.ca ? (tls.ca.includes('-----BEGIN') ? tls.ca : readFileSync(tls.ca, 'utf8')) : undefined
  const pool = new Pool(url.origin, {
    connections: typeof target.options.upstreamConnections === 'number' ? target.options.upstreamConnections : 64,
    headersTimeout,
    bodyTimeout,
    connect: url.protocol === 'https:' ? { rejectUnauthorized: tls?.rejectUnauthorized !== false, ca, servername: tls?.servername } : undefined,
  })
  u = { pool, prefix: url.pathname.replace(/\/+$/, ''), headersTimeout, bodyTimeout }
  pools.set(target, u)
  return u
}
