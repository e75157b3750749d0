// The client side of connection startup: SSLRequest → TLS with the target's certificate,
// GSSENCRequest → 'N', CancelRequest, StartupMessage (3.0; NegotiateProtocolVersion for newer
// minors), then a cleartext password request whose answer is the client's token.
import type { Duplex } from 'node:stream'
import { TLSSocket, createSecureContext, type SecureContext } from 'node:tls'
import { readFileSync } from 'node:fs'
import { once } from 'node:events'
import type { Session, TargetConfig } from '@portcullis/core/types'
import { PortcullisError, isPortcullisError } from '@portcullis/core/errors'
import { BufferReader } from './buffer-reader.ts'
import { FrameReader } from './frame-reader.ts'
import type { Frame } from './framer.ts'
import { parsePasswordMessage, parseStartupPacket } from './frontend.ts'
import { serializeAuthenticationCleartextPassword, serializeErrorResponse, serializeNegotiateProtocolVersion } from './backend.ts'
import { cancelRequest } from './cancel.ts'
import { scopedSettings } from './scope.ts'
import { vetStartupParameters } from './settings.ts'

export interface ClientStartup {
  client: Duplex
  parameters: Record<string, string>
  tls: boolean
  frames: Frame[]
  rest: Buffer | undefined
  /** the client's EOF came with its first messages: they are answered, then the session ends */
  ended: boolean
}

const contexts = new WeakMap<object, SecureContext>()

function secureContext(target: TargetConfig): SecureContext {
  const tls = target.tls!
  let ctx = contexts.get(tls)
  if (!ctx) {
    ctx = createSecureContext({ cert: readFileSync(tls.cert), key: readFileSync(tls.key) })
    contexts.set(tls, ctx)
  }
  return ctx
}

function isLoopback(remote: string): boolean {
  return /^(127\.|::1(:|$)|\[::1\]|::ffff:127\.|localhost)/.test(remote)
}

/**
 * Ends the connection without a word, as Postgres does when the startup bytes stop short or carry
 * an impossible length (a Terminate sent before the StartupMessage reads as length 1476395008):
 * it logs a COMMERROR and closes.
 */
export function hangUp(client: Duplex): void {
  if (client.destroyed) return
  client.end()
  setTimeout(() => client.destroy(), 1000).unref()
}

/** a read failed during startup: the client went away or sent bytes that frame as nothing */
const HANG_UP = new Error('hang up')

const UNENCRYPTED_DATA = new Error('unencrypted data after SSLRequest')
const UNENCRYPTED_GSS_DATA = new Error('unencrypted data after GSSENCRequest')

/** ends the connection with a FATAL ErrorResponse */
export function fatal(client: Duplex, sqlstate: string, message: string, extra: Record<string, string> = {}): void {
  if (client.destroyed || client.writableEnded) return
  client.end(serializeErrorResponse('FATAL', sqlstate, message, extra))
  // a client that never reads must not keep the socket open
  setTimeout(() => client.destroy(), 1000).unref()
}

/** SQLSTATE for errors raised while serving */
export function sqlstateOf(err: unknown): string {
  if (!isPortcullisError(err)) return 'XX000'
  switch (err.code) {
    case 'AUTH_FAILED':
      // a valid token without the claims the target's scope needs is no password problem
      return err.details.reason === 'scope-claim' ? '28000' : '28P01'
    case 'TOKEN_EXPIRED':
    case 'REVOKED':
      return '28000'
    case 'SESSION_CLOSED':
    case 'SHUTDOWN':
      return '57P01'
    case 'MESSAGE_TOO_LARGE':
      return '54000'
    case 'PROTOCOL_ERROR':
      return '08P01'
    case 'UPSTREAM_UNAVAILABLE':
    case 'UPSTREAM_TIMEOUT':
      return '08006'
    case 'POLICY_BLOCKED':
    case 'APPROVAL_DENIED':
    case 'APPROVAL_TIMEOUT':
    case 'RECORDING_FAILED':
    case 'AUDIT_FAILED':
      return '42501'
    case 'APPROVAL_WITHDRAWN':
      return '57014'
    default:
      return 'XX000'
  }
}

/**
 * Runs the startup phase. Returns undefined when the connection was fully handled here (a cancel
 * request, a refused client): the socket is then already ended.
 */
