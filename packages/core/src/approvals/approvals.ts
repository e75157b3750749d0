// Holds operations that a rule says need approval, until an approver decides, the request times out
// or the client goes away.
import { randomBytes } from 'node:crypto'
import { PortcullisError } from '../errors.ts'
import type { ApprovalRequest, Operation, Principal, Protocol, SecretRef } from '../types.ts'
import { MemoryApprovalStore, type ApprovalGrant, type ApprovalStore } from './store.ts'
import { announce, type WebhookConfig } from './webhook.ts'

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567'

export function approvalId(): string {
  const bytes = randomBytes(10)
  let id = 'apr_'
  for (const b of bytes) id += BASE32[b & 31]
  return id
}

export interface HoldRequest {
  principal: Principal
  target: string
  protocol: Protocol
  op: Operation
  rule: string
  approvers: string[]
  timeoutMs: number
  /** ms; when set an approval lets the same statement through for this long */
  window?: number
  signal?: AbortSignal
  onPending?: (request: ApprovalRequest) => void
}

export type HoldOutcome =
  | { status: 'approved'; request: ApprovalRequest }
  | { status: 'denied'; request: ApprovalRequest; reason?: string }
  | { status: 'expired'; request: ApprovalRequest }

export interface Approvals {
  readonly store: ApprovalStore
  list(): ApprovalRequest[]
  get(id: string): ApprovalRequest | undefined
  approve(id: string, by: Principal): ApprovalRequest
  deny(id: string, by: Principal, reason?: string): ApprovalRequest
  findGrant(subject: string, target: string, fingerprint: string): ApprovalGrant | undefined
  /** resolves with the outcome; rejects with APPROVAL_WITHDRAWN when the signal aborts */
  hold(req: HoldRequest): Promise<HoldOutcome>
  setWebhook(hook: WebhookConfig | undefined): void
  /** withdraws every pending request (shutdown) */
  close(): void
}

export function createApprovals(
  opts: {
    store?: ApprovalStore
    now?: () => number
    webhook?: WebhookConfig
    log?: (msg: string) => void
    /** resolves a webhook URL given as a secret reference */
    secret?: (ref: SecretRef) => Promise<string>
  } = {},
): Approvals {
  const store = opts.store ?? new MemoryApprovalStore()
  const now = opts.now ?? Date.now
  const log = opts.log ?? (() => {})
  const secret = opts.secret ?? (async (ref: SecretRef) => Promise.reject(new Error(`no secret store for ${ref.secret}`)))
  let webhook = opts.webhook
  const denyReasons = new Map<string, string | undefined>()
  const closers = new Set<() => void>()

  function pending(id: string): ApprovalRequest {
    const r = store.get(id)
    if (!r) throw new PortcullisError('APPROVAL_NOT_FOUND', `no approval request ${id}`, { approvalId: id })
    if (r.status !== 'pending')
      throw new PortcullisError('APPROVAL_NOT_PENDING', `approval request ${id} is already ${r.status}`, { approvalId: id })
    return r
  }

  function mayDecide(r: ApprovalRequest, by: Principal) {
    if (by.subject === r.principal.subject)
      throw new PortcullisError('APPROVAL_FORBIDDEN', `${by.subject} may not decide their own request ${r.id}`, {
        approvalId: r.id,
      })
    if (!by.groups.some(g => r.approvers.includes(g)))
      throw new PortcullisError(
        'APPROVAL_FORBIDDEN',
        `${by.subject} is not an approver of ${r.id} (needs a group of: ${r.approvers.join(', ')})`,
        { approvalId: r.id },
      )
  }

  return {
    store,
    list: () => store.list(),
    get: id => store.get(id),
    findGrant: (subject, target, fp) => store.findGrant(subject, target, fp, now()),
    setWebhook(hook) {
      webhook = hook
    },

    approve(id, by) {
      const r = pending(id)
      mayDecide(r, by)
      const done: ApprovalRequest = { ...r, status: 'approved', decidedBy: by.subject }
      const window = r.window
      if (window !== undefined)
        store.grant({ subject: r.principal.subject, target: r.target, fingerprint: r.fingerprint, until: now() + window, approvalId: id })
      store.update(done)
      return done
    },

    deny(id, by, reason) {
      const r = pending(id)
      mayDecide(r, by)
      const done: ApprovalRequest = { ...r, status: 'denied', decidedBy: by.subject }
      denyReasons.set(id, reason)
      store.update(done)
      return done
    },

    hold(req) {
      const { op } = req
      const created = now()
      const request: ApprovalRequest = {
        id: approvalId(),
        principal: req.principal,
        target: req.target,
        protocol: req.protocol,
        class: op.class,
        statement: op.statement,
        fingerprint: op.fingerprint,
        resources: op.resources,
        rule: req.rule,
        approvers: req.approvers,
        facts: op.facts,
        created,
        expires: created + req.timeoutMs,
        status: 'pending',
        ...(req.window !== undefined ? { window: req.window } : {}),
      }
      return new Promise<HoldOutcome>((resolve, reject) => {
        if (req.signal?.aborted) {
          reject(new PortcullisError('APPROVAL_WITHDRAWN', 'operation withdrawn before approval was requested'))
          return
        }
        store.put(request)
        const finish = () => {
          clearTimeout(timer)
          unwatch()
          req.signal?.removeEventListener('abort', onAbort)
          closers.delete(onAbort)
        }
        const unwatch = store.watch(request.id, r => {
          if (r.status === 'pending') return
          finish()
          if (r.status === 'approved') resolve({ status: 'approved', request: r })
          else if (r.status === 'denied') {
            const reason = denyReasons.get(r.id)
            denyReasons.delete(r.id)
            resolve({ status: 'denied', request: r, ...(reason !== undefined ? { reason } : {}) })
          } else if (r.status === 'expired') resolve({ status: 'expired', request: r })
          else reject(new PortcullisError('APPROVAL_WITHDRAWN', `approval ${r.id} withdrawn`, { approvalId: r.id }))
        })
        const timer = setTimeout(() => {
          const r = store.get(request.id)
          if (r?.status === 'pending') store.update({ ...r, status: 'expired' })
        }, req.timeoutMs)
        const onAbort = () => {
          const r = store.get(request.id)
          if (r?.status === 'pending') store.update({ ...r, status: 'withdrawn' })
        }
        req.signal?.addEventListener('abort', onAbort, { once: true })
        closers.add(onAbort)
        try {
          req.onPending?.({ ...request })
        } catch (err) {
          log(`onPending callback failed: ${(err as Error).message}`)
        }
        if (webhook) void announce(request, webhook, log, secret)
      })
    },

    close() {
      for (const withdraw of [...closers]) withdraw()
    },
  }
}
