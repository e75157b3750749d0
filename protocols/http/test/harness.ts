// Test harness: a net.Server that hands each connection to httpCodec.serve with a Session, then closes
// the session — what the gateway does. The Session here is built in the test from the types.ts
// interface (the core's createCore is not in the tree yet): tokens map to principals, a policy
// function decides, and a MaskPlan stub masks. Records and audit events are kept for assertions.
import { createServer, type Server, type Socket } from 'node:net'
import type { Duplex } from 'node:stream'
import type { AddressInfo } from 'node:net'
import { randomUUID } from 'node:crypto'
import type { ApprovalRequest, Decision, DecideOptions, MaskPlan, Operation, Principal, Session, TargetConfig, AuditEvent } from '@portcullis/core'
import { PortcullisError } from '@portcullis/core'
import { httpCodec } from '../src/index.ts'
import { emptyMasks } from './stub-masks.ts'

export const UPSTREAM_KEY = 'sk-upstream-gateway-key-000'

export type Policy = (op: Operation, principal: Principal) => { action: 'allow' | 'block' | 'approve'; rule: string | null; reason?: string }

export interface Approvals {
  pending: ApprovalRequest[]
  /** approve/deny a pending request by id */
  settle(id: string, approved: boolean): void
}

export interface GatewayOptions {
  upstreamUrl: string
  options?: Record<string, unknown>
  limits?: Partial<TargetConfig['limits']>
  tls?: TargetConfig['upstream']['tls']
  /** how the upstream credential is sent (default Authorization: Bearer {secret}) */
  auth?: { header: string; value: string }
  tokens?: Record<string, Principal>
  policy?: Policy
  masks?: () => MaskPlan
  /** how long an approval waits before it times out, ms */
  approvalTimeoutMs?: number
}

export interface Gateway {
  url: string
  port: number
  records: Array<{ type: string; payload: Record<string, unknown> }>
  audits: Array<Partial<AuditEvent>>
  approvals: Approvals
  sessions: number
  /** resolves once `n` requests have completed (a request's audit event is the last thing it writes) */
  settled(n: number): Promise<void>
  /** serves one already-accepted connection with a fresh session (what the gateway's listener does) */
  serve(socket: Duplex): Promise<void>
  stop(): Promise<void>
}

export const TOKENS: Record<string, Principal> = {
  'dev-token-alice': { subject: 'alice', groups: ['agents'], issuer: 'test' },
  'dev-token-bob': { subject: 'bob', groups: ['agents'], issuer: 'test' },
}

