// The embedded control store: one process's memory. Every change is told to subscribers before the
// call returns, so a single gateway behaves exactly as it did before there was a control store.
import { PortcullisError } from '../errors.ts'
import type { RevocationEntry } from '../config/types.ts'
import type { ApprovalRequest } from '../types.ts'
import type {
  ApprovalGrant,
  ControlChange,
  ControlHealth,
  ControlStore,
  InstanceInfo,
  KillRequest,
  RequestVerdict,
  SessionRecord,
} from './store.ts'

/** Keeps decided requests until there are more than `max`, oldest decided first; pending ones always. */
export class MemoryControlStore implements ControlStore {
  /** 'memory'; typed wide so that a test may stand it in for a shared store */
  readonly kind: ControlStore['kind'] = 'memory'
  #requests = new Map<string, ApprovalRequest>()
  #grants = new Map<string, ApprovalGrant>()
  #revocations: RevocationEntry[] = []
  #sessions = new Map<string, SessionRecord>()
  /** objectKey(target, kind, id) → the owning scope */
  #objects = new Map<string, string>()
  #subscribers = new Set<(c: ControlChange) => void>()
  readonly #max: number
  readonly #now: () => number

  constructor(opts: { max?: number; now?: () => number } = {}) {
    this.#max = opts.max ?? 10_000
    this.#now = opts.now ?? Date.now
  }

  async start(_instance: InstanceInfo): Promise<void> {}
  async close(): Promise<void> {}
  health(): ControlHealth {
    return { kind: this.kind, ok: true }
  }
  /** memory is never away */
  onHealth(_fn: (health: ControlHealth) => void): () => void {
    return () => {}
  }

  async putRequest(request: ApprovalRequest): Promise<void> {
    this.#requests.set(request.id, { ...request })
    if (this.#requests.size > this.#max) this.#prune()
    this.#emit({ kind: 'request', request: { ...request } })
  }

  async getRequest(id: string): Promise<ApprovalRequest | undefined> {
    const r = this.#requests.get(id)
    return r && { ...r }
  }

  async listRequests(): Promise<ApprovalRequest[]> {
    return [...this.#requests.values()].map(r => ({ ...r }))
  }

  async decide(id: string, verdict: RequestVerdict): Promise<ApprovalRequest> {
    const r = this.#requests.get(id)
    if (!r) throw new PortcullisError('APPROVAL_NOT_FOUND', `no approval request ${id}`, { approvalId: id })
    if (r.status !== 'pending')
      throw new PortcullisError('APPROVAL_NOT_PENDING', `approval request ${id} is already ${r.status}`, { approvalId: id })
    if ((verdict.status === 'approved' || verdict.status === 'denied') && r.expires <= this.#now())
      throw new PortcullisError('APPROVAL_NOT_PENDING', `approval request ${id} has expired`, { approvalId: id })
    if (verdict.vote) {
      const votes = r.approvals ?? []
      if (votes.some(v => v.by === verdict.vote!.by))
        throw new PortcullisError('APPROVAL_ALREADY_COUNTED', `${verdict.vote.by} has already approved ${id}; each approver counts once`, { approvalId: id })
      const approvals = [...votes, { ...verdict.vote }]
      if (approvals.length < (r.minApprovals ?? 1)) {
        const counted: ApprovalRequest = { ...r, approvals }
        this.#requests.set(id, counted)
        this.#emit({ kind: 'request', request: { ...counted } })
        return { ...counted }
      }
      r.approvals = approvals
    }
    const done: ApprovalRequest = {
      ...r,
      status: verdict.status,
      ...(verdict.decidedBy !== undefined ? { decidedBy: verdict.decidedBy } : {}),
      ...(verdict.reason !== undefined ? { reason: verdict.reason } : {}),
    }
    if (verdict.grant) {
      const g = { ...verdict.grant }
      this.#grants.set(grantKey(g.subject, g.target, g.fingerprint), g)
      this.#dropExpiredGrants()
      this.#emit({ kind: 'grant', grant: { ...g } })
    }
    this.#requests.set(id, done)
    this.#emit({ kind: 'request', request: { ...done } })
    return { ...done }
  }

  async release(id: string): Promise<ApprovalRequest | undefined> {
    const r = this.#requests.get(id)
    if (!r || r.status !== 'approved' || r.mode !== 'defer' || r.released !== undefined || r.expires <= this.#now()) return undefined
    const done: ApprovalRequest = { ...r, released: this.#now() }
    this.#requests.set(id, done)
    this.#emit({ kind: 'request', request: { ...done } })
    return { ...done }
  }

  async findGrant(subject: string, target: string, fingerprint: string): Promise<ApprovalGrant | undefined> {
    const g = this.#grants.get(grantKey(subject, target, fingerprint))
    return g && g.until > this.#now() ? { ...g } : undefined
  }

  async grants(): Promise<ApprovalGrant[]> {
    this.#dropExpiredGrants()
    return [...this.#grants.values()].map(g => ({ ...g }))
  }

  async revoke(entry: RevocationEntry): Promise<void> {
    this.#revocations.push({ ...entry })
    this.#emit({ kind: 'revocation', entry: { ...entry } })
  }

  async revocations(): Promise<RevocationEntry[]> {
    return this.#revocations.map(e => ({ ...e }))
  }

  async putSessions(sessions: SessionRecord[]): Promise<void> {
    for (const s of sessions) this.#sessions.set(s.id, { ...s })
  }

  async endSession(id: string): Promise<void> {
    this.#sessions.delete(id)
  }

  async listSessions(): Promise<SessionRecord[]> {
    return [...this.#sessions.values()].map(s => ({ ...s }))
  }

  async kill(request: KillRequest): Promise<void> {
    this.#emit({ kind: 'kill', kill: { ...request } })
  }

  async putObjects(target: string, scope: string, kind: string, ids: string[]): Promise<void> {
    for (const id of ids) {
      const key = objectKey(target, kind, id)
      if (!this.#objects.has(key)) this.#objects.set(key, scope)
    }
  }

  async ownedObjects(target: string, scope: string, kind: string, ids: string[]): Promise<string[]> {
    return ids.filter(id => this.#objects.get(objectKey(target, kind, id)) === scope)
  }

  async dropObjects(target: string, scope: string, kind: string, ids: string[]): Promise<void> {
    for (const id of ids) {
      const key = objectKey(target, kind, id)
      if (this.#objects.get(key) === scope) this.#objects.delete(key)
    }
  }

  subscribe(onChange: (change: ControlChange) => void): () => void {
    this.#subscribers.add(onChange)
    return () => this.#subscribers.delete(onChange)
  }

  #emit(change: ControlChange) {
    for (const fn of [...this.#subscribers]) fn(change)
  }

  #dropExpiredGrants() {
    if (this.#grants.size <= this.#max) return
    const now = this.#now()
    for (const [key, g] of this.#grants) if (g.until <= now) this.#grants.delete(key)
  }

  #prune() {
    for (const [id, r] of this.#requests) {
      if (this.#requests.size <= this.#max) break
      if (r.status !== 'pending') this.#requests.delete(id)
    }
  }
}

function objectKey(target: string, kind: string, id: string): string {
  return `${target}\u0000${kind}\u0000${id}`
}

export function grantKey(subject: string, target: string, fingerprint: string): string {
  return `${subject}\u0000${target}\u0000${fingerprint}`
}
