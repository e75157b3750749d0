// One client connection as the core sees it: who is calling, what they may do, and the record of it.
import { randomBytes, type KeyObject } from 'node:crypto'
import { PortcullisError } from '../errors.ts'
import type {
  ApprovalRequest,
  AuditEvent,
  BlastRadius,
  Decision,
  DecideOptions,
  MaskPlan,
  Operation,
  OperationClass,
  Peers,
  Principal,
  RecordType,
  ScopedObjects,
  SecretRef,
  Session,
  TargetConfig,
} from '../types.ts'
import type { Config } from '../config/types.ts'
import type { Approvals } from '../approvals/approvals.ts'
import { HeldRecords } from './held-records.ts'
import { RecentStatements } from './recent.ts'
import { auditHead, operationText, type AuditHead, type AuditLog, type OperationOutcome } from '../audit/audit.ts'
import type { Identity } from '../identity/verify.ts'
import type { Metrics } from '../metrics/metrics.ts'
import type { SecretStore } from '../secrets/store.ts'
import { decide as policyDecide, type PolicyDecision } from '../policy/decide.ts'
import { policyVersion, statementHash } from '../policy/fingerprint.ts'
import { byWindow, deferred, outcomeDecision, untilAborted, votersOf } from './approval-answers.ts'
import { DEFAULT_ESTIMATE_TIMEOUT_MS, rulesHold, rulesName, runEstimate, unknownFacts, withEstimate } from '../approvals/estimate.ts'
import type { Uploader } from '../recording/upload/index.ts'
import { compileMasks, emptyMaskPlan, openRecorder, type SessionRecorder } from './engines.ts'
import { expandScope, type SessionScope } from '../identity/scope.ts'
import { ReadSummary } from './read-summary.ts'
import type { ControlStore } from '../control/store.ts'

// lines written in the same millisecond share one ISO string
let lastMs = NaN
let lastIso = ''
function isoTime(ms: number): string {
  if (ms !== lastMs) {
    lastIso = new Date(ms).toISOString()
    lastMs = ms
  }
  return lastIso
}

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567'

export function sessionId(): string {
  let id = 'ses_'
  for (const b of randomBytes(12)) id += BASE32[b & 31]
  return id
}

export interface RecordingSign {
  hmacKey?: Buffer
  ed25519PrivateKey?: KeyObject
}

/** What a session needs from the core that opened it; `generation` changes on reload. */
export interface SessionHost {
  generation(): { n: number; config: Config }
  now(): number
  identity: Identity
  secrets: SecretStore
  approvals: Approvals
  audit: AuditLog
  metrics: Metrics
  hashKey(): Buffer
  recordingSign(): RecordingSign | undefined
  /** recording.upload: sealed recordings are handed to it; `full` refuses operations like a failed recorder */
  uploader?: Uploader
  /**
   * false until a shared control store's revocations have been read once: an instance that started
   * while the store was away does not know who was revoked, so it lets nobody in (fail closed)
   */
  revocationsKnown(): boolean
  /** where a scope's upstream objects are owned (Session.objects) */
  control?: Pick<ControlStore, 'health' | 'putObjects' | 'ownedObjects' | 'dropObjects'>
  /** first successful authentication: the session now has a principal (the session registry) */
  authenticated(session: CoreSession): void
  closed(session: CoreSession): void
}

export class CoreSession implements Session {
  readonly id = sessionId()
  readonly target: TargetConfig
  readonly remote: string
  readonly started: number
  /** ms: the last operation decided (the session registry reads it on its heartbeat) */
  lastActivity: number
  /** bytes sent to the client, summed from audit events */
  bytesOut = 0
  /** set by the gateway (see Session.peers) */
  peers?: Peers
  /**
   * called once, when the first authenticate() succeeds: the gateway ends its handshake timer there,
   * so a logged-in session holds no timer of its own (an idle one costs nothing until it speaks)
   */
  onAuthenticated?: () => void
  readonly #host: SessionHost
  readonly #abort = new AbortController()
  #principal: Principal | undefined
  #scope: SessionScope | undefined
  #recorder: SessionRecorder | undefined
  #masks: { generation: number; plan: MaskPlan } | undefined
  #closing: Promise<void> | undefined
  /** the last RECENT_STATEMENTS decided (normalized text: no literal values), a ring of references: no allocation per operation */
  readonly #recent = new RecentStatements()

