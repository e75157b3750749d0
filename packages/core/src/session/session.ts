// One client connection as the core sees it: who is calling, what they may do, and the record of it.
import { randomBytes, type KeyObject } from 'node:crypto'
import { PortcullisError } from '../errors.ts'
import type {
  AuditEvent,
  Decision,
  DecideOptions,
  MaskPlan,
  Operation,
  Principal,
  RecordType,
  SecretRef,
  Session,
  TargetConfig,
} from '../types.ts'
import type { Config } from '../config/types.ts'
import type { Approvals } from '../approvals/approvals.ts'
import { auditHead, type AuditHead, type AuditLog } from '../audit/audit.ts'
import type { Identity } from '../identity/verify.ts'
import type { Metrics } from '../metrics/metrics.ts'
import type { SecretStore } from '../secrets/store.ts'
import { decide as policyDecide } from '../policy/decide.ts'
import type { Uploader } from '../recording/upload/index.ts'
import { compileMasks, emptyMaskPlan, openRecorder, type SessionRecorder } from './engines.ts'
import { expandScope, type SessionScope } from '../identity/scope.ts'

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

/** `work`, or the signal's reason as soon as it aborts (the work itself runs on, holding nothing) */
function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    work.then(
      v => {
        signal.removeEventListener('abort', onAbort)
        resolve(v)
      },
      e => {
        signal.removeEventListener('abort', onAbort)
        reject(e)
      },
    )
  })
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
  readonly #host: SessionHost
  readonly #abort = new AbortController()
  #principal: Principal | undefined
  #scope: SessionScope | undefined
  #recorder: SessionRecorder | undefined
  #masks: { generation: number; plan: MaskPlan } | undefined
  #closing: Promise<void> | undefined

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
  decideNow(op: Operation): Decision | undefined {
    const principal = this.#principal
    if (!principal) throw new PortcullisError('AUTH_FAILED', 'not authenticated', { reason: 'missing' })
    this.assertAlive()
    const { config } = this.#host.generation()
    this.#assertRecording(config)
    const started = this.#host.now()
    this.lastActivity = started
    const masks = this.masks
    const pd = policyDecide(config.rules, principal, this.target.name, op)
    if (pd.action !== 'approve') return this.#decided(op, { action: pd.action, rule: pd.rule, reason: pd.reason, masks }, config, started)
    const grant = this.#host.approvals.findGrant(principal.subject, this.target.name, op.fingerprint)
    if (!grant) return undefined
    const decision: Decision = { action: 'allow', rule: pd.rule, reason: `approved by window of ${grant.approvalId}`, masks, approvalId: grant.approvalId }
    return this.#decided(op, decision, config, started)
  }

  async decide(op: Operation, opts: DecideOptions = {}): Promise<Decision> {
    const now = this.decideNow(op)
    if (now) return now
    // decideNow has checked the principal, the session and the recording: what the rules say, again
    const principal = this.#principal!
    const { config } = this.#host.generation()
    const started = this.#host.now()
    const masks = this.masks
    const pd = policyDecide(config.rules, principal, this.target.name, op)
    const approvals = this.#host.approvals
    // a window granted on another instance a moment ago may not have reached this one's mirror
    const grant = await approvals.fetchGrant(principal.subject, this.target.name, op.fingerprint)
    if (grant) {
      this.assertAlive()
      return this.#decided(op, { action: 'allow', rule: pd.rule, reason: `approved by window of ${grant.approvalId}`, masks, approvalId: grant.approvalId }, config, started)
    }
    let decision: Decision
    const signal = opts.signal ? AbortSignal.any([opts.signal, this.signal]) : this.signal
    try {
      const outcome = await approvals.hold({
        principal,
        target: this.target.name,
        protocol: this.target.protocol,
        op,
        rule: pd.rule!,
        approvers: pd.approvers ?? [],
        timeoutMs: pd.timeoutMs ?? config.approvals.timeoutMs,
        ...(pd.window !== undefined ? { window: pd.window } : {}),
        signal,
        ...(opts.onPending ? { onPending: opts.onPending } : {}),
      })
      if (outcome.status === 'unavailable')
        // a block like any other, so every codec answers it in its own protocol and keeps the session
        decision = { action: 'block', rule: pd.rule, reason: outcome.reason, masks }
      else if (outcome.status === 'approved')
        decision = { action: 'allow', rule: pd.rule, reason: `approved by ${outcome.request.decidedBy}`, masks, approvalId: outcome.request.id }
      else if (outcome.status === 'denied')
        decision = {
          action: 'block',
          rule: pd.rule,
          reason: `denied by ${outcome.request.decidedBy}${outcome.reason ? `: ${outcome.reason}` : ''}`,
          masks,
          approvalId: outcome.request.id,
        }
      else decision = { action: 'block', rule: pd.rule, reason: `approval ${outcome.request.id} timed out`, masks, approvalId: outcome.request.id }
    } catch (err) {
      this.record('decision', { action: 'block', rule: pd.rule, reason: 'approval withdrawn', statement: op.statement, class: op.class })
      this.#host.metrics.operation(op.class, 'withdrawn')
      throw err
    }
    // the wait may have outlived the token or the session
    this.assertAlive()
    return this.#decided(op, decision, config, started)
  }

  #decided(op: Operation, decision: Decision, config: Config, started: number): Decision {
    // one object literal per shape, not a spread per operation
    const scope = this.#scope
    if (scope)
      // the scope the operation runs under, beside its decision (replay and audit show it)
      this.record('decision', {
        action: decision.action, rule: decision.rule, reason: decision.reason, statement: op.statement, class: op.class, fingerprint: op.fingerprint, resources: op.resources,
        scope: scope.summary, ...(decision.approvalId ? { approvalId: decision.approvalId } : {}),
      })
    else
    this.record(
      'decision',
      decision.approvalId
        ? { action: decision.action, rule: decision.rule, reason: decision.reason, approvalId: decision.approvalId, statement: op.statement, class: op.class, fingerprint: op.fingerprint, resources: op.resources }
        : { action: decision.action, rule: decision.rule, reason: decision.reason, statement: op.statement, class: op.class, fingerprint: op.fingerprint, resources: op.resources },
    )
    this.#assertRecording(config)
    this.#host.metrics.operation(op.class, decision.action)
    if (decision.action === 'block') this.#host.metrics.duration((this.#host.now() - started) / 1000)
    return decision
  }

  secret(ref: SecretRef): Promise<string> {
    return this.#host.secrets.get(ref)
  }

  record(type: RecordType, payload: Record<string, unknown>): void {
    const r = this.#recorder
    if (!r) return
    try {
      r.record(type, payload)
    } catch {
      // the recorder reports its own failure through `failed`; decide() acts on it
    }
  }

  audit(event: Partial<AuditEvent>): void {
    this.#write(event)
    if (event.bytes !== undefined) this.#host.metrics.bytes('out', event.bytes)
    if (event.durationMs !== undefined) this.#host.metrics.duration(event.durationMs / 1000)
  }

  close(reason = 'closed'): Promise<void> {
    if (!this.#closing) {
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

  #write(event: Partial<AuditEvent>) {
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
    this.#host.audit.writeSession(head, isoTime(this.#host.now()), event)
  }
  // the session's own audit fields, serialized once per principal rather than once per line
  #auditHeadOf: Principal | undefined
  #auditHead: AuditHead | undefined
}
