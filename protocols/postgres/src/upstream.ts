// The gateway's own connection to the upstream Postgres: TCP, TLS when the target asks for it,
// StartupMessage with the target's user/database, and authentication with the gateway's
// credential (SCRAM-SHA-256, md5 or cleartext). The client never sees any of it.
import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect, type TLSSocket } from 'node:tls'
import { readFileSync } from 'node:fs'
import { once } from 'node:events'
import type { SessionScope, TargetConfig } from '@portcullis/core/types'
import { PortcullisError } from '@portcullis/core/errors'
import { BufferReader } from './buffer-reader.ts'
import { FrameReader } from './frame-reader.ts'
import type { Frame } from './framer.ts'
import { parseAuthentication, parseBackendKeyData, parseNoticeFields } from './backend.ts'
import { serializePasswordMessage, serializeSASLInitialResponse, serializeSASLResponse, serializeSSLRequest, serializeStartupMessage } from './frontend.ts'
import { md5Password, SCRAM_SHA_256, ScramClient } from './scram.ts'
import { scopeParameters, scopedSettings } from './scope.ts'
import { ServerSettings, vetStartupParameters } from './settings.ts'

export interface UpstreamConnection {
  /** paused, so that nothing it reads is dropped before its new owner listens: resume() it */
  socket: Socket | TLSSocket
  processId: number
  secretKey: number
  /** ParameterStatus frames, raw, to pass to the client */
  parameterStatus: Buffer[]
  /** the server's reported settings, watched for the rest of the session (proxy.ts) */
  settings: ServerSettings
  /** frames and bytes read past ReadyForQuery (normally none) */
  frames: Frame[]
  rest: Buffer | undefined
  /** the upstream's EOF was read too */
  ended: boolean
}

/**
 * The StartupMessage the gateway sends: every parameter the client sent, vetted like a SQL SET of
 * it (settings.ts), with the target's user and database.
 */
/** `scope`: the session's; 'gateway' for the gateway's own connections (the catalog), which run no client SQL */
export function upstreamStartupParameters(target: TargetConfig, client: Record<string, string>, scope?: SessionScope | 'gateway'): Record<string, string> {
  const vetted = vetStartupParameters(client, scopedSettings(target))
  // the client's startup already refused these (clientStartup); never send an unvetted one
  if ('refused' in vetted) throw new PortcullisError('POLICY_BLOCKED', vetted.refused)
  const params = vetted.parameters
  params.user = target.upstream.user ?? 'postgres'
  params.database = target.upstream.database ?? params.user
  // the scope's settings last: the client's own were refused above, these are the gateway's
  if (scope !== 'gateway') Object.assign(params, scopeParameters(target, scope))
  return params
}

export async function openSocket(target: TargetConfig, timeoutMs: number): Promise<Socket | TLSSocket> {
  const host = target.upstream.host ?? '127.0.0.1'
  const port = target.upstream.port ?? 5432
  const socket = netConnect({ host, port })
  socket.setNoDelay(true)
  const timer = setTimeout(() => socket.destroy(new PortcullisError('UPSTREAM_TIMEOUT', `the upstream of target ${target.name} did not answer in ${timeoutMs} ms`)), timeoutMs)
  try {
    await once(socket, 'connect')
    const tls = target.upstream.tls
    if (!tls || tls.enabled === false) return socket
    socket.write(serializeSSLRequest())
    const [answer] = (await once(socket, 'data')) as [Buffer]
    if (answer.length !== 1 || answer[0] !== 0x53 /* S */) {
      throw new PortcullisError('UPSTREAM_UNAVAILABLE', `the upstream of target ${target.name} refused TLS`)
    }
    const secure = tlsConnect({
      socket,
      servername: tls.servername ?? (/^[\d.:]+$/.test(host) ? undefined : host),
      rejectUnauthorized: tls.rejectUnauthorized ?? true,
      ca: tls.ca ? readFileSync(tls.ca) : undefined,
    })
    await once(secure, 'secureConnect')
    return secure
  } catch (err) {
    socket.destroy()
    if (err instanceof PortcullisError) throw err
    throw new PortcullisError('UPSTREAM_UNAVAILABLE', `could not connect to the upstream of target ${target.name} (${(err as NodeJS.ErrnoException).code ?? 'connection failed'})`)
  } finally {
    clearTimeout(timer)
  }
}

