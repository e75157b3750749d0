// HTTP errors speak JSON with a stable code: {error: {code, message, …}}. PortcullisError codes map
// to a status and a snake_case code clients can switch on without matching text.
import type { ServerResponse } from 'node:http'
import { isPortcullisError } from '@portcullis/core'

export interface HttpError {
  status: number
  code: string
  message: string
  details?: Record<string, unknown>
  /** close the connection after answering (authentication trouble, unreadable input) */
  close?: boolean
}

const BY_CODE: Record<string, [number, string, boolean?]> = {
  AUTH_FAILED: [401, 'unauthenticated', true],
  TOKEN_EXPIRED: [401, 'token_expired', true],
  REVOKED: [401, 'revoked', true],
  SESSION_CLOSED: [503, 'session_closed', true],
  SHUTDOWN: [503, 'shutting_down', true],
  POLICY_BLOCKED: [403, 'policy_blocked'],
  APPROVAL_DENIED: [403, 'policy_blocked'],
  APPROVAL_TIMEOUT: [403, 'policy_blocked'],
  APPROVAL_WITHDRAWN: [403, 'policy_blocked'],
  RECORDING_FAILED: [503, 'recording_failed'],
  AUDIT_FAILED: [503, 'audit_unavailable'],
  SECRET_UNAVAILABLE: [502, 'upstream_credential_unavailable'],
  PROTOCOL_ERROR: [400, 'bad_request', true],
  MESSAGE_TOO_LARGE: [413, 'payload_too_large', true],
  UPSTREAM_UNAVAILABLE: [502, 'upstream_unavailable'],
  UPSTREAM_TIMEOUT: [504, 'upstream_timeout'],
  CONFIG_INVALID: [500, 'config_invalid'],
  CONTROL_STORE_UNAVAILABLE: [503, 'control_store_unavailable'],
}

/** any thrown value → an HttpError; undici's errors become 502/504 */
export function toHttpError(err: unknown): HttpError {
  if (isHttpError(err)) return err
  if (isPortcullisError(err)) {
    const [status, code, close] = BY_CODE[err.code] ?? [500, 'internal_error']
    // what went wrong upstream is the operator's to read in the logs: the client is never told an
    // upstream address (an error from another layer may name one)
    if (err.code === 'UPSTREAM_UNAVAILABLE') return { status, code, message: 'the upstream could not be reached' }
    if (err.code === 'UPSTREAM_TIMEOUT') return { status, code, message: 'the upstream did not answer in time' }
    return { status, code, message: err.message, details: err.details, close }
  }
  const code = (err as { code?: string } | null)?.code
  if (code === 'UND_ERR_HEADERS_TIMEOUT' || code === 'UND_ERR_BODY_TIMEOUT' || code === 'UND_ERR_CONNECT_TIMEOUT')
    return { status: 504, code: 'upstream_timeout', message: 'the upstream did not answer in time' }
  if (typeof code === 'string' && code.startsWith('Z_'))
    return { status: 502, code: 'upstream_unreadable', message: 'the upstream response could not be decoded' }
  if (typeof code === 'string' && (code.startsWith('UND_ERR') || code.startsWith('E') || code.startsWith('ERR_TLS') || /CERT|SELF_SIGNED/.test(code)))
    return { status: 502, code: 'upstream_unavailable', message: `the upstream could not be reached (${code})` }
  return { status: 500, code: 'internal_error', message: 'internal error' }
}

/** an Error (so streams can carry it) that answers as `status` with `code` */
export function httpError(status: number, code: string, message: string, extra: Partial<HttpError> = {}): Error & HttpError {
  return Object.assign(new Error(message), { status, code, ...extra, [ERR]: true })
}

const ERR = Symbol('HttpError')
function isHttpError(v: unknown): v is HttpError {
  return typeof v === 'object' && v !== null && (v as Record<symbol, unknown>)[ERR] === true
}

export function sendError(res: ServerResponse, e: HttpError): void {
  if (res.headersSent || res.destroyed) {
    res.destroy()
    return
  }
  const body = JSON.stringify({ error: { code: e.code, message: e.message, ...e.details } })
  const headers: Record<string, string | number> = { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) }
  if (e.close) headers.connection = 'close'
  res.writeHead(e.status, headers)
  res.end(body)
}

/** a raw error answer written on the socket when node:http could not parse the request */
export function rawError(status: number, reason: string, code: string, message: string): string {
  const body = JSON.stringify({ error: { code, message } })
  return `HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`
}
