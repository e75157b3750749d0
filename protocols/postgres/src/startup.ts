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
import { vetStartupParameters } from './settings.ts'

export interface ClientStartup {
  client: Duplex
  parameters: Record<string, string>
  tls: boolean
  frames: Frame[]
  rest: Buffer | undefined
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

/** ends the connection with a FATAL ErrorResponse */
export function fatal(client: Duplex, sqlstate: string, message: string): void {
  if (client.destroyed) return
  client.end(serializeErrorResponse('FATAL', sqlstate, message))
  // a client that never reads must not keep the socket open
  setTimeout(() => client.destroy(), 1000).unref()
}

/** SQLSTATE for errors raised while serving */
export function sqlstateOf(err: unknown): string {
  if (!isPortcullisError(err)) return 'XX000'
  switch (err.code) {
    case 'AUTH_FAILED':
      return '28P01'
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
  let tls = false
  let reader = new FrameReader(client, max, { startup: true })
  const timeoutMs = target.limits?.handshakeTimeoutMs ?? 10_000
  // the FATAL ends the socket; its close then fails the pending read below
  const timer = setTimeout(() => fatal(client, '08006', 'startup timed out'), timeoutMs)
  try {
    for (;;) {
      const frame = await reader.next()
      const packet = parseStartupPacket(new BufferReader(frame.raw, frame.bodyOffset))
      switch (packet.kind) {
        case 'ssl': {
          // bytes after SSLRequest before our answer would be read as if encrypted (CVE-2021-23214)
          if (reader.hasPending) throw new PortcullisError('PROTOCOL_ERROR', 'received unencrypted data after SSL request')
          if (!target.tls || tls) {
            client.write('N')
            reader.framer.startup = true
            break
          }
          reader.detach()
          client.write('S')
          const secure = new TLSSocket(client as never, { isServer: true, secureContext: secureContext(target) })
          const onError = () => secure.destroy()
          secure.once('error', onError)
          await once(secure, 'secure')
          secure.off('error', onError)
          client = secure
          tls = true
          reader = new FrameReader(client, max, { startup: true })
          break
        }
        case 'gssenc':
          client.write('N')
          reader.framer.startup = true
          break
        case 'cancel':
          reader.detach()
          client.end()
          await cancelRequest(packet.processId, packet.secretKey).catch(() => undefined)
          return undefined
        case 'startup': {
          // protocol options are not passed upstream: like Postgres, say so whenever there are any
          const unknown = Object.keys(packet.parameters).filter(k => k.startsWith('_pq_.'))
          if (packet.minor > 0 || unknown.length > 0) client.write(serializeNegotiateProtocolVersion(0, unknown))
          // every setting is vetted like a SQL SET of it before the client is asked for its token
          const vetted = vetStartupParameters(packet.parameters)
          if ('refused' in vetted) throw new PortcullisError('POLICY_BLOCKED', vetted.refused)
          const requireTls = target.options?.requireTls === true || (target.tls !== undefined && !isLoopback(session.remote))
          if (requireTls && !tls) throw new PortcullisError('AUTH_FAILED', 'this target requires TLS (sslmode=require)')
          client.write(serializeAuthenticationCleartextPassword())
          const answer = await reader.next()
          if (answer.code !== 0x70 /* p */) throw new PortcullisError('PROTOCOL_ERROR', `expected a password message, got '${String.fromCharCode(answer.code)}'`)
          const token = parsePasswordMessage(new BufferReader(answer.raw, answer.bodyOffset))
          await session.authenticate(token)
          const { frames, rest } = reader.detach()
          return { client, parameters: packet.parameters, tls, frames, rest }
        }
      }
    }
  } catch (err) {
    reader.detach()
    const message = isPortcullisError(err) ? err.message : 'invalid startup packet'
    fatal(client, sqlstateOf(err), message)
    return undefined
  } finally {
    clearTimeout(timer)
  }
}
