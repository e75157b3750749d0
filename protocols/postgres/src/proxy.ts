// The data path after startup: client messages are framed, decided and forwarded in order (a
// statement waiting for a decision holds everything the client pipelined after it); upstream
// messages pass as their original bytes unless a mask applies.
//
// A refused statement is answered through the upstream itself: in place of the statement the
// gateway sends SQL that fails to parse, and rewrites the resulting ErrorResponse into the policy
// error. The upstream then does exactly what Postgres does after an error — discards the extended
// batch until Sync, marks an open transaction block failed ('E'), turns the later COMMIT into
// ROLLBACK — and responses stay in order without the gateway re-sequencing them.
//
// What a Bind or an Execute names comes from the session model (session-state.ts): statements and
// portals as the server holds them, whoever created them. A name the gateway does not know is
// refused; under a mask plan an Execute whose row shape is not known gets a Describe of ours.
import { PortcullisError } from '@portcullis/core/errors'
import { Connection, type ProxyOptions } from './connection.ts'
import { resume } from './flow-control.ts'
import { clientEnded, close, fatal, sessionAborted, upstreamGone } from './teardown.ts'
import { onClientData, pump } from './client-messages.ts'
import { drainUpstream, onUpstreamData } from './upstream-replies.ts'
import type { TransactionStatus } from './backend.ts'

export type { Classifier, ProxyOptions } from './connection.ts'

export class PostgresProxy {
  private readonly c: Connection
  readonly done: Promise<void>

  constructor(opts: ProxyOptions) {
    const c = (this.c = new Connection(opts))
    this.done = c.done
    opts.registerWithdraw(() => {
      if (!c.pendingDecision) return false
      c.pendingDecision.abort(new PortcullisError('APPROVAL_WITHDRAWN', 'canceled by the client'))
      return true
    })

    c.client.on('data', chunk => onClientData(c, chunk))
    c.client.on('end', () => clientEnded(c))
    c.client.on('close', () => close(c))
    c.client.on('error', () => close(c))
    c.client.on('drain', () => resume(c, 'upstream', 'client-drain'))
    c.upstream.on('data', chunk => onUpstreamData(c, chunk))
    c.upstream.on('end', () => upstreamGone(c))
    c.upstream.on('close', () => upstreamGone(c))
    c.upstream.on('error', () => upstreamGone(c))
    c.upstream.on('drain', () => resume(c, 'client', 'upstream-drain'))
    c.session.signal.addEventListener('abort', () => sessionAborted(c), { once: true })

    for (const f of opts.upstreamAhead.frames) c.upstreamQueue.push(f)
    if (opts.upstreamAhead.rest) onUpstreamData(c, opts.upstreamAhead.rest)
    else drainUpstream(c)
    for (const f of opts.clientAhead.frames) c.inbox.push(f)
    if (opts.clientAhead.rest) onClientData(c, opts.clientAhead.rest)
    else pump(c)
    // the startup readers left both sockets paused, so that nothing they read after the handshake
    // was dropped while nobody listened (token verification, the upstream connect); flow now
    if (!c.closed && c.pauses.upstream.size === 0) c.upstream.resume()
    if (!c.closed && c.pauses.client.size === 0) c.client.resume()
    // an EOF the readers consumed comes as no 'end' event here; nor does one whose 'end' was
    // emitted after the reader let go and before these listeners (a stream emits 'end' on the
    // tick after it reads EOF, paused or not: a client's FIN right behind its first messages,
    // during the upstream connect): readableEnded says so, else the session waits forever
    if (opts.upstreamAhead.ended || c.upstream.readableEnded) upstreamGone(c)
    if (opts.clientAhead.ended || c.client.readableEnded) clientEnded(c)
  }

  get txStatus(): TransactionStatus {
    return this.c.txStatus
  }

  /** ends the session with a FATAL ErrorResponse that says why */
  fatal(sqlstate: string, message: string): void {
    fatal(this.c, sqlstate, message)
  }
}
