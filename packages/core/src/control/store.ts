// The control store: what several gateway processes must agree on (approval requests and their
// decisions, approval windows, revocations, the registry of live sessions, requests to end
// sessions) and the lease each instance holds while it is alive. One interface, three homes:
// memory (this package, the embedded default), Postgres and Redis (@portcullis/store).
//
// The data path never waits on it. Allow/block decisions, masking and recording read only this
// process's memory; what the store says reaches that memory through `subscribe` (grants and
// revocations are mirrored locally). Only approvals, revocations, kills and the admin API await it.
import type { RevocationEntry } from '../config/types.ts'
import type { ApprovalRequest, ApprovalVote, Protocol } from '../types.ts'

export interface ApprovalGrant {
  subject: string
  target: string
  fingerprint: string
  /** ms since epoch */
  until: number
  approvalId: string
}

/** One live session as every instance sees it. */
export interface SessionRecord {
  id: string
  instance: string
  target: string
  protocol: Protocol
  remote: string
  subject?: string
  groups?: string[]
  /** ms since epoch, from the token */
  expiresAt?: number
  started: number
  lastActivity: number
  /** the session's last few statements (newest last), as its audit events carry them */
  recent?: string[]
  /** bytes sent to the client so far (after masking), from its audit events */
  bytes?: number
}

export interface InstanceInfo {
  id: string
  host: string
  pid: number
  started: number
}

/** Ends one session, or every session of a subject, wherever it runs. */
export type KillRequest = ({ sessionId: string } | { subject: string }) & { reason: string; by?: string }

/** What changed, as every instance hears it (in the order the store committed it). */
export type ControlChange =
  | { kind: 'request'; request: ApprovalRequest }
  | { kind: 'grant'; grant: ApprovalGrant }
  | { kind: 'revocation'; entry: RevocationEntry }
  | { kind: 'kill'; kill: KillRequest }

/** The final state asked of a pending request; `reason` is the approver's (deny) or ours. */
export interface RequestVerdict {
  status: 'approved' | 'denied' | 'expired' | 'withdrawn'
  decidedBy?: string
  reason?: string
  /** when approving a request with a window: the grant, written in the same step */
  grant?: ApprovalGrant
  /**
   * status 'approved': one approver's vote. The store adds it unless that approver already voted
   * (APPROVAL_ALREADY_COUNTED), and moves the request to approved (writing `grant`) only once
   * the request's minApprovals distinct votes are in; until then it stays pending with the votes.
   */
  vote?: ApprovalVote
}

export interface ControlHealth {
  kind: 'memory' | 'postgres' | 'redis'
  ok: boolean
  /** why not, when not ok (never a password or an address) */
  error?: string
}

export interface ControlStore {
  readonly kind: ControlHealth['kind']
  /**
   * other processes read and write it too (default: every kind but memory). The IPC store of a
   * cluster worker is memory held by the primary, and shared by every worker of the host.
   */
  readonly shared?: boolean
  /** connects, creates or migrates what it needs, takes this instance's lease */
  start(instance: InstanceInfo): Promise<void>
  /** gives the lease back; this instance's pending requests read withdrawn, its sessions end */
  close(): Promise<void>
  /** synchronous: read on every approval-requiring operation and by /healthz */
  health(): ControlHealth

  putRequest(request: ApprovalRequest): Promise<void>
  getRequest(id: string): Promise<ApprovalRequest | undefined>
  /** pending requests and recently decided ones */
  listRequests(): Promise<ApprovalRequest[]>
  /**
   * Moves a pending, unexpired request to its final state, once: of two verdicts given at once,
   * one wins and the other is refused with APPROVAL_NOT_PENDING (APPROVAL_NOT_FOUND when unknown).
   */
  decide(id: string, verdict: RequestVerdict): Promise<ApprovalRequest>
  /**
   * Defer mode: lets an approved, unexpired request's statement through once. Of two calls at once
   * (two instances, two retries) exactly one gets the request back; the other gets undefined.
   */
  release(id: string): Promise<ApprovalRequest | undefined>
  findGrant(subject: string, target: string, fingerprint: string): Promise<ApprovalGrant | undefined>
  /** grants still open */
  grants(): Promise<ApprovalGrant[]>

  revoke(entry: RevocationEntry): Promise<void>
  revocations(): Promise<RevocationEntry[]>

  /** registers or refreshes this instance's sessions (last activity) */
  putSessions(sessions: SessionRecord[]): Promise<void>
  endSession(id: string): Promise<void>
  /** live sessions of every instance whose lease holds */
  listSessions(): Promise<SessionRecord[]>
  kill(request: KillRequest): Promise<void>

  /**
   * Objects of the upstream account that a scope created through the gateway (OpenAI-compatible
   * files, vector stores, batches): under a scope they may be used again by that scope only. `scope`
   * is the session's expanded scope (SessionScope.summary), `kind` the object's kind, ids the
   * upstream's. The first owner of an id keeps it: putting an id another scope owns changes nothing.
   */
  putObjects(target: string, scope: string, kind: string, ids: string[]): Promise<void>
  /** the ones of `ids` that `scope` owns on `target` */
  ownedObjects(target: string, scope: string, kind: string, ids: string[]): Promise<string[]>
  /** forgets objects deleted upstream (only those `scope` owns) */
  dropObjects(target: string, scope: string, kind: string, ids: string[]): Promise<void>

  /** every change, from any instance (this one included), after start */
  subscribe(onChange: (change: ControlChange) => void): () => void
  /** called when health() changes */
  onHealth(fn: (health: ControlHealth) => void): () => void
}

/** whether other processes see this store: then nothing may be assumed from this process's memory */
export function isShared(store: Pick<ControlStore, 'kind' | 'shared'>): boolean {
  return store.shared ?? store.kind !== 'memory'
}
