// One MCP session: the SDK's transport and server for one principal, the tools it was given, and
// its connections to the exposed targets. It ends when the client deletes it, when it has been idle
// for sessionIdle, or when the token it last saw expires (a client that refreshes its token sends the
// new one and the session goes on); its connections close with it.
import { randomUUID } from 'node:crypto'
import { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js'
import type { Peer, Peers, Principal, TargetConfig } from '@portcullis/core'
import { num, type CallContext } from './context.ts'
import type { Pool } from './pool.ts'
import { registerTools } from './tools.ts'

export interface OpenOptions {
  target: TargetConfig
  peers: Peers
  principal: Principal
  token: string
  register(id: string, s: McpSession): void
  onClosed(id: string): void
  /**
   * the SDK's stateless mode: no Mcp-Session-Id, a server and transport for one POST only (its
   * progress notifications and result on that POST's own SSE stream), so any worker or instance can
   * serve any request; the caller closes it when the response ends
   */
  stateless?: boolean
}

const VERSION = '0.1.0'
const MAX_TIMER_MS = 2 ** 31 - 1

export class McpSession implements CallContext {
  id = ''
  principal: Principal
  readonly peers: Peers
  readonly options: Record<string, unknown>
  readonly transport: StreamableHTTPServerTransport
  readonly server: McpServer
  #token: string
  readonly #pools = new Map<string, Pool<unknown>>()
  #expiry: NodeJS.Timeout | undefined
  #idle: NodeJS.Timeout | undefined
  #closed = false
  readonly #onClosed: (id: string) => void

  private constructor(o: OpenOptions, transport: StreamableHTTPServerTransport) {
    this.principal = o.principal
    this.peers = o.peers
    this.options = o.target.options
    this.#token = o.token
    this.#onClosed = o.onClosed
    this.transport = transport
    this.server = new McpServer({ name: `portcullis-${o.target.name}`, version: VERSION }, { capabilities: { tools: {} } })
  }

  static async open(o: OpenOptions): Promise<McpSession> {
    let s: McpSession | undefined
    const transport = new StreamableHTTPServerTransport({
      sessionIdGenerator: o.stateless ? undefined : () => randomUUID(),
      onsessioninitialized: (id) => {
        s!.id = id
        o.register(id, s!)
      },
      onsessionclosed: () => s?.close('deleted by the client'),
    })
    s = new McpSession(o, transport)
    transport.onclose = () => s!.close('transport closed')
    registerTools(s.server, s, o.target)
    await s.server.connect(transport)
    s.refresh(o.token, o.principal)
    return s
  }

  token(): string {
    return this.#token
  }

  owns(p: Principal): boolean {
    return p.subject === this.principal.subject && p.issuer === this.principal.issuer
  }

  /** the latest request's token and principal: later connections use it; the expiry follows it */
  refresh(token: string, principal: Principal): void {
    this.#token = token
    this.principal = principal
    this.#scheduleExpiry()
    if (this.#idle) clearTimeout(this.#idle)
    this.#idle = setTimeout(() => this.close('idle'), Math.min(num(this.options, 'sessionIdleMs', 30 * 60_000), MAX_TIMER_MS))
    this.#idle.unref()
  }

  #scheduleExpiry(): void {
    if (this.#expiry) clearTimeout(this.#expiry)
    const at = this.principal.expiresAt
    if (at === undefined) return
    // timers hold at most 2^31-1 ms (past that Node fires at once): a longer-lived token is looked at again then
    const left = Math.max(0, at - Date.now())
    this.#expiry = setTimeout(() => (left > MAX_TIMER_MS ? this.#scheduleExpiry() : this.close('token expired')), Math.min(left, MAX_TIMER_MS))
    this.#expiry.unref()
  }

  pool<C>(peer: Peer, make: () => Pool<C>): Pool<C> {
    let p = this.#pools.get(peer.name) as Pool<C> | undefined
    if (!p) {
      p = make()
      if (this.#closed) p.close()
      this.#pools.set(peer.name, p as Pool<unknown>)
    }
    return p
  }

  close(_reason: string): void {
    if (this.#closed) return
    this.#closed = true
    if (this.#expiry) clearTimeout(this.#expiry)
    if (this.#idle) clearTimeout(this.#idle)
    for (const p of this.#pools.values()) p.close()
    this.#pools.clear()
    if (this.id) this.#onClosed(this.id)
    void this.transport.close().catch(() => {})
  }
}
