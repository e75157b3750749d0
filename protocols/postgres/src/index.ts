// The Postgres codec: sniffing, startup and authentication, then the proxy loop.
import type { Duplex } from 'node:stream'
import type { ProtocolCodec, Session } from '@portcullis/core/types'
import { isPortcullisError } from '@portcullis/core/errors'
import { sniffStartup } from './frontend.ts'
import { AUTHENTICATION_OK, serializeBackendKeyData, serializeReadyForQuery } from './backend.ts'
import { clientStartup, fatal, sqlstateOf } from './startup.ts'
import { connectUpstream, upstreamStartupParameters } from './upstream.ts'
import { upstreamRoleRefusal } from './scope.ts'
import { cancelBackend, issueCancelKey } from './cancel.ts'
import { catalogFor } from './catalog.ts'
import { PostgresProxy } from './proxy.ts'
import { classifySql, dependsOnSession, loadClassifier, statementBody, withTopK } from './classify/index.ts'

export { explainScope } from './scope.ts'
export { explainSql, loadClassifier, classifySql, clearClassifierCache, classifierCacheStats } from './classify/index.ts'
export { Framer, STARTUP_LIMIT, type Frame } from './framer.ts'

async function upstreamPassword(session: Session): Promise<string | undefined> {
  const ref = session.target.upstream.password
  return ref ? session.secret(ref) : undefined
}

async function serve(socket: Duplex, session: Session): Promise<void> {
  // errors surface through the reads below; an unhandled 'error' event must not crash the process
  socket.on('error', () => socket.destroy())
  const started = await clientStartup(socket, session)
  if (!started) return
  const { client } = started
  client.on('error', () => client.destroy())
  const target = session.target
  let upstream
  try {
    ;[upstream] = await Promise.all([
      upstreamPassword(session).then(pw => connectUpstream(target, pw, upstreamStartupParameters(target, started.parameters, session.scope))),
      loadClassifier(),
    ])
  } catch (err) {
    // a setting the server refused (`unrecognized configuration parameter`, 42704) keeps the
    // server's SQLSTATE; a refused gateway credential is the gateway's problem, not the client's
    const upstreamState = isPortcullisError(err) ? err.details.sqlstate : undefined
    const own = typeof upstreamState === 'string' && !upstreamState.startsWith('28') ? upstreamState : sqlstateOf(err)
    fatal(client, own, isPortcullisError(err) ? err.message : 'could not connect to the upstream')
    return
  }
  if (client.destroyed) {
    upstream.socket.destroy()
    return
  }
  const roleRefusal = upstreamRoleRefusal(target, upstream.parameterStatus)
  if (roleRefusal) {
    upstream.socket.destroy()
    session.record('error', { message: roleRefusal })
    fatal(client, '42501', roleRefusal)
    return
  }
  const upstreamKey = { processId: upstream.processId, secretKey: upstream.secretKey }
  let withdraw: () => boolean = () => false
  const key = issueCancelKey({ target, processId: upstream.processId, secretKey: upstream.secretKey, withdraw: () => withdraw() })
  try {
    client.cork()
    client.write(AUTHENTICATION_OK)
    for (const ps of upstream.parameterStatus) client.write(ps)
    // the client gets a gateway key: the upstream's own never leaves the gateway
    client.write(serializeBackendKeyData(key.processId, key.secretKey))
    client.write(serializeReadyForQuery('I'))
    client.uncork()
    session.record('event', { type: 'upstream-connected' })
    const proxy = new PostgresProxy({
      client,
      upstream: upstream.socket,
      session,
      classifier: { classifySql, dependsOnSession, statementBody, withTopK },
      catalog: catalogFor(target, () => upstreamPassword(session)),
      clientAhead: { frames: started.frames, rest: started.rest, ended: started.ended },
      upstreamAhead: { frames: upstream.frames, rest: upstream.rest, ended: upstream.ended },
      serverSettings: upstream.settings,
      registerWithdraw: fn => (withdraw = fn),
      cancelUpstream: () => void cancelBackend(target, upstreamKey.processId, upstreamKey.secretKey).catch(() => undefined),
    })
    await proxy.done
  } finally {
    key.release()
    upstream.socket.destroy()
  }
}

export const postgresCodec: ProtocolCodec = {
  protocol: 'postgres',
  sniff: sniffStartup,
  serve,
}