export async function clientStartup(socket: Duplex, session: Session): Promise<ClientStartup | undefined> {
  const target = session.target
  const max = target.limits?.maxMessageBytes ?? 1 << 20
  let client = socket
  // a client that half-closes after its last message still gets the replies (Postgres answers what
  // it read before EOF); every path that ends a session ends the socket itself
  client.allowHalfOpen = true
  let tls = false
  let reader = new FrameReader(client, max, { startup: true })
  const next = () => reader.next().catch(() => Promise.reject(HANG_UP))
  const timeoutMs = target.limits?.handshakeTimeoutMs ?? 10_000
  // the FATAL ends the socket; its close then fails the pending read below
  const timer = setTimeout(() => fatal(client, '08006', 'startup timed out'), timeoutMs)
  try {
    for (;;) {
      const frame = await next()
      const packet = parseStartupPacket(new BufferReader(frame.raw, frame.bodyOffset))
      switch (packet.kind) {
        case 'ssl': {
          // bytes after SSLRequest before our answer would be read as if encrypted (CVE-2021-23214)
          const injected = reader.hasPending
          if (!target.tls || tls) {
            client.write('N')
            if (injected) throw UNENCRYPTED_DATA
            reader.framer.startup = true
            break
          }
          // Postgres would answer 'S' and complain after the handshake; the refusal goes out before
          // any TLS, so that nothing the client sent in clear is ever taken as encrypted
          if (injected) throw UNENCRYPTED_DATA
          reader.detach({ flowing: true })
          client.write('S')
          const secure = new TLSSocket(client as never, { isServer: true, secureContext: secureContext(target) })
          const onError = () => secure.destroy()
          secure.once('error', onError)
          await once(secure, 'secure')
          secure.off('error', onError)
          client = secure
          client.allowHalfOpen = true
          tls = true
          reader = new FrameReader(client, max, { startup: true })
          break
        }
        case 'gssenc':
          client.write('N')
          // as after SSLRequest: Postgres refuses bytes sent before its answer
          if (reader.hasPending) throw UNENCRYPTED_GSS_DATA
          reader.framer.startup = true
          break
        case 'cancel':
          reader.detach()
          hangUp(client)
          await cancelRequest(packet.processId, packet.secretKey).catch(() => undefined)
          return undefined
        case 'startup': {
          // protocol options are not passed upstream: like Postgres, say so whenever there are any
          const unknown = Object.keys(packet.parameters).filter(k => k.startsWith('_pq_.'))
          if (packet.minor > 0 || unknown.length > 0) client.write(serializeNegotiateProtocolVersion(0, unknown))
          // every setting is vetted like a SQL SET of it before the client is asked for its token
          const vetted = vetStartupParameters(packet.parameters, scopedSettings(target))
          if ('refused' in vetted) throw new PortcullisError('POLICY_BLOCKED', vetted.refused)
          const requireTls = target.options?.requireTls === true || (target.tls !== undefined && !isLoopback(session.remote))
          if (requireTls && !tls) throw new PortcullisError('AUTH_FAILED', 'this target requires TLS (sslmode=require)')
          client.write(serializeAuthenticationCleartextPassword())
          const answer = await next()
          // Postgres's own words, for a client that sends Terminate instead (pg's connect(); end())
          if (answer.code !== 0x70 /* p */) throw new PortcullisError('PROTOCOL_ERROR', `expected password response, got message type ${answer.code}`)
          const token = parsePasswordMessage(new BufferReader(answer.raw, answer.bodyOffset))
          await session.authenticate(token)
          // the startup timeout fired while the token was verified: that FATAL was the last word
          if (client.writableEnded || client.destroyed) throw HANG_UP
          const { frames, rest, ended } = reader.detach()
          return { client, parameters: packet.parameters, tls, frames, rest, ended }
        }
      }
    }
  } catch (err) {
    reader.detach()
    if (err === HANG_UP) {
      hangUp(client)
      return undefined
    }
    if (err === UNENCRYPTED_DATA || err === UNENCRYPTED_GSS_DATA) {
      fatal(client, '08P01', err === UNENCRYPTED_DATA ? 'received unencrypted data after SSL request' : 'received unencrypted data after GSSAPI encryption request', {
        D: 'This could be either a client-software bug or evidence of an attempted man-in-the-middle attack.',
      })
      return undefined
    }
    const message = isPortcullisError(err) ? err.message : 'invalid startup packet'
    fatal(client, sqlstateOf(err), message)
    return undefined
  } finally {
    clearTimeout(timer)
  }
}