  constructor(host: SessionHost, target: TargetConfig, remote: string) {
    this.#host = host
    this.target = target
    this.remote = remote
    this.started = host.now()
    this.lastActivity = this.started
  }

  get principal(): Principal | undefined {
    return this.#principal
  }

  get scope(): SessionScope | undefined {
    return this.#scope
  }

  get objects(): ScopedObjects | undefined {
    const scope = this.#scope
    const store = this.#host.control
    if (!scope) return undefined
    const target = this.target.name
    const ready = () => {
      if (!store || !store.health().ok)
        throw new PortcullisError('CONTROL_STORE_UNAVAILABLE', 'control store unavailable: which scope owns an upstream object cannot be read; refused')
      return store
    }
    return {
      put: async (kind, ids) => (ids.length === 0 ? undefined : ready().putObjects(target, scope.summary, kind, ids)),
      owned: async (kind, ids) => (ids.length === 0 ? [] : ready().ownedObjects(target, scope.summary, kind, ids)),
      drop: async (kind, ids) => (ids.length === 0 ? undefined : ready().dropObjects(target, scope.summary, kind, ids)),
    }
  }

  get signal(): AbortSignal {
    return this.#abort.signal
  }

  get recorder(): SessionRecorder | undefined {
    return this.#recorder
  }

  get closed(): boolean {
    return this.#closing !== undefined
  }

