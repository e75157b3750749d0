// The HTTP tool: one request to an HTTP target's own listener with Authorization: Bearer <caller's
// token>, so the HTTP codec (its profile: OpenAI, Qdrant, Pinecone, generic) classifies, decides,
// holds, masks, records and audits it as it would any client's. One connection per call.
import { request } from 'node:http'
import type { Duplex } from 'node:stream'
import { z } from 'zod'
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js'
import type { Peer } from '@portcullis/core'
import { num, type CallContext } from './context.ts'
import { progressOf } from './progress.ts'
import { ok, pendingError, toolError, unreachable } from './result.ts'
import { toolName } from './names.ts'
import { ROUTES, type Route } from '@portcullis/http'

interface Answer {
  status: number
  type: string
  body: Buffer
}

function send(socket: Duplex, method: string, path: string, token: string, body: string | undefined, max: number, signal: AbortSignal): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = request(
      {
        method,
        path,
        host: 'portcullis',
        createConnection: () => socket as never,
        headers: {
          authorization: `Bearer ${token}`,
          accept: 'application/json, text/plain;q=0.9, */*;q=0.1',
          ...(body !== undefined ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } : {}),
        },
        signal,
      },
      (res) => {
        const chunks: Buffer[] = []
        let n = 0
        res.on('data', (d: Buffer) => {
          n += d.length
          if (n > max) return void res.destroy(new Error(`reply larger than ${max} bytes`))
          chunks.push(d)
        })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type'] ?? ''), body: Buffer.concat(chunks) }))
        res.on('error', reject)
      },
    )
    req.on('error', reject)
    req.end(body)
  })
}

/** one request through the target's listener, its answer as a tool result (the codec decided it) */
async function call(ctx: CallContext, peer: Peer, method: string, path: string, body: unknown, extra: Parameters<typeof progressOf>[0] & { signal: AbortSignal }): Promise<CallToolResult> {
  let socket: Duplex
  try {
    socket = await peer.connect()
  } catch {
    return unreachable(peer.name)
  }
  const progress = progressOf(extra, peer.name)
  try {
    const a = await send(socket, method, path, ctx.token(), body === undefined ? undefined : JSON.stringify(body), num(ctx.options, 'maxReplyBytes', 16 * 1024 * 1024), extra.signal)
    const text = a.body.toString('utf8')
    let parsed: unknown = text
    if (/json/i.test(a.type)) {
      try {
        parsed = JSON.parse(text)
      } catch {
        parsed = text
      }
    }
    const approval = (parsed as { approval?: { id?: unknown; status?: unknown } } | null)?.approval
    if (a.status === 202 && typeof approval?.id === 'string' && approval.status === 'pending') return pendingError(peer.name, approval.id, text, 'HTTP 202')
    if (a.status >= 400) {
      const err = (parsed as { error?: { message?: unknown; code?: unknown } } | null)?.error
      return toolError(typeof err?.message === 'string' ? err.message : `HTTP ${a.status}`, { code: `HTTP ${a.status}`, target: peer.name, body: parsed })
    }
    return ok({ target: peer.name, status: a.status, contentType: a.type, body: parsed }, `HTTP ${a.status}\n${typeof parsed === 'string' ? parsed : JSON.stringify(parsed, null, 2)}`)
  } catch {
    return unreachable(peer.name)
  } finally {
    progress.stop()
    socket.destroy()
  }
}

/**
 * the profile's own operations as tools, generated from its route table (the codec's): each route
 * of one method and a fixed path ('/collections/:collection/points/search', '/v1/embeddings')
 * becomes `<target>_<operation>` with its path parameters and, when the route reads one, a JSON
 * body; listed when the rules would not block its class for the caller (a preview, never a permission)
 */
function profileTools(server: McpServer, ctx: CallContext, peer: Peer): void {
  const routes = typeof peer.options.profile === 'string' ? (ROUTES as Record<string, readonly Route[]>)[peer.options.profile] : undefined
  for (const route of routes ?? []) {
    if (typeof route.method !== 'string' || route.path.includes('*')) continue
    const op = { protocol: peer.protocol, class: route.class, resources: [], statement: '', fingerprint: '0000000000000000', statements: [], facts: { operation: route.operation } }
    if (ctx.peers.wouldDecide(ctx.principal, peer.name, op) === 'block') continue
    const names = route.path.split('/').filter((x) => x.startsWith(':')).map((x) => x.slice(1))
    const shape: Record<string, z.ZodType> = {}
    for (const n of names) shape[n] = z.string().min(1).max(512).regex(/^(?!\.\.?$)/, 'not . or ..').describe(`the ${n} (one path segment)`)
    if (route.body === 'json') shape.body = z.record(z.string(), z.unknown()).describe('the JSON body, as the API takes it')
    const method = route.method
    server.registerTool(
      toolName(peer.name, route.operation.replace(/[^A-Za-z0-9_-]/g, '_')),
      {
        description: `${peer.options.profile} ${route.operation} on ${peer.name}: ${method} ${route.path}, as you, through Portcullis (policy, approvals and masking apply).`,
        inputSchema: shape,
        annotations: { title: `${peer.name}: ${route.operation}`, readOnlyHint: route.class === 'read', destructiveHint: route.class !== 'read', openWorldHint: true },
      },
      async (args: Record<string, unknown>, extra) => {
        const path = route.path.replace(/:([A-Za-z_]+)/g, (_, n: string) => encodeURIComponent(String(args[n])))
        return call(ctx, peer, method, path, route.body === 'json' ? args.body : undefined, extra)
      },
    )
  }
}

export function httpTools(server: McpServer, ctx: CallContext, peer: Peer): void {
  profileTools(server, ctx, peer)
  server.registerTool(
    toolName(peer.name, 'request'),
    {
      description: `Send one HTTP request to ${peer.name}${typeof peer.options.profile === 'string' ? ` (${peer.options.profile} API)` : ''} as you, through Portcullis: policy, approvals and masking apply.`,
      inputSchema: {
        method: z.enum(['GET', 'POST', 'PUT', 'PATCH', 'DELETE']),
        path: z.string().regex(/^\/(?!\/)[^\s#]*$/, 'a path on the target, starting with one /').max(8192),
        body: z.unknown().optional().describe('JSON body'),
      },
      annotations: { title: `${peer.name}: HTTP`, destructiveHint: true, openWorldHint: true },
    },
    async ({ method, path, body }, extra): Promise<CallToolResult> => call(ctx, peer, method, path, body, extra),
  )
}
