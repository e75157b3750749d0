// Holds operations that a rule says need approval, until an approver decides, the request times out
// or the client goes away. Requests and windows live in the control store; this process keeps a
// mirror of them, fed by the store's changes, so that looking a window up (decideNow, on every
// operation) and listing requests never wait on the store.
import { randomBytes } from 'node:crypto'
import { PortcullisError } from '../errors.ts'
import type { ApprovalRequest, BlastRadius, Operation, Principal, Protocol, RecentStatement, SecretRef, StatementAsSent } from '../types.ts'
import { grantKey, MemoryControlStore } from '../control/memory.ts'
import { isShared, type ApprovalGrant, type ControlChange, type ControlStore, type RequestVerdict } from '../control/store.ts'
import { announce, type WebhookConfig } from './webhook.ts'

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567'

export function approvalId(): string {
  const bytes = randomBytes(10)
  let id = 'apr_'
  for (const b of bytes) id += BASE32[b & 31]
  return id
}

/** what an approval-requiring operation is told while the control store cannot be reached */
export const APPROVAL_UNAVAILABLE = 'approval service unavailable; operations that need approval are refused until it is back'

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
  /** the statement as sent (already masked for display) and its hash */
  sent?: StatementAsSent
  policyVersion?: string
  ruleReason?: string
  /** distinct approvers needed (default 1) */
  minApprovals?: number
  recent?: RecentStatement[]
  /** defer: nobody waits; the same statement sent again runs once approved (release) */
  mode?: 'wait' | 'defer'
  signal?: AbortSignal
  onPending?: (request: ApprovalRequest) => void
  /** the blast radius estimated before the hold (null: none could be had; absent: not asked) */
  estimate?: BlastRadius | null
}

export type HoldOutcome =
  | { status: 'approved'; request: ApprovalRequest }
  | { status: 'denied'; request: ApprovalRequest; reason?: string }
  | { status: 'expired'; request: ApprovalRequest }
  /** the control store could not take the request: nobody could approve it (fail closed) */
  | { status: 'unavailable'; reason: string }

export interface Approvals {
  readonly store: ControlStore
  /** this process's mirror: pending requests of every instance and recently decided ones */
  list(): ApprovalRequest[]
  get(id: string): ApprovalRequest | undefined
  /**
   * Decides through the store (one decision wins across instances). What the mirror already shows
   * to be wrong (unknown with the memory store, not pending, not this approver's) throws at once.
   */
  /** one approver's yes; the request is approved once minApprovals distinct approvers said yes */
  approve(id: string, by: Principal, reason?: string): Promise<ApprovalRequest>
  deny(id: string, by: Principal, reason?: string): Promise<ApprovalRequest>
  /**
   * Defer mode: the request (approved and not yet released, or still pending) for exactly this
   * statement by this subject on this target, from the mirror; a pending one is read again from
   * the store (it may have been approved on another instance a moment ago).
   */
  findDeferred(subject: string, target: string, statementHash: string): Promise<ApprovalRequest | undefined>
  /** lets an approved deferred request's statement through once (atomic across instances) */
  release(id: string): Promise<ApprovalRequest | undefined>
  /**
   * After a reload: each request this process holds is asked again; those for which `check`
   * names a reason (the decision changed) are withdrawn with it.
   */
  reconsider(check: (req: HoldRequest) => string | undefined): Promise<void>
  /** from the mirror: the data path's lookup */
  findGrant(subject: string, target: string, fingerprint: string): ApprovalGrant | undefined
  /** from the store, for a window granted elsewhere that the mirror has not heard of yet */
  fetchGrant(subject: string, target: string, fingerprint: string): Promise<ApprovalGrant | undefined>
  /** resolves with the outcome; rejects with APPROVAL_WITHDRAWN when the signal aborts */
  hold(req: HoldRequest): Promise<HoldOutcome>
  /** fills the mirror from the store (start, and after the store was away) */
  load(): Promise<void>
  setWebhook(hook: WebhookConfig | undefined): void
  /** withdraws every pending request of this process (shutdown) */
  close(): void
}