  /** ends the session from outside (admin kill, revocation, shutdown); the codec sees the signal */
  abort(err: PortcullisError): void {
    if (!this.#abort.signal.aborted) this.#abort.abort(err)
  }

  async authenticate(token: string): Promise<Principal> {
    if (this.closed) throw new PortcullisError('SESSION_CLOSED', 'session closed')
    // a killed or revoked session stays ended, whatever token comes next
    if (this.#abort.signal.aborted) throw this.#abort.signal.reason as PortcullisError
    let principal: Principal
    let scopeOf: SessionScope | undefined
    try {
      if (!this.#host.revocationsKnown())
        throw new PortcullisError('AUTH_FAILED', 'the revocation list is not loaded yet (control store unavailable); try again shortly', { reason: 'revocations-unknown' })
      // the session's end (client gone, kill, shutdown) ends the wait for a slow identity provider:
      // the codec is not held until the verification times out
      principal = await untilAborted(this.#host.identity.verify(token), this.#abort.signal)
      if (this.#principal && principal.subject !== this.#principal.subject)
        throw new PortcullisError('AUTH_FAILED', 'a session cannot change its subject', { reason: 'subject-change' })
      // the scope is expanded once per session, here: a token without the claims it needs is
      // refused like a bad token (fail closed), and a re-authentication may not move the session
      // to another scope (the codec has already applied this one upstream)
      if (this.target.scope) {
        const scope = expandScope(this.target.scope, principal)
        if (this.#scope && scope.summary !== this.#scope.summary)
          throw new PortcullisError('AUTH_FAILED', 'a session cannot change its scope (the new token names another tenant)', { reason: 'scope-change' })
        scopeOf = scope
      }
    } catch (err) {
      const e =
        err instanceof PortcullisError ? err : new PortcullisError('AUTH_FAILED', 'token rejected', { reason: 'invalid' })
      this.#write({ class: 'session', error: `authentication failed: ${e.message}` })
      throw e
    }
    // The verification may outlast the client (a slow JWKS, a client that hangs up mid-handshake) or
    // a kill. close() has already run and sealed what there was: a recorder opened now would never be
    // closed (an unsealed recording and a file descriptor for the life of the process). The session
    // stays without a principal, and nothing is opened.
    if (this.closed || this.#abort.signal.aborted) {
      this.#write({ class: 'session', error: 'authentication completed after the session ended; refused' })
      const reason = this.#abort.signal.reason
      throw reason instanceof PortcullisError ? reason : new PortcullisError('SESSION_CLOSED', 'session closed')
    }
    const first = this.#principal === undefined
    this.#principal = principal
    this.#scope = scopeOf
    this.#masks = undefined
    if (first) {
      const { config } = this.#host.generation()
      try {
        const sign = this.#host.recordingSign()
        this.#recorder = openRecorder({
          dir: config.recording.dir,
          sessionId: this.id,
          target: this.target.name,
          protocol: this.target.protocol,
          principal,
          onFailure: config.recording.onFailure,
          ...(sign ? { sign } : {}),
        })
        this.#host.uploader?.opened(this.#recorder.path)
      } catch (err) {
        if (config.recording.onFailure === 'block') {
          this.#write({ class: 'session', error: `recording unavailable: ${(err as Error).message}` })
          this.#principal = undefined
          throw new PortcullisError('RECORDING_FAILED', 'recording unavailable; session refused')
        }
        this.#host.audit.log('recording unavailable, continuing (onFailure: allow)', { session: this.id })
      }
      // the recording's header is its session-start record (principal, target, time); add where from
      this.record('event', this.#scope ? { event: 'authenticated', remote: this.remote, scope: this.#scope.summary } : { event: 'authenticated', remote: this.remote })
      this.#host.authenticated(this)
      this.onAuthenticated?.()
      this.onAuthenticated = undefined
    } else {
      this.record('event', { event: 're-authenticated', expiresAt: principal.expiresAt })
    }
    this.#write({ class: 'session' })
    return principal
  }

  assertAlive(): void {
    if (this.#abort.signal.aborted) {
      const reason = this.#abort.signal.reason
      throw reason instanceof PortcullisError ? reason : new PortcullisError('SESSION_CLOSED', 'session closed')
    }
    if (this.closed) throw new PortcullisError('SESSION_CLOSED', 'session closed')
    const p = this.#principal
    if (!p) return
    if (p.expiresAt !== undefined && this.#host.now() >= p.expiresAt)
      throw new PortcullisError('TOKEN_EXPIRED', 'token expired; authenticate again with a fresh token')
    if (this.#host.identity.revocations.isRevoked(p)) {
      const err = new PortcullisError('REVOKED', 'access revoked')
      this.abort(err)
      throw err
    }
  }

  get masks(): MaskPlan {
    const p = this.#principal
    if (!p) return emptyMaskPlan()
    const { n, config } = this.#host.generation()
    if (this.#masks?.generation !== n) {
      const plan = compileMasks(
        config.masking,
        { target: this.target.name, subject: p.subject, groups: p.groups },
        this.#host.hashKey(),
      )
      this.#masks = { generation: n, plan }
    }
    return this.#masks.plan
  }

  /**
   * The decision when it needs no wait (allow, block, or approve with a window already granted),
   * recorded and counted like decide()'s; undefined when an approval must be asked for. Codecs call
   * it first so that the common case costs no promise and holds nothing back from the same batch.
   */
  decideNow(op: Operation, opts?: Pick<DecideOptions, 'estimator'>): Decision | undefined {
    const principal = this.#principal
    if (!principal) throw new PortcullisError('AUTH_FAILED', 'not authenticated', { reason: 'missing' })
    this.assertAlive()
    const { config } = this.#host.generation()
    this.#assertRecording(config)
    // nothing runs that the audit log cannot hold (its file sink says when it cannot be written)
    const auditDown = this.#host.audit.failure()
    if (auditDown) throw new PortcullisError('AUDIT_FAILED', 'audit log unavailable; operations are refused until it can be written again')
    const started = this.#host.now()
    this.lastActivity = started
    const masks = this.masks
    // an estimate the rules name is unknown until decide() has run it
    const est = opts?.estimator
    const unknown = est && rulesName(config.rules, est.facts) ? est.facts : undefined
    const pd = policyDecide(config.rules, principal, this.target.name, op, unknown)
    if (pd.unknown) return undefined
    if (pd.action !== 'approve') return this.#decided(op, { action: pd.action, rule: pd.rule, reason: pd.reason, masks }, config, started)
    const grant = this.#host.approvals.findGrant(principal.subject, this.target.name, op.fingerprint)
    return grant ? this.#decided(op, byWindow(pd.rule, grant.approvalId, masks), config, started) : undefined
  }

  wouldDecide(op: Operation): PolicyDecision {
    const principal = this.#principal
    if (!principal) throw new PortcullisError('AUTH_FAILED', 'not authenticated', { reason: 'missing' })
    // no assertAlive, no lastActivity, no record, no metric: nothing happened yet
    return policyDecide(this.#host.generation().config.rules, principal, this.target.name, op)
  }

  async decide(op: Operation, opts: DecideOptions = {}): Promise<Decision> {
    const now = this.decideNow(op, opts)
    if (now) return now
    // the decision waits (an estimate, an approval): the request is in the recording meanwhile
    this.writeRequest()
    // decideNow has checked the principal, the session and the recording: what the rules say, again
    const principal = this.#principal!
    const { config } = this.#host.generation()
    const started = this.#host.now()
    const masks = this.masks
    const est = opts.estimator
    let pd = policyDecide(config.rules, principal, this.target.name, op, est && rulesName(config.rules, est.facts) ? est.facts : undefined)
    const approvals = this.#host.approvals
    // the blast radius: when a rule needs it, or for the approver of a held operation
    let estimate: BlastRadius | null | undefined
    if (est && (pd.unknown || pd.action === 'approve')) {
      const estSignal = opts.signal ? AbortSignal.any([opts.signal, this.signal]) : this.signal
      estimate = await runEstimate(est, config.approvals.estimateTimeoutMs ?? DEFAULT_ESTIMATE_TIMEOUT_MS, estSignal)
      this.assertAlive()
      this.record('event', { event: 'estimate', estimate })
      if (estimate) op = withEstimate(op, estimate)
      const still = unknownFacts(est, estimate)
      pd = policyDecide(config.rules, principal, this.target.name, op, still.length > 0 ? still : undefined)
      if (pd.action !== 'approve') return this.#decided(op, { action: pd.action, rule: pd.rule, reason: pd.reason, masks }, config, started)
      const known = approvals.findGrant(principal.subject, this.target.name, op.fingerprint)
      if (known) return this.#decided(op, byWindow(pd.rule, known.approvalId, masks), config, started)
    }
    // a window granted on another instance a moment ago may not have reached this one's mirror
    const grant = await approvals.fetchGrant(principal.subject, this.target.name, op.fingerprint)
    if (grant) {
      this.assertAlive()
      return this.#decided(op, byWindow(pd.rule, grant.approvalId, masks), config, started)
    }
    const version = policyVersion(config.rules)
    // what the request binds to: the exact statement and its parameters. A codec that gives none
    // knows only the normalized text, which many statements share: its request binds to a hash no
    // other statement has, so a retry in defer mode asks again rather than ride on this approval
    const sent = opts.sent?.() ?? { text: op.statement, hash: statementHash(op.statement, [randomBytes(16)]) }
    // defer mode: this exact statement by this subject asked before. Approved: it runs, once.
    // Still pending: the client is told the same request id again, no second request is made.
    const earlier = await approvals.findDeferred(principal.subject, this.target.name, sent.hash)
    if (earlier && earlier.rule === pd.rule) {
      // approved under rules that still ask for no more approvers than it had
      if (earlier.status === 'approved' && (earlier.approvals?.length ?? 1) >= (pd.minApprovals ?? 1)) {
        const released = await approvals.release(earlier.id)
        if (released) {
          this.assertAlive()
          this.#approvalOutcome(released, 'released')
          return this.#decided(op, { action: 'allow', rule: pd.rule, reason: `approved by ${votersOf(released)}; released once`, masks, approvalId: released.id }, config, started)
        }
      } else if (opts.defer) return this.#decided(op, deferred(pd.rule, earlier, masks), config, started)
    }
    const hold = {
      principal,
      target: this.target.name,
      protocol: this.target.protocol,
      op,
      rule: pd.rule!,
      approvers: pd.approvers ?? [],
      timeoutMs: pd.timeoutMs ?? config.approvals.timeoutMs,
      ...(pd.window !== undefined ? { window: pd.window } : {}),
      sent,
      policyVersion: version,
      ruleReason: pd.reason,
      minApprovals: pd.minApprovals ?? 1,
      recent: this.#recent.list(),
      ...(estimate !== undefined ? { estimate } : opts.estimate !== undefined ? { estimate: opts.estimate } : {}),
    }
    if (opts.defer) {
      // nobody waits: the request outlives this session (the client may come back on another)
      let stored: (r: ApprovalRequest) => void = () => {}
      const pending = new Promise<ApprovalRequest>(resolve => (stored = resolve))
      const outcome = approvals.hold({
        ...hold,
        mode: 'defer',
        onPending: r => {
          stored(r)
          opts.onPending?.(r)
        },
      })
      const first = await Promise.race([pending, outcome])
      if ('id' in first) {
        outcome.then(
          o => {
            if (o.status !== 'unavailable') this.#approvalOutcome(o.request, o.status)
          },
          () => {},
        )
        return this.#decided(op, deferred(pd.rule, first, masks), config, started)
      }
      return this.#decided(op, outcomeDecision(first, pd.rule, masks), config, started)
    }
    let decision: Decision
    const signal = opts.signal ? AbortSignal.any([opts.signal, this.signal]) : this.signal
    try {
      const outcome = await approvals.hold({ ...hold, mode: 'wait', signal, ...(opts.onPending ? { onPending: opts.onPending } : {}) })
      if (outcome.status !== 'unavailable') this.#approvalOutcome(outcome.request, outcome.status)
      decision = outcomeDecision(outcome, pd.rule, masks)
    } catch (err) {
      this.record('decision', { action: 'block', rule: pd.rule, reason: 'approval withdrawn', statement: op.statement, class: op.class })
      this.#host.metrics.operation(op.class, 'withdrawn')
      throw err
    }
    // the wait may have outlived the token or the session
    this.assertAlive()
    return this.#decided(op, decision, config, started)
  }

  /** the last statements decided, oldest first (the live-session registry and the web console show them) */
  get recent(): string[] {
    return this.#recent.live()
  }

  /** who approved, when and why: into the recording and an audit line */
  #approvalOutcome(r: ApprovalRequest, outcome: string) {
    const approvals = (r.approvals ?? []).map(v => ({ by: v.by, at: new Date(v.at).toISOString(), ...(v.reason ? { reason: v.reason } : {}) }))
    const fields = {
      approvalId: r.id,
      outcome,
      ...(r.decidedBy ? { decidedBy: r.decidedBy } : {}),
      ...(r.reason ? { reason: r.reason } : {}),
      approvals,
      minApprovals: r.minApprovals ?? 1,
      ...(r.statementHash ? { statementHash: r.statementHash } : {}),
      ...(r.policyVersion ? { policyVersion: r.policyVersion } : {}),
    }
    this.record('event', { event: 'approval', ...fields })
    this.#host.audit.log('approval outcome', { session: this.id, target: this.target.name, subject: r.principal.subject, ...fields })
  }

  #decided(op: Operation, decision: Decision, config: Config, started: number): Decision {
    this.#recent.add(op, decision, started)
    this.#held.decided(op, decision)
    this.#assertRecording(config)
    this.#host.metrics.operation(op.class, decision.action)
    if (decision.action === 'block') this.#host.metrics.duration((this.#host.now() - started) / 1000)
    return decision
  }

  estimates(facts: readonly string[], cls?: OperationClass): boolean {
    const { rules } = this.#host.generation().config
    return rulesName(rules, facts) || (cls !== undefined && rulesHold(rules, cls))
  }

  secret(ref: SecretRef): Promise<string> {
    return this.#host.secrets.get(ref)
  }

  /**
   * From now until releaseDecisions(), the decisions taken are recorded together: one 'decision'
   * record per round trip (a Redis pipeline read in one chunk), `{ decisions: [...] }` when there
   * are several, instead of one record each (held-records.ts).
   */
  holdDecisions(): void {
    this.#held.holdDecisions()
  }

  releaseDecisions(): void {
    this.#held.releaseDecisions()
  }

  /**
   * The request the next decision answers: recorded in that decision's record (`request`, FORMAT.md),
   * one record per round trip instead of a 'request' and a 'decision' (held-records.ts).
   */
  holdRequest(payload: Record<string, unknown>): void {
    this.#held.holdRequest(payload)
  }

  /** the held request (holdRequest), if any, as a 'request' record now */
  writeRequest(): void {
    this.#held.writeRequest()
  }

  readonly #held = new HeldRecords(
    (type, payload) => this.#recordNow(type, payload),
    () => this.#scope?.summary,
  )

  record(type: RecordType, payload: Record<string, unknown>): void {
    this.#held.writeAll()
    this.#recordNow(type, payload)
  }

  #recordNow(type: RecordType, payload: Record<string, unknown>): void {
    const r = this.#recorder
    if (!r) return
    try {
      r.record(type, payload)
    } catch {
      // the recorder reports its own failure through `failed`; decide() acts on it
    }
  }

  audit(event: Partial<AuditEvent>): void {
    // audit.reads: summary: an allowed read that went through is counted, not written
    if (event.class === 'read' && event.decision === 'allow' && event.error === undefined && this.#host.generation().config.audit.reads === 'summary') {
      this.#countRead(event)
      if (event.bytes !== undefined) this.#host.metrics.bytes('out', event.bytes)
      if (event.durationMs !== undefined) this.#host.metrics.duration(event.durationMs / 1000)
      return
    }
    this.#write(event)
    this.#counted(event)
  }

  /**
   * audit() of `{ class, resources, fingerprint, statement }` of `op` plus `rest`, the same line,
   * with the operation's fields serialized once per Operation object (audit.ts operationJson)
   */
  auditOperation(op: Operation, rest: OperationOutcome): void {
    if (op.class === 'read' && rest.decision === 'allow' && rest.error === undefined && this.#host.generation().config.audit.reads === 'summary') {
      this.audit({ class: op.class, resources: op.resources, fingerprint: op.fingerprint, statement: op.statement, ...rest })
      return
    }
    // the line text field by field (audit.ts writeOutcome): what an operation's line costs per command
    this.#host.audit.writeOutcome(this.#head(), isoTime(this.#host.now()), operationText(op), rest)
    this.#counted(rest)
  }

  /** an operation's line was written: the session's byte count (core.ts session info) and the metrics, whichever path wrote it */
  #counted(event: OperationOutcome): void {
    if (event.bytes !== undefined) {
      this.bytesOut += event.bytes
      this.#host.metrics.bytes('out', event.bytes)
    }
    if (event.durationMs !== undefined) this.#host.metrics.duration(event.durationMs / 1000)
  }

  /** audit.reads: summary — the reads counted since the last summary line */
  #reads: ReadSummary | undefined

  #countRead(event: Partial<AuditEvent>): void {
    const line = (this.#reads ??= new ReadSummary()).count(event, this.#host.now())
    if (line) this.#write(line)
  }

  close(reason = 'closed'): Promise<void> {
    if (!this.#closing) {
      const reads = this.#reads?.take()
      if (reads) this.#write(reads)
      this.#closing = (async () => {
        this.abort(new PortcullisError('SESSION_CLOSED', `session closed: ${reason}`))
        this.record('session-end', { reason })
        try {
          await this.#recorder?.close(reason)
        } catch (err) {
          this.#host.audit.log('recording could not be sealed', { session: this.id, error: (err as Error).message })
        } finally {
          // sealed or not (a recorder whose disk failed leaves what it wrote): the file is evidence
          if (this.#recorder) this.#host.uploader?.sealed(this.#recorder.path)
          this.#host.closed(this)
        }
      })()
    }
    return this.#closing
  }

  #assertRecording(config: Config) {
    if (config.recording.onFailure !== 'block') return
    if (this.#recorder?.failed)
      throw new PortcullisError('RECORDING_FAILED', 'recording failed; operations are refused (recording.onFailure: block)')
    // recordings that cannot leave the machine fill its disk: past the spool bound, no operation
    // adds to it until uploads catch up
    if (this.#host.uploader?.full)
      throw new PortcullisError('RECORDING_FAILED', 'recording uploads are behind (spool full); operations are refused (recording.onFailure: block)')
  }

  #write(event: Partial<AuditEvent>, pre?: string) {
    this.#host.audit.writeSession(this.#head(), isoTime(this.#host.now()), event, pre)
  }

  #head(): AuditHead {
    const p = this.#principal
    let head = this.#auditHead
    if (head === undefined || p !== this.#auditHeadOf) {
      this.#auditHeadOf = p
      head = this.#auditHead = auditHead({
        session: this.id,
        ...(p ? { principal: { sub: p.subject, groups: p.groups } } : {}),
        target: this.target.name,
        protocol: this.target.protocol,
        ...(this.#scope ? { scope: this.#scope.summary } : {}),
      })
    }
    return head
  }
  // the session's own audit fields, serialized once per principal rather than once per line
  #auditHeadOf: Principal | undefined
  #auditHead: AuditHead | undefined
}