export async function connectUpstream(
  target: TargetConfig,
  password: string | undefined,
  parameters: Record<string, string>,
): Promise<UpstreamConnection> {
  const timeoutMs = target.limits?.handshakeTimeoutMs ?? 10_000
  const socket = await openSocket(target, timeoutMs)
  const reader = new FrameReader(socket, Math.max(target.limits?.maxMessageBytes ?? 0, 1 << 20))
  const timer = setTimeout(() => socket.destroy(new PortcullisError('UPSTREAM_TIMEOUT', 'upstream handshake timed out')), timeoutMs)
  try {
    socket.write(serializeStartupMessage(parameters))
    let scram: ScramClient | undefined
    const parameterStatus: Buffer[] = []
    const settings = new ServerSettings()
    let processId = 0
    let secretKey = 0
    const needPassword = () => {
      if (password === undefined) throw new PortcullisError('UPSTREAM_UNAVAILABLE', 'upstream asks for a password and the target has none')
      return password
    }
    for (;;) {
      const frame = await reader.next()
      const body = new BufferReader(frame.raw, frame.bodyOffset)
      switch (frame.code) {
        case 0x52: {
          // R
          const auth = parseAuthentication(body)
          switch (auth.type) {
            case 0: // AuthenticationOk
              break
            case 3: // cleartext
              socket.write(serializePasswordMessage(needPassword()))
              break
            case 5: // md5
              socket.write(serializePasswordMessage(md5Password(parameters.user, needPassword(), auth.data.subarray(0, 4))))
              break
            case 10: {
              // SASL: mechanisms list
              const mechanisms = auth.data.toString('utf8').split('\0').filter(Boolean)
              if (!mechanisms.includes(SCRAM_SHA_256)) throw new PortcullisError('UPSTREAM_UNAVAILABLE', `upstream offers no supported SASL mechanism (${mechanisms.join(', ')})`)
              scram = new ScramClient(needPassword())
              socket.write(serializeSASLInitialResponse(SCRAM_SHA_256, scram.clientFirst()))
              break
            }
            case 11: // SASLContinue
              if (!scram) throw new PortcullisError('UPSTREAM_UNAVAILABLE', 'unexpected SASLContinue')
              socket.write(serializeSASLResponse(scram.clientFinal(auth.data.toString('utf8'))))
              break
            case 12: // SASLFinal
              if (!scram) throw new PortcullisError('UPSTREAM_UNAVAILABLE', 'unexpected SASLFinal')
              scram.verifyServerFinal(auth.data.toString('utf8'))
              break
            default:
              throw new PortcullisError('UPSTREAM_UNAVAILABLE', `upstream asks for unsupported authentication type ${auth.type}`)
          }
          break
        }
        case 0x53: {
          // S ParameterStatus: a server configured to read SQL unlike our parser is refused, fail closed
          // (a role or database default, ALTER SYSTEM); the identity reported here is the baseline
          const why = settings.report(body.cstring(), body.cstring())
          if (why) throw new PortcullisError('UPSTREAM_UNAVAILABLE', `the upstream server's setting is unsafe: ${why}`)
          parameterStatus.push(frame.raw)
          break
        }
        case 0x4b: {
          // K BackendKeyData
          const k = parseBackendKeyData(body)
          processId = k.processId
          secretKey = k.secretKey
          break
        }
        case 0x4e: // N NoticeResponse during startup: nothing the client needs
          break
        case 0x45: {
          // E ErrorResponse
          const f = parseNoticeFields(body)
          // the upstream's auth failure speaks of the gateway's credential: say so without detail
          const msg = f.C === '28P01' || f.C === '28000' ? 'upstream rejected the gateway credential' : `upstream: ${f.M ?? 'error'}`
          throw new PortcullisError('UPSTREAM_UNAVAILABLE', msg, { sqlstate: f.C })
        }
        case 0x5a: {
          // Z ReadyForQuery
          const { frames, rest, ended } = reader.detach()
          settings.started()
          return { socket, processId, secretKey, parameterStatus, settings, frames, rest, ended }
        }
        case 0x76: // v NegotiateProtocolVersion: we asked for 3.0 only
          break
        default:
          throw new PortcullisError('UPSTREAM_UNAVAILABLE', `unexpected upstream message '${String.fromCharCode(frame.code)}' during startup`)
      }
    }
  } catch (err) {
    reader.detach()
    socket.destroy()
    if (err instanceof PortcullisError) throw err
    throw new PortcullisError('UPSTREAM_UNAVAILABLE', `upstream: ${(err as Error).message}`)
  } finally {
    clearTimeout(timer)
  }
}