export function createApprovals(
  opts: {
    store?: ControlStore
    now?: () => number
    webhook?: WebhookConfig
    log?: (msg: string) => void
    /** resolves a webhook URL given as a secret reference */
    secret?: (ref: SecretRef) => Promise<string>
    /** the instance id written into this process's requests */
    instance?: string
    /** decided requests kept in the mirror */
    max?: number
  } = {},
): Approvals {
  const store = opts.store ?? new MemoryControlStore()
  const now = opts.now ?? Date.now
  const log = opts.log ?? (() => {})
  const secret = opts.secret ?? (async (ref: SecretRef) => Promise.reject(new Error(`no secret store for ${ref.secret}`)))
  const max = opts.max ?? 10_000
  let webhook = opts.webhook
  const requests = new Map<string, ApprovalRequest>()
  const grants = new Map<string, ApprovalGrant>()
  const watchers = new Map<string, (r: ApprovalRequest) => void>()
  const closers = new Set<() => void>()
  /** what this process holds: pending requests, with what they were made of (reload asks them again) */
  const holds = new Map<HoldRequest, string>()

  function remember(r: ApprovalRequest) {
    const known = requests.get(r.id)
    // a final state is final: a late 'pending' echo (a poll after a notification) must not undo it
    if (known && known.status !== 'pending' && r.status === 'pending') return
    // nor does a late echo with fewer votes, or one from before the release
    if (known && known.status === r.status && (known.approvals?.length ?? 0) > (r.approvals?.length ?? 0)) return
    if (known?.released !== undefined && r.released === undefined) return
    requests.set(r.id, r)
    if (requests.size > max) {
      for (const [id, q] of requests) {
        if (requests.size <= max) break
        if (q.status !== 'pending') requests.delete(id)
      }
    }
    if (r.status !== 'pending') watchers.get(r.id)?.({ ...r })
  }

  function rememberGrant(g: ApprovalGrant) {
    const key = grantKey(g.subject, g.target, g.fingerprint)
    const known = grants.get(key)
    if (!known || known.until < g.until) grants.set(key, g)
    if (grants.size > max) {
      const t = now()
      for (const [k, v] of grants) if (v.until <= t) grants.delete(k)
    }
  }

  store.subscribe((c: ControlChange) => {
    if (c.kind === 'request') remember(c.request)
    else if (c.kind === 'grant') rememberGrant(c.grant)
  })

  function assertDecidable(r: ApprovalRequest, by: Principal) {
    if (r.status !== 'pending')
      throw new PortcullisError('APPROVAL_NOT_PENDING', `approval request ${r.id} is already ${r.status}`, { approvalId: r.id })
    if (r.approvals?.some(v => v.by === by.subject))
      throw new PortcullisError('APPROVAL_ALREADY_COUNTED', `${by.subject} has already approved ${r.id}; each approver counts once`, { approvalId: r.id })
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

  function verdictOn(r: ApprovalRequest, by: Principal, status: 'approved' | 'denied', reason?: string): Promise<ApprovalRequest> {
    assertDecidable(r, by)
    const verdict: RequestVerdict =
      status === 'approved'
        ? { status, decidedBy: by.subject, vote: { by: by.subject, at: now(), ...(reason !== undefined ? { reason } : {}) } }
        : { status, decidedBy: by.subject, ...(reason !== undefined ? { reason } : {}) }
    if (status === 'approved' && r.window !== undefined)
      verdict.grant = { subject: r.principal.subject, target: r.target, fingerprint: r.fingerprint, until: now() + r.window, approvalId: r.id }
    return store.decide(r.id, verdict)
  }

  function decideFor(id: string, by: Principal, status: 'approved' | 'denied', reason?: string): Promise<ApprovalRequest> {
    const known = requests.get(id)
    if (known) return verdictOn(known, by, status, reason)
    // the memory store tells the mirror everything before it returns: unknown here is unknown
    if (!isShared(store)) throw new PortcullisError('APPROVAL_NOT_FOUND', `no approval request ${id}`, { approvalId: id })
    return store.getRequest(id).then(r => {
      if (!r) throw new PortcullisError('APPROVAL_NOT_FOUND', `no approval request ${id}`, { approvalId: id })
      return verdictOn(r, by, status, reason)
    })
  }

  return {
    store,
    list: () => [...requests.values()].map(r => ({ ...r })),
    get: id => {
      const r = requests.get(id)
      return r && { ...r }
    },
    findGrant(subject, target, fp) {
      const key = grantKey(subject, target, fp)
      const g = grants.get(key)
      if (!g) return undefined
      if (g.until <= now()) {
        grants.delete(key)
        return undefined
      }
      return g
    },
    async fetchGrant(subject, target, fp) {
      if (!isShared(store) || !store.health().ok) return undefined
      try {
        const g = await store.findGrant(subject, target, fp)
        if (g) rememberGrant(g)
        return g && g.until > now() ? g : undefined
      } catch {
        return undefined
      }
    },
    async load() {
      const [rs, gs] = await Promise.all([store.listRequests(), store.grants()])
      for (const r of rs) remember(r)
      for (const g of gs) rememberGrant(g)
    },
    setWebhook(hook) {
      webhook = hook
    },

    approve: (id, by, reason) => decideFor(id, by, 'approved', reason),
    deny: (id, by, reason) => decideFor(id, by, 'denied', reason),

    async findDeferred(subject, target, hash) {
      const t = now()
      let found: ApprovalRequest | undefined
      for (const r of requests.values()) {
        if (r.mode !== 'defer' || r.statementHash !== hash || r.principal.subject !== subject || r.target !== target) continue
        if (r.expires <= t || r.released !== undefined) continue
        if (r.status === 'approved') return { ...r }
        if (r.status === 'pending') found = r
      }
      if (!found || store.kind === 'memory') return found && { ...found }
      // approved on another instance a moment ago: the change may not have reached this mirror
      const fresh = await store.getRequest(found.id).catch(() => undefined)
      if (fresh) remember(fresh)
      return fresh && (fresh.status === 'pending' || (fresh.status === 'approved' && fresh.released === undefined)) ? fresh : undefined
    },

    async release(id) {
      const r = await store.release(id)
      if (r) remember(r)
      return r
    },

    async reconsider(check) {
      const withdrawals: Promise<unknown>[] = []
      for (const [held, id] of holds) {
        const r = requests.get(id)
        if (r && r.status !== 'pending') continue
        const reason = check(held)
        if (reason === undefined) continue
        withdrawals.push(
          store.decide(id, { status: 'withdrawn', reason }).catch(err => {
            if (!(err instanceof PortcullisError && err.code === 'APPROVAL_NOT_PENDING')) log(`approval ${id} not withdrawn after reload: ${(err as Error).message}`)
          }),
        )
      }
      await Promise.all(withdrawals)
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
        ...(req.estimate !== undefined ? { estimate: req.estimate } : {}),
        created,
        expires: created + req.timeoutMs,
        status: 'pending',
        minApprovals: req.minApprovals ?? 1,
        approvals: [],
        mode: req.mode ?? 'wait',
        // from the estimator; null when there is none (no estimate is a fact too)
        estimate: req.estimate ?? null,
        ...(req.sent ? { sent: { text: req.sent.text, ...(req.sent.parameters ? { parameters: req.sent.parameters } : {}) }, statementHash: req.sent.hash } : {}),
        ...(req.policyVersion !== undefined ? { policyVersion: req.policyVersion } : {}),
        ...(req.ruleReason !== undefined ? { ruleReason: req.ruleReason } : {}),
        ...(req.recent ? { recent: req.recent } : {}),
        ...(req.window !== undefined ? { window: req.window } : {}),
        ...(opts.instance !== undefined ? { instance: opts.instance } : {}),
      }
      return new Promise<HoldOutcome>((resolve, reject) => {
        if (req.signal?.aborted) {
          reject(new PortcullisError('APPROVAL_WITHDRAWN', 'operation withdrawn before approval was requested'))
          return
        }
        // fail closed at once: a request the store cannot take could never be approved
        if (!store.health().ok) {
          resolve({ status: 'unavailable', reason: APPROVAL_UNAVAILABLE })
          return
        }
        let done = false
        let timer: NodeJS.Timeout | undefined
        const finish = () => {
          done = true
          if (timer) clearTimeout(timer)
          watchers.delete(request.id)
          holds.delete(req)
          req.signal?.removeEventListener('abort', onAbort)
          closers.delete(onAbort)
        }
        const settle = (r: ApprovalRequest) => {
          if (done || r.status === 'pending') return
          finish()
          if (r.status === 'approved') resolve({ status: 'approved', request: r })
          else if (r.status === 'denied') resolve({ status: 'denied', request: r, ...(r.reason !== undefined ? { reason: r.reason } : {}) })
          else if (r.status === 'expired') resolve({ status: 'expired', request: r })
          else reject(new PortcullisError('APPROVAL_WITHDRAWN', `approval ${r.id} withdrawn${r.reason ? `: ${r.reason}` : ''}`, { approvalId: r.id }))
        }
        // watching before the put: a decision may arrive before the put's promise settles
        watchers.set(request.id, settle)
        holds.set(req, request.id)
        const expire = () => {
          if (done) return
          store.decide(request.id, { status: 'expired' }).then(settle, async (err: unknown) => {
            if (done) return
            // decided meanwhile: the change is on its way; read it rather than wait for it
            const r = await store.getRequest(request.id).catch(() => undefined)
            if (r && r.status !== 'pending') return settle(r)
            log(`approval ${request.id} timed out; the store did not take the expiry: ${(err as Error).message}`)
            settle({ ...request, status: 'expired' })
          })
        }
        const onAbort = () => {
          if (done) return
          const reason = req.signal?.reason instanceof Error ? req.signal.reason.message : 'operation withdrawn'
          // after the put: the store must not hear of the withdrawal before the request
          const withdrawn = stored.then(() => store.decide(request.id, { status: 'withdrawn', reason }))
          // the client is gone: it hears of it now, whatever the store answers
          finish()
          reject(new PortcullisError('APPROVAL_WITHDRAWN', `approval ${request.id} withdrawn`, { approvalId: request.id }))
          withdrawn.catch(err => {
            if (!(err instanceof PortcullisError && err.code === 'APPROVAL_NOT_PENDING'))
              log(`approval ${request.id} withdrawn here; the store did not take it: ${(err as Error).message}`)
          })
        }
        const stored = store.putRequest(request)
        req.signal?.addEventListener('abort', onAbort, { once: true })
        closers.add(onAbort)
        stored.then(
          () => {
            if (done) return
            timer = setTimeout(expire, Math.max(0, request.expires - now()))
            try {
              req.onPending?.({ ...request })
            } catch (err) {
              log(`onPending callback failed: ${(err as Error).message}`)
            }
            if (webhook) void announce(request, webhook, log, secret)
          },
          (err: unknown) => {
            if (done) return
            finish()
            log(`approval request not stored: ${(err as Error).message}`)
            resolve({ status: 'unavailable', reason: APPROVAL_UNAVAILABLE })
          },
        )
      })
    },

    close() {
      for (const withdraw of [...closers]) withdraw()
    },
  }
}
