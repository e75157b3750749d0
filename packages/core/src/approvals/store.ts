// Where approval requests live. The in-memory store is the embedded default; a shared store
// (database, Redis) implements the same interface so several gateways can see one queue.
import type { ApprovalRequest } from '../types.ts'

export interface ApprovalGrant {
  subject: string
  target: string
  fingerprint: string
  until: number
  approvalId: string
}

export interface ApprovalStore {
  put(request: ApprovalRequest): void
  get(id: string): ApprovalRequest | undefined
  list(): ApprovalRequest[]
  /** replaces a stored request and tells its watchers */
  update(request: ApprovalRequest): void
  /** called on every update of this request; returns an unsubscribe function */
  watch(id: string, onChange: (request: ApprovalRequest) => void): () => void
  grant(grant: ApprovalGrant): void
  findGrant(subject: string, target: string, fingerprint: string, now: number): ApprovalGrant | undefined
}

/** Keeps decided requests for `keepMs` so the admin API can still show them, and at most `max`. */
export class MemoryApprovalStore implements ApprovalStore {
  #requests = new Map<string, ApprovalRequest>()
  #watchers = new Map<string, Set<(r: ApprovalRequest) => void>>()
  #grants = new Map<string, ApprovalGrant>()
  readonly #max: number
  #lastNow = 0

  constructor(opts: { max?: number } = {}) {
    this.#max = opts.max ?? 10_000
  }

  put(request: ApprovalRequest): void {
    this.#requests.set(request.id, { ...request })
    if (this.#requests.size > this.#max) this.#prune()
  }

  get(id: string): ApprovalRequest | undefined {
    const r = this.#requests.get(id)
    return r && { ...r }
  }

  list(): ApprovalRequest[] {
    return [...this.#requests.values()].map(r => ({ ...r }))
  }

  update(request: ApprovalRequest): void {
    this.#requests.set(request.id, { ...request })
    for (const fn of this.#watchers.get(request.id) ?? []) fn({ ...request })
  }

  watch(id: string, onChange: (request: ApprovalRequest) => void): () => void {
    let set = this.#watchers.get(id)
    if (!set) this.#watchers.set(id, (set = new Set()))
    set.add(onChange)
    return () => {
      set.delete(onChange)
      if (set.size === 0) this.#watchers.delete(id)
    }
  }

  grant(grant: ApprovalGrant): void {
    this.#grants.set(grantKey(grant.subject, grant.target, grant.fingerprint), { ...grant })
    if (this.#grants.size > this.#max) {
      // expired grants are otherwise dropped only when looked up again
      for (const [key, g] of this.#grants) if (g.until <= this.#lastNow) this.#grants.delete(key)
    }
  }

  findGrant(subject: string, target: string, fingerprint: string, now: number): ApprovalGrant | undefined {
    this.#lastNow = now
    const key = grantKey(subject, target, fingerprint)
    const g = this.#grants.get(key)
    if (!g) return undefined
    if (g.until <= now) {
      this.#grants.delete(key)
      return undefined
    }
    return g
  }

  #prune() {
    // oldest decided requests go first; pending ones are never dropped
    for (const [id, r] of this.#requests) {
      if (this.#requests.size <= this.#max) break
      if (r.status !== 'pending') this.#requests.delete(id)
    }
  }
}

function grantKey(subject: string, target: string, fingerprint: string) {
  return `${subject}\u0000${target}\u0000${fingerprint}`
}
