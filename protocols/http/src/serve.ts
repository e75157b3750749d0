// The reverse proxy. The gateway hands over one raw Duplex per client connection; all connections of a
// target run through one shared node:http Server (keep-alive, pipelining, chunked bodies and
// Expect: 100-continue come from node:http), and each request goes: identity → classification →
// decision → upstream (undici Pool, the gateway's own credential) → masking → client, recorded and
// audited once (request.ts, phase by phase). Identity: one token per connection (identity.ts).
//
// This file is the connection: the shared server per target, keep-alive, half-close, a socket handed
// over with bytes already read.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Session, TargetConfig } from '@portcullis/core'
import { rawError } from './errors.ts'
import { conns } from './identity.ts'
import { handle } from './request.ts'

const servers = new WeakMap<TargetConfig, Server>()

export function serveHttp(client: Duplex, session: Session): Promise<void> {
  const server = serverFor(session.target)
  conns.set(client, { session })
  return new Promise<void>(resolve => {
    const onAbort = () => client.destroy()
    client.once('close', () => {
      session.signal.removeEventListener('abort', onAbort)
      resolve()
    })
    if (session.signal.aborted) {
      client.destroy()
      return
    }
    session.signal.addEventListener('abort', onAbort, { once: true })
    adoptConnection(server, client)
  })
}

/** hands a sniffed client connection to a node:http server (this codec's and the MCP server's) */
export function adoptConnection(server: Server, client: Duplex): void {
  // the listener's socket may have been made with allowHalfOpen false, which ends our side at the
  // client's FIN, before node:http has answered: the HTTP server decides when to end instead
  ;(client as Duplex & { allowHalfOpen: boolean }).allowHalfOpen = true
  server.emit('connection', client)
  // A listener that sniffed the first bytes pushed them back and left the socket paused; node:http
  // would wait for fresh bytes forever. Flowing again delivers the pushed-back bytes first.
  if (client.readableLength > 0 || client.isPaused()) client.resume()
}

function serverFor(target: TargetConfig): Server {
  let server = servers.get(target)
  if (server) return server
  const maxHeaderSize = typeof target.options.maxHeaderBytes === 'number' ? target.options.maxHeaderBytes : 16 * 1024
  server = createServer({ maxHeaderSize, requestTimeout: 0, keepAliveTimeout: target.limits.idleTimeoutMs || 5000 })
  // A client that sends its requests and then half-closes (FIN) still gets its answers: by default
  // node:http aborts the requests in flight on the client's FIN and ends the socket. With this set
  // it answers what it has read and ends the connection after the last response.
  ;(server as Server & { httpAllowHalfOpen: boolean }).httpAllowHalfOpen = true
  server.on('request', (req: IncomingMessage, res: ServerResponse) => void handle(req, res, false))
  // answering 100 Continue is ours: only once the caller is known and the body is wanted
  server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => void handle(req, res, true))
  server.on('clientError', (err: NodeJS.ErrnoException, socket: Duplex) => {
    if (!socket.writable) return socket.destroy()
    const tooLarge = err.code === 'HPE_HEADER_OVERFLOW'
    socket.end(tooLarge ? rawError(431, 'Request Header Fields Too Large', 'headers_too_large', 'request headers are too large') : rawError(400, 'Bad Request', 'bad_request', 'malformed HTTP request'))
  })
  servers.set(target, server)
  return server
}
