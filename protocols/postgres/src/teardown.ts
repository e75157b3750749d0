// A session ends the way Postgres would end it:
//  - the client sends Terminate or half-closes: everything it sent before goes upstream in order,
//    then the Terminate (or our own EOF); the upstream answers all of it and closes, and every
//    reply is written to the client before its socket ends (endUpstream, then upstreamGone);
//  - the upstream sends a FATAL or PANIC ErrorResponse (pg_terminate_backend, a session timeout):
//    it is forwarded, masked as usual, and is the session's last word (no error of ours after it);
//  - the upstream vanishes without a word, or the gateway refuses to go on: one FATAL of ours;
//  - the client vanishes: everything is torn down at once (close).
import { isPortcullisError, PortcullisError } from '@portcullis/core/errors'
import { serializeErrorResponse } from './backend.ts'
import { pump } from './client-messages.ts'
import { audit } from './completion.ts'
import type { Connection } from './connection.ts'
import { flushResponse, flushUpstream, toUpstream } from './flow-control.ts'
import { TERMINATE } from './frontend.ts'
import { recordRequests } from './request-records.ts'

/** a client ending its session that stops reading the last replies for this long is cut off */
const WRITE_STALL_MS = 30_000

export function close(c: Connection, keepClient = false): void {
  if (c.closed) return
  recordRequests(c)
  // what was already decided and passed goes out first
  flushUpstream(c)
  flushResponse(c)
  c.closed = true
  c.pendingDecision?.abort(new PortcullisError('APPROVAL_WITHDRAWN', 'client disconnected'))
  // a pump parked until the upstream answers (after an admin statement, or for an earlier batch's
  // names) wakes up and, the session being closed, stops
  c.onAnswered?.()
  c.onAnswered = undefined
  c.batchWaiter?.resolve()
  c.batchWaiter = undefined
  // a backend busy with a statement notices a closed socket only when it next writes: stop it
  if (c.ops.some(p => !p.done && !p.error)) c.cancelUpstream()
  // never leak the upstream connection
  c.upstream.removeAllListeners('data')
  if (!c.upstream.destroyed && !c.upstream.writableEnded) c.upstream.end(TERMINATE)
  c.upstream.destroy()
  for (const p of c.ops) if (!p.done) audit(c, p, p.error ?? 'connection closed')
  c.ops = []
  if (!keepClient) {
    c.client.destroy()
    c.finish()
    return
  }
  // the session is done once its last bytes are written: whoever holds the socket destroys it then
  const client = c.client
  if (client.destroyed || client.writableFinished) return c.finish()
  const done = () => {
    client.off('finish', done)
    client.off('close', done)
    c.finish()
  }
  client.on('finish', done)
  client.on('close', done)
  // a client that stops reading must not hold the session open: Node's socket timeout counts
  // inactivity, so a slow reader that still drains is never cut off
  if (typeof (client as { setTimeout?: unknown }).setTimeout === 'function') {
    ;(client as unknown as { setTimeout(ms: number, fn: () => void): void }).setTimeout(WRITE_STALL_MS, () => client.destroy())
  }
}

/** the client sent Terminate (passed upstream) or EOF (passed on as ours) */
export function endUpstream(c: Connection, how: 'terminate' | 'eof', terminate?: Buffer): void {
  if (c.closed || c.ending) return
  c.ending = how
  // Postgres reads nothing after Terminate
  c.inbox.length = 0
  recordRequests(c)
  if (terminate) toUpstream(c, terminate)
  flushUpstream(c)
  c.upstream.end()
  // later client bytes are read and dropped: a socket closed over unread bytes resets the
  // connection, and the reset could overtake the replies still in flight
  const client = c.client
  client.removeAllListeners('data')
  client.on('data', () => undefined)
  c.pauses.client.clear()
  client.resume()
}

/** EOF from the client: Postgres still answers every whole message it read before it */
export function clientEnded(c: Connection): void {
  if (c.closed || c.ending) return
  c.clientEof = true
  // no human decides for a client that has left: the statement is refused (fail closed), and what
  // the upstream runs already runs to its end, as in Postgres
  c.pendingDecision?.abort(new PortcullisError('APPROVAL_WITHDRAWN', 'client disconnected'))
  pump(c)
}

export function upstreamGone(c: Connection): void {
  if (c.closed) return
  // the upstream closed because the client asked it to: the replies are all out
  if (c.ending) return finishGracefully(c)
  fatal(c, '08006', 'upstream connection closed')
}

/** every reply is queued for the client: end its socket once they are written */
export function finishGracefully(c: Connection): void {
  if (c.closed) return
  recordRequests(c)
  flushResponse(c)
  const client = c.client
  client.removeAllListeners('data')
  client.resume()
  if (!client.destroyed && !client.writableEnded) client.end()
  close(c, true)
}

export function sessionAborted(c: Connection): void {
  const reason = c.session.signal.reason
  const msg = isPortcullisError(reason) ? reason.message : 'terminating connection due to administrator command'
  fatal(c, isPortcullisError(reason, 'TOKEN_EXPIRED') || isPortcullisError(reason, 'REVOKED') ? '28000' : '57P01', msg)
}

/** ends the session with a FATAL ErrorResponse that says why */
export function fatal(c: Connection, sqlstate: string, message: string): void {
  if (c.closed) return
  recordRequests(c)
  flushResponse(c)
  c.session.record('error', { message, sqlstate })
  const client = c.client
  // what the client still sends is read and dropped (see endUpstream)
  client.removeAllListeners('data')
  client.resume()
  if (!client.destroyed && !client.writableEnded) client.end(serializeErrorResponse('FATAL', sqlstate, message))
  // a client that never reads must not hold the socket open
  setTimeout(() => client.destroy(), 1000).unref()
  close(c, true)
}

/** the model no longer says what the server holds: nothing more can be decided with certainty */
export function outOfStep(c: Connection, what: string): void {
  fatal(c, '08P01', `the gateway lost track of the session's statements and portals (${what})`)
}
