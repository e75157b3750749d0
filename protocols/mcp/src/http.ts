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

export function httpTools(server: McpServer, ctx: CallContext, peer: Peer): void {
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
    async ({ method, path, body }, extra): Promise<CallToolResult> => {
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
    },
  )
}
