// Identity on an HTTP connection: one token per connection. The first request's token is verified
// and its principal kept for the connection (compared by digest, in constant time); a request with a
// different token gets 401 and the connection closes — the client opens a new connection for another
// identity. The connection's state (Conn) lives here, keyed by the client's socket.
import { createHash, timingSafeEqual } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { Session, TargetConfig } from '@portcullis/core'
import { httpError } from './errors.ts'

export interface Conn {
  session: Session
  /** digest of the connection's token, set by its first request (pipelined ones wait on `verified`) */
  tokenDigest?: Buffer
  /** the header value that carried that token: the same value again is the same token, unhashed */
  tokenValue?: string
  verified?: Promise<unknown>
  /** `verified` has resolved: the token was accepted */
  accepted?: boolean
}

/** the state of each client connection, by its socket (set by serveHttp, read by each request) */
export const conns = new WeakMap<object, Conn>()

export function tokenHeader(target: TargetConfig): string {
  return typeof target.options.tokenHeader === 'string' ? target.options.tokenHeader.toLowerCase() : 'authorization'
}

function tokenFrom(req: IncomingMessage, header: string): string | undefined {
  const v = req.headers[header]
  const s = Array.isArray(v) ? v[0] : v
  if (!s) return undefined
  const m = /^\s*Bearer\s+(\S+)\s*$/i.exec(s)
  if (m) return m[1]
  return header === 'authorization' ? undefined : s.trim() || undefined
}

/**
 * The connection's own, already accepted token again (the keep-alive case): no digest, no promise.
 * Expiry and revocation are still checked, on every request. The value compared against is the one
 * this same connection presented, so the comparison's timing tells the client nothing it did not send.
 */
export function knownToken(conn: Conn, req: IncomingMessage): boolean {
  if (conn.accepted !== true || conn.tokenValue === undefined || req.headers[tokenHeader(conn.session.target)] !== conn.tokenValue) return false
  conn.session.assertAlive()
  return true
}

export async function identify(conn: Conn, req: IncomingMessage): Promise<void> {
  const { session } = conn
  const header = tokenHeader(session.target)
  const value = req.headers[header]
  // Keep-alive clients send the header of the connection's first request again and again: that is
  // the token already verified, no digest needed. The value compared against is the one this same
  // connection presented, so the comparison's timing tells the client nothing it did not send.
  if (conn.tokenValue !== undefined && value === conn.tokenValue) {
    await conn.verified
    conn.accepted = true
    session.assertAlive()
    return
  }
  const token = tokenFrom(req, header)
  if (!token) throw httpError(401, 'unauthenticated', 'a bearer token is required')
  const digest = createHash('sha256').update(token).digest()
  if (!conn.tokenDigest) {
    conn.tokenDigest = digest
    if (typeof value === 'string') conn.tokenValue = value
    conn.verified = session.authenticate(token)
  } else if (!timingSafeEqual(conn.tokenDigest, digest)) {
    throw httpError(401, 'unauthenticated', 'one token per connection: open a new connection for another token', { close: true })
  }
  // a refused token refuses every request that presented it; the connection then closes
  await conn.verified
  conn.accepted = true
  session.assertAlive()
}
