// The Redis tool: one command (argv) over a RESP connection to the target's own listener,
// authenticated with AUTH <caller's token>, so the Redis codec classifies, decides, holds, masks,
// records and audits it as it would redis-cli's. Commands that change the connection's state (a
// transaction, a subscription, another database or identity) are refused here: a pooled
// connection carries no state from one call to the next.
import { z } from 'zod'
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js'
import type { Peer } from '@portcullis/core'
import { num, type CallContext } from './context.ts'
import { Pool } from './pool.ts'
import { progressOf } from './progress.ts'
import { RespConnection, type Reply } from './resp.ts'
import { ok, pendingError, toolError, unreachable } from './result.ts'
import { toolName } from './names.ts'

/** the Redis codec's defer reply: `-PENDING <id> …` (protocols/redis/src/approval.ts) */
const PENDING = /^PENDING (\S+)/

/** connection state: refused, whatever the rules say (they would apply to the next call, not this one) */
const CONNECTION_STATE = new Set([
  'MULTI', 'EXEC', 'DISCARD', 'WATCH', 'UNWATCH', 'SUBSCRIBE', 'PSUBSCRIBE', 'SSUBSCRIBE', 'UNSUBSCRIBE', 'PUNSUBSCRIBE',
  'SUNSUBSCRIBE', 'MONITOR', 'SELECT', 'AUTH', 'HELLO', 'RESET', 'QUIT', 'CLIENT', 'READONLY', 'READWRITE', 'ASKING', 'SYNC', 'PSYNC', 'REPLCONF',
])

interface Conn {
  resp: RespConnection
}

async function connect(ctx: CallContext, peer: Peer): Promise<Conn> {
  const socket = await peer.connect()
  const resp = new RespConnection(socket, num(ctx.options, 'maxReplyBytes', 16 * 1024 * 1024))
  const auth = await resp.send(['AUTH', ctx.token()])
  if (auth !== 'OK') {
    resp.close()
    const e = new Error(typeof auth === 'object' && auth !== null && 'error' in auth ? auth.error : 'AUTH refused') as Error & { redis: boolean }
    e.redis = true
    throw e
  }
  return { resp }
}

function json(r: Reply): unknown {
  if (Buffer.isBuffer(r)) return r.toString('utf8')
  if (Array.isArray(r)) return r.map(json)
  return r
}

function render(v: unknown, indent = ''): string {
  if (v === null) return `${indent}(nil)`
  if (typeof v === 'number') return `${indent}(integer) ${v}`
  if (typeof v === 'string') return indent + JSON.stringify(v)
  if (Array.isArray(v)) return v.length === 0 ? `${indent}(empty array)` : v.map((x, i) => `${indent}${i + 1}) ${render(x).trimStart()}`).join('\n')
  return indent + JSON.stringify(v)
}

export function redisTools(server: McpServer, ctx: CallContext, peer: Peer): void {
  const pool = (): Pool<Conn> =>
    ctx.pool(peer, () =>
      new Pool<Conn>({
        create: () => connect(ctx, peer),
        destroy: (c) => c.resp.close(),
        max: num(ctx.options, 'poolSize', 4),
        idleMs: num(ctx.options, 'poolIdleMs', 60_000),
      }),
    )
  server.registerTool(
    toolName(peer.name, 'command'),
    {
      description: `Run one Redis command on ${peer.name} as you, through Portcullis: policy, approvals and masking apply. argv is the command and its arguments, e.g. ["GET", "user:1"].`,
      inputSchema: { argv: z.array(z.string()).min(1).max(10_000).describe('command name and arguments') },
      annotations: { title: `${peer.name}: Redis`, destructiveHint: true, openWorldHint: false },
    },
    async ({ argv }, extra): Promise<CallToolResult> => {
      const name = argv[0]!.toUpperCase()
      if (CONNECTION_STATE.has(name))
        return toolError(`${name} changes the connection's state and is not available through MCP; send one command per call`, { code: 'ERR', target: peer.name })
      const p = pool()
      let conn: Conn
      try {
        conn = await p.acquire()
      } catch (err) {
        if ((err as { redis?: boolean }).redis) return toolError((err as Error).message, { code: (err as Error).message.split(' ')[0], target: peer.name })
        return unreachable(peer.name)
      }
      const progress = progressOf(extra, peer.name)
      let broken = false
      const onAbort = () => {
        broken = true
        conn.resp.close()
      }
      extra.signal.addEventListener('abort', onAbort, { once: true })
      try {
        const reply = await conn.resp.send(argv)
        if (reply !== null && typeof reply === 'object' && !Array.isArray(reply) && !Buffer.isBuffer(reply)) {
          const m = PENDING.exec(reply.error)
          if (m) return pendingError(peer.name, m[1]!, reply.error, 'PENDING')
          return toolError(reply.error, { code: reply.error.split(' ')[0], target: peer.name })
        }
        const value = json(reply)
        return ok({ target: peer.name, command: name, reply: value }, render(value))
      } catch {
        broken = true
        return unreachable(peer.name)
      } finally {
        progress.stop()
        extra.signal.removeEventListener('abort', onAbort)
        p.release(conn, broken || conn.resp.ended)
      }
    },
  )
}
