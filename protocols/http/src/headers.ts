// Which headers go where: to the upstream (hop-by-hop, the caller's credentials and method overrides
// dropped; under a mask plan only encodings the gateway can decode), back to the client (hop-by-hop
// dropped), and into the recording (credentials never).
import type { IncomingHttpHeaders, IncomingMessage } from 'node:http'
import type { TargetConfig } from '@portcullis/core'
import type { Headers } from './forward.ts'
import { tokenHeader } from './identity.ts'

// hop-by-hop headers (RFC 9110 §7.6.1) and those the gateway sets itself
const HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'proxy-authenticate', 'proxy-authorization', 'te', 'trailer', 'transfer-encoding', 'upgrade', 'host', 'expect'])
// a server that honours these would run another method than the one classified
const METHOD_OVERRIDE = ['x-http-method-override', 'x-http-method', 'x-method-override']
const CREDENTIAL = new Set(['authorization', 'cookie', 'proxy-authorization', 'x-api-key', 'api-key'])

/** headers as recorded: credentials never */
export function recordable(headers: IncomingHttpHeaders, token: string): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  for (const k in headers) {
    const v = headers[k]
    if (v !== undefined && !CREDENTIAL.has(k) && k !== token && !k.includes('token') && !k.includes('secret')) out[k] = v
  }
  return out
}

const DECODABLE = ['gzip', 'deflate', 'br']

/** headers never forwarded upstream for this target: hop-by-hop, the caller's credentials, overrides */
const upstreamDrops = new WeakMap<TargetConfig, Set<string>>()
function upstreamDrop(target: TargetConfig): Set<string> {
  let drop = upstreamDrops.get(target)
  if (drop) return drop
  drop = new Set(HOP)
  drop.add(tokenHeader(target))
  drop.add('authorization')
  for (const h of METHOD_OVERRIDE) drop.add(h)
  if (target.upstream.auth) drop.add(target.upstream.auth.header.toLowerCase())
  upstreamDrops.set(target, drop)
  return drop
}

/** the header names a Connection header lists (hop-by-hop for this message only) */
function connectionListed(conn: string | string[] | undefined): Set<string> | undefined {
  if (typeof conn !== 'string') return undefined
  // peers send the same value ('keep-alive') message after message: shared, read-only
  let out = listedCache.get(conn)
  if (out) return out
  out = new Set<string>()
  for (const name of conn.split(',')) out.add(name.trim().toLowerCase())
  if (listedCache.size >= 256) listedCache.clear()
  listedCache.set(conn, out)
  return out
}
const listedCache = new Map<string, Set<string>>()

/** the encodings of an Accept-Encoding value the gateway can decode before it inspects ('' for none) */
function decodableEncodings(value: string): string {
  let out = acceptedCache.get(value)
  if (out !== undefined) return out
  out = value
    .split(',')
    .map(s => s.trim())
    .filter(s => DECODABLE.includes(s.split(';')[0].trim().toLowerCase()))
    .join(', ')
  if (acceptedCache.size >= 256) acceptedCache.clear()
  acceptedCache.set(value, out)
  return out
}
const acceptedCache = new Map<string, string>()

export function upstreamHeaders(req: IncomingMessage, target: TargetConfig, inspecting: boolean): Record<string, string | string[]> {
  const drop = upstreamDrop(target)
  const listed = connectionListed(req.headers.connection)
  const out: Record<string, string | string[]> = {}
  const h = req.headers
  for (const k in h) {
    const v = h[k]
    if (v !== undefined && !drop.has(k) && !listed?.has(k)) out[k] = v
  }
  if (inspecting) {
    // a byte range of a masked body would cut a value where no detector sees it (half an address
    // per request): under a mask plan the whole body is asked for, and masked as a whole
    delete out.range
    delete out['if-range']
  }
  if (inspecting && out['accept-encoding']) {
    // only encodings the gateway can decode before it inspects the response
    const accepted = decodableEncodings(String(out['accept-encoding']))
    if (accepted !== '') out['accept-encoding'] = accepted
    else delete out['accept-encoding']
  }
  return out
}

export function responseHeaders(headers: Headers): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {}
  const listed = connectionListed(headers.connection)
  for (const k in headers) {
    const v = headers[k]
    if (v !== undefined && !HOP.has(k) && !listed?.has(k)) out[k] = v
  }
  return out
}