export async function startGateway(o: GatewayOptions): Promise<Gateway> {
  const target: TargetConfig = {
    name: 'llm',
    protocol: 'http',
    listen: '127.0.0.1:0',
    upstream: { url: o.upstreamUrl, tls: o.tls, auth: { header: 'Authorization', value: 'Bearer {secret}', ...o.auth, secret: { secret: 'openai' } } },
    limits: { maxConnections: 100, maxMessageBytes: 1 << 20, idleTimeoutMs: 5000, handshakeTimeoutMs: 5000, ...o.limits },
    options: { profile: 'openai', ...o.options },
  }
  const records: Gateway['records'] = []
  const audits: Gateway['audits'] = []
  const waiting = new Map<string, (approved: boolean) => void>()
  const approvedFingerprints = new Set<string>()
  const deferredPending = new Map<string, string>()
  const deferredApproved = new Map<string, string>()
  const approvals: Approvals = {
    pending: [],
    settle(id, approved) {
      waiting.get(id)?.(approved)
    },
  }
  const tokens = o.tokens ?? TOKENS
  const policy: Policy = o.policy ?? (() => ({ action: 'allow', rule: 'allow-all' }))
  const sockets = new Set<Socket>()
  const settledWaiters: Array<{ n: number; resolve: () => void }> = []
  const gw: Gateway = {
    url: '', port: 0, records, audits, approvals, sessions: 0,
    settled: n =>
      new Promise<void>(resolve => {
        if (audits.length >= n) resolve()
        else settledWaiters.push({ n, resolve })
      }),
    serve: async () => {},
    stop: async () => {},
  }

  const openSession = (remote: string): Session => {
    let principal: Principal | undefined
    const ac = new AbortController()
    const session: Session = {
      id: randomUUID(),
      target,
      remote,
      get principal() {
        return principal
      },
      signal: ac.signal,
      async authenticate(token) {
        const p = tokens[token]
        if (!p) throw new PortcullisError('AUTH_FAILED', 'token not recognised')
        principal = p
        return p
      },
      assertAlive() {
        if (ac.signal.aborted) throw new PortcullisError('SESSION_CLOSED', 'session closed')
      },
      get masks() {
        return principal && o.masks ? o.masks() : emptyMasks()
      },
      wouldDecide(op: Operation) {
        const d = policy(op, principal!)
        return { action: d.action, rule: d.rule, reason: d.reason ?? d.action }
      },
      decideNow(op: Operation): Decision | undefined {
        const d = policy(op, principal!)
        const base = { rule: d.rule, reason: d.reason ?? d.action, masks: session.masks }
        if (d.action !== 'approve') return { ...base, action: d.action }
        // the approval window: an approved fingerprint passes without asking again
        if (approvedFingerprints.has(op.fingerprint)) return { ...base, action: 'allow' }
        return undefined
      },
      async decide(op: Operation, opts?: DecideOptions): Promise<Decision> {
        const now = session.decideNow(op)
        if (now) return now
        const d = policy(op, principal!)
        const base = { rule: d.rule, reason: d.reason ?? d.action, masks: session.masks }
        const request: ApprovalRequest = {
          id: randomUUID(), principal: principal!, target: target.name, protocol: 'http', class: op.class, statement: op.statement,
          fingerprint: op.fingerprint, resources: op.resources, rule: d.rule ?? '', approvers: [], facts: op.facts,
          created: Date.now(), expires: Date.now() + (o.approvalTimeoutMs ?? 5000), status: 'pending',
        }
        approvals.pending.push(request)
        opts?.onPending?.(request)
        if (opts?.defer) {
          // what the core does in defer mode: answered at once; the same request (same hash) sent
          // again runs once after the approval
          const hash = opts.sent?.().hash ?? op.fingerprint
          const released = deferredApproved.get(hash)
          if (released) {
            deferredApproved.delete(hash)
            approvals.pending.pop()
            return { ...base, action: 'allow', approvalId: released, reason: 'approved' }
          }
          const earlier = deferredPending.get(hash)
          if (earlier) approvals.pending.pop()
          const id = earlier ?? request.id
          deferredPending.set(hash, id)
          waiting.set(id, v => {
            deferredPending.delete(hash)
            if (v) deferredApproved.set(hash, id)
          })
          return { ...base, action: 'block', approvalId: id, reason: `approval pending: request ${id}`, deferred: true }
        }
        const approved = await new Promise<boolean>(resolve => {
          const timer = setTimeout(() => resolve(false), o.approvalTimeoutMs ?? 5000)
          waiting.set(request.id, v => {
            clearTimeout(timer)
            resolve(v)
          })
          opts?.signal?.addEventListener('abort', () => {
            clearTimeout(timer)
            resolve(false)
          })
        })
        waiting.delete(request.id)
        if (approved) approvedFingerprints.add(op.fingerprint)
        return { ...base, action: approved ? 'allow' : 'block', approvalId: request.id, reason: approved ? 'approved' : 'approval timed out or denied' }
      },
      async secret(ref) {
        if (ref.secret !== 'openai') throw new PortcullisError('SECRET_UNAVAILABLE', 'no such secret')
        return UPSTREAM_KEY
      },
      record(type, payload) {
        records.push({ type, payload })
      },
      audit(event) {
        audits.push(event)
        for (const w of settledWaiters.filter(w => audits.length >= w.n)) {
          settledWaiters.splice(settledWaiters.indexOf(w), 1)
          w.resolve()
        }
      },
      async close() {
        ac.abort(new PortcullisError('SESSION_CLOSED', 'closed'))
      },
    }
    return session
  }

  gw.serve = async (socket: Duplex) => {
    gw.sessions++
    const session = openSession('test')
    try {
      await httpCodec.serve(socket, session)
    } finally {
      await session.close()
    }
  }
  const server: Server = createServer(socket => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    void gw.serve(socket)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  gw.port = port
  gw.url = `http://127.0.0.1:${port}`
  gw.stop = () =>
    new Promise<void>(resolve => {
      for (const s of sockets) s.destroy()
      server.close(() => resolve())
    })
  return gw
}
