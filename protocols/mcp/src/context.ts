// What a tool call knows of its caller and of the gateway around it.
import type { Peer, Peers, Principal } from '@portcullis/core'
import { Pool } from './pool.ts'

export interface CallContext {
  principal: Principal
  /** the caller's current bearer token (the latest request's): it authenticates every connection to a target */
  token(): string
  peers: Peers
  /** the connection pool of one exposed target, made on first use */
  pool<C>(peer: Peer, make: () => Pool<C>): Pool<C>
  /** the target's options of the MCP target (limits) */
  options: Record<string, unknown>
}

/** progress while a call is held: a notification every PROGRESS_MS, and at once when the id is known */
export const PROGRESS_MS = 1_000

export function num(options: Record<string, unknown>, key: string, fallback: number): number {
  const v = options[key]
  return typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : fallback
}
