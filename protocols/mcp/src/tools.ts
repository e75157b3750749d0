// Which tools one caller gets: those of every exposed target the rules let the caller reach (some
// class of operation is not blocked), plus check_approval. Listed once, when the MCP session starts;
// every call is still decided by the target's codec, so a tool listed is never a permission.
import { z } from 'zod'
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { CLASSES, type Operation, type Peer, type TargetConfig } from '@portcullis/core'
import type { CallContext } from './context.ts'
import { postgresTools } from './postgres.ts'
import { redisTools } from './redis.ts'
import { httpTools } from './http.ts'
import { ok, toolError } from './result.ts'

/** an operation of one class that names nothing: what a rule without resource conditions matches */
function probe(peer: Peer, cls: (typeof CLASSES)[number]): Operation {
  return { protocol: peer.protocol, class: cls, resources: [], statement: '', fingerprint: '0000000000000000', statements: [], facts: {} }
}

export function reachable(ctx: CallContext, peer: Peer): boolean {
  // 'session' (connecting, SET, PING) is allowed to most; it reaches no data
  return CLASSES.some((c) => c !== 'session' && ctx.peers.wouldDecide(ctx.principal, peer.name, probe(peer, c)) !== 'block')
}

/** registers the caller's tools; returns the names of the targets they reach */
export function registerTools(server: McpServer, ctx: CallContext, target: TargetConfig): string[] {
  const exposed: string[] = []
  for (const name of target.targets ?? []) {
    const peer = ctx.peers.get(name)
    if (!peer || !reachable(ctx, peer)) continue
    exposed.push(name)
    if (peer.protocol === 'postgres') postgresTools(server, ctx, peer)
    else if (peer.protocol === 'redis') redisTools(server, ctx, peer)
    else httpTools(server, ctx, peer)
  }
  server.registerTool(
    'check_approval',
    {
      description: 'The state of an approval request one of your calls made (defer mode). Once approved, make the identical call again: it runs once.',
      inputSchema: { id: z.string().min(1).max(200).describe('the request id the refused call named') },
      annotations: { title: 'approval state', readOnlyHint: true, openWorldHint: false },
    },
    async ({ id }) => {
      const r = await ctx.peers.approval(id)
      // another's request and no request get the same answer
      if (!r || r.principal.subject !== ctx.principal.subject || r.principal.issuer !== ctx.principal.issuer)
        return toolError(`no approval request ${JSON.stringify(id)} of yours`, { code: 'NOT_FOUND' })
      const s = {
        id: r.id,
        status: r.status,
        target: r.target,
        statement: r.sent?.text ?? r.statement,
        rule: r.rule,
        expires: new Date(r.expires).toISOString(),
        ...(r.decidedBy ? { decidedBy: r.decidedBy } : {}),
        ...(r.reason ? { reason: r.reason } : {}),
        ...(r.released ? { released: new Date(r.released).toISOString() } : {}),
      }
      const next =
        r.status === 'approved'
          ? r.released
            ? 'it has run once already; a new call asks again'
            : 'make the identical call again: it runs once'
          : r.status === 'pending'
            ? 'still waiting for an approver'
            : 'the call will not run'
      return ok(s, `request ${r.id} on ${r.target}: ${r.status}${r.decidedBy ? ` by ${r.decidedBy}` : ''}; ${next}`)
    },
  )
  return exposed
}
