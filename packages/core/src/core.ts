// Ties config, identity, policy, approvals, secrets, audit and metrics into one object the gateway
// holds. It has no sockets: codecs get Sessions from it.
import { createPrivateKey, randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import { PortcullisError } from './errors.ts'
import type { ApprovalRequest, Decision, Operation, Principal, Protocol, TargetConfig } from './types.ts'
import type { Config, RevocationEntry } from './config/types.ts'
import { createApprovals } from './approvals/approvals.ts'
import { MemoryControlStore } from './control/memory.ts'
import { isShared, type ControlHealth, type ControlStore, type SessionRecord } from './control/store.ts'
import { createAuditLog } from './audit/audit.ts'
import { createIdentity } from './identity/verify.ts'
import { Metrics } from './metrics/metrics.ts'
import { decide as policyDecide, type PolicyDecision } from './policy/decide.ts'
import { createSecretStore, type SecretStore } from './secrets/store.ts'
import { compileMasks } from './session/engines.ts'
import { createUploader, type Uploader } from './recording/upload/index.ts'
import { CoreSession, type RecordingSign, type SessionHost } from './session/session.ts'

/** One live session as the admin API lists it: the control store's record of it. */
export type SessionInfo = SessionRecord

export interface CoreApprovals {
  /** pending requests of every instance and recently decided ones (this process's mirror) */
  list(): ApprovalRequest[]
  get(id: string): ApprovalRequest | undefined
  /** from the control store itself, for a request this mirror has not heard of */
  fetch(id: string): Promise<ApprovalRequest | undefined>
  /** one decision wins across instances; what is already known to be wrong throws at once */
  approve(id: string, by: Principal, reason?: string): Promise<ApprovalRequest>
  deny(id: string, by: Principal, reason?: string): Promise<ApprovalRequest>
  /** every request change the control store tells this process of (Slack messages follow them) */
  subscribe(onRequest: (request: ApprovalRequest) => void): () => void
}

/** What the admin API does across every instance sharing the control store. */
export interface CoreControl {
  health(): ControlHealth
  /** every instance's live sessions (this one's from memory) */
  sessions(): Promise<SessionInfo[]>
  /** ends the session wherever it runs; false when no instance has it */
  kill(sessionId: string, reason?: string): Promise<boolean>
  /** ends a subject's sessions on every instance; the count is what the registry knew of */
  killSubject(subject: string, reason?: string): Promise<number>
  /** takes effect here at once, and on every instance once the store has it */
  revoke(entry: RevocationEntry): Promise<void>
}

export interface Core {
  /** current generation */
  readonly config: Config
  /** this process's id in the control store */
  readonly instance: string
  readonly control: CoreControl
  /** why the audit log cannot be written, while it cannot: every operation is refused meanwhile */
  auditFailure(): Error | undefined
  /** everything audited so far handed to its destination (a file: on disk) */
  flushAudit(): Promise<void>
  openSession(target: TargetConfig, remote: string): CoreSession
  /** this instance's live sessions */
  sessions(): SessionInfo[]
  kill(sessionId: string, reason?: string): boolean
  killSubject(subject: string, reason?: string): number
  revoke(entry: RevocationEntry): void
  revocations(): RevocationEntry[]
  authenticate(token: string): Promise<Principal>
  readonly approvals: CoreApprovals
  /** Session.wouldDecide for a principal without a session: the rules' answer, nothing recorded, counted or asked */
  wouldDecide(principal: Principal, targetName: string, op: Operation): PolicyDecision
  readonly metrics: { render(): string }
  reload(config: Config): void
  readonly secrets: SecretStore
  /** recording.upload's uploader (absent without it) */
  readonly uploader: Uploader | undefined
  /** ends sessions, then gives pending uploads up to `uploadWaitMs` (default 5 s) before leaving them in the spool */
  close(opts?: { uploadWaitMs?: number }): Promise<void>
}

export interface CoreOptions {
  auditStream?: NodeJS.WritableStream
  now?: () => number
  /**
   * where approvals, revocations and the session registry live (default: this process's memory);
   * a function gets the core's secrets (a store's password is a secret reference). Core closes it.
   */
  controlStore?: ControlStore | ((ctx: { secrets: SecretStore; log: (msg: string, fields?: Record<string, unknown>) => void }) => ControlStore)
  /** this process's id in the control store (default: host, pid and a random part) */
  instance?: string
  /** how often the session registry hears of last activity, ms (default 5000) */
  registryMs?: number
  /**
   * queue the recordings a previous run left in recording.dir for upload (default: yes, in the
   * background); true waits for the scan before createCore returns, false skips it (a cluster
   * worker other than the first: see cluster.ts)
   */
  resumeSpool?: boolean
}

export function instanceId(): string {
  return `${hostname().replace(/[^\w.-]+/g, '_').slice(0, 40)}-${process.pid}-${randomBytes(4).toString('hex')}`
}

async function keyFromSecret(secrets: SecretStore, ref: { secret: string } | undefined): Promise<Buffer | undefined> {
  if (!ref) return undefined
  return Buffer.from(await secrets.get(ref), 'utf8')
}

async function signingKeys(secrets: SecretStore, sign: Config['recording']['sign']): Promise<RecordingSign | undefined> {
  if (!sign) return undefined
  const out: RecordingSign = {}
  const hmacKey = await keyFromSecret(secrets, sign.hmacKey)
  if (hmacKey) out.hmacKey = hmacKey
  if (sign.ed25519Key) {
    const key = createPrivateKey(await secrets.get(sign.ed25519Key))
    if (key.asymmetricKeyType !== 'ed25519')
      throw new PortcullisError('CONFIG_INVALID', `recording.sign.ed25519Key: secret "${sign.ed25519Key.secret}" is not an Ed25519 private key`)
    out.ed25519PrivateKey = key
  }
  return out
}

/** how long close() lets pending recording uploads finish before leaving them in the spool */
export const DEFAULT_UPLOAD_WAIT_MS = 5_000

export async function createCore(initial: Config, opts: CoreOptions = {}): Promise<Core> {
  const now = opts.now ?? Date.now
  let generation = { n: 1, config: initial }
  const secrets = createSecretStore(initial.secrets)
  const identity = createIdentity(initial.identity, { secrets, now })
  const audit = createAuditLog({ destination: initial.audit.destination, ...(opts.auditStream ? { stream: opts.auditStream } : {}) })
  const metrics = new Metrics()
  const instance = opts.instance ?? instanceId()
  const given = opts.controlStore
  const store =
    typeof given === 'function' ? given({ secrets, log: (msg, fields) => audit.log(msg, fields) }) : (given ?? new MemoryControlStore({ now }))
  const approvals = createApprovals({
    now,
    store,
    instance,
    ...(initial.approvals.webhook ? { webhook: initial.approvals.webhook } : {}),
    log: msg => audit.log(msg),
    secret: ref => secrets.get(ref),
  })
  // Without a configured key, hashes are stable for this process only: equal values still match
  // within a session and across sessions, but not across restarts.
  let hashKey = (await keyFromSecret(secrets, initial.maskingKey)) ?? randomBytes(32)
  let recordingSign = await signingKeys(secrets, initial.recording.sign)
  const live = new Map<string, CoreSession>()
  // the uploader is made once: recording.upload changes take effect on restart (see reload)
  const uploader = initial.recording.upload
    ? createUploader({ config: initial.recording.upload, secret: ref => secrets.get(ref), log: (msg, fields) => audit.log(msg, fields), now })
    : undefined
  // leftovers of a previous run: sessions opened meanwhile register their files first (opened()).
  // Several workers share one recording dir: only one scans it, before the others start (a scan
  // would take another worker's open recording for a leftover), see resumeSpool.
  if (opts.resumeSpool !== false) {
    const scan = uploader?.resume(initial.recording.dir).catch(err => {
      audit.log('recording spool cannot be read', { dir: initial.recording.dir, error: (err as Error).message })
    })
    if (opts.resumeSpool === true) await scan
  }
  if (uploader) metrics.spool = () => ({ files: uploader.spoolFiles, bytes: uploader.spoolBytes, full: uploader.full })
  metrics.backlog = () => {
    let n = 0
    for (const s of live.values()) n += s.recorder?.backlog ?? 0
    return n
  }

  const host: SessionHost = {
    generation: () => generation,
    now,
    identity,
    secrets,
    approvals,
    audit,
    metrics,
    hashKey: () => hashKey,
    recordingSign: () => recordingSign,
    ...(uploader ? { uploader } : {}),
    revocationsKnown: () => revocationsKnown,
    control: store,
    authenticated(session) {
      if (shared) registry.put([session])
    },
    closed(session) {
      if (live.delete(session.id)) metrics.sessions = live.size
      if (shared && session.principal) registry.end(session.id)
    },
  }

  const info = (s: CoreSession): SessionInfo => {
    const i: SessionInfo = {
      id: s.id,
      instance,
      target: s.target.name,
      protocol: s.target.protocol,
      remote: s.remote,
      started: s.started,
      lastActivity: s.lastActivity,
    }
    if (s.recent.length > 0) i.recent = [...s.recent]
    if (s.bytesOut > 0) i.bytes = s.bytesOut
    if (s.principal) {
      i.subject = s.principal.subject
      i.groups = s.principal.groups
      if (s.principal.expiresAt !== undefined) i.expiresAt = s.principal.expiresAt
    }
    return i
  }

  // The session registry, for a store that other instances read. Writes go one at a time, in
  // order, and never hold a session up: a failed write is repeated by the next heartbeat.
  const shared = isShared(store)
  const registry = (() => {
    let chain: Promise<void> = Promise.resolve()
    const sent = new Map<string, number>()
    const write = (what: string, fn: () => Promise<void>) => {
      chain = chain.then(fn).catch(err => {
        if (store.health().ok) audit.log(`session registry: ${what} failed`, { error: (err as Error).message })
      })
    }
    return {
      put(sessions: CoreSession[]) {
        const records: SessionRecord[] = sessions.filter(s => s.principal && live.has(s.id)).map(s => info(s))
        if (records.length === 0) return
        write('register', async () => {
          await store.putSessions(records)
          // a session that ended while this write was on its way is not remembered again
          for (const r of records) if (live.has(r.id)) sent.set(r.id, r.lastActivity)
        })
      },
      end(id: string) {
        sent.delete(id)
        write('end', () => store.endSession(id))
      },
      /** heartbeat: the sessions whose activity moved, or every one after the store was away */
      refresh(all = false) {
        if (!store.health().ok) return
        this.put([...live.values()].filter(s => all || sent.get(s.id) !== s.lastActivity))
      },
      flushed: () => chain,
    }
  })()
  const heartbeat = shared ? setInterval(() => registry.refresh(), opts.registryMs ?? 5000) : undefined
  heartbeat?.unref()

  function abortRevoked() {
    for (const s of live.values()) {
      const p = s.principal
      if (p && identity.revocations.isRevoked(p)) s.abort(new PortcullisError('REVOKED', 'access revoked'))
    }
  }

  function killLocal(id: string, reason: string | undefined): boolean {
    const s = live.get(id)
    if (!s) return false
    s.abort(new PortcullisError('SESSION_CLOSED', reason ?? 'session ended by an administrator'))
    return true
  }

  function killSubjectLocal(subject: string, reason: string | undefined): number {
    let n = 0
    for (const s of live.values()) {
      if (s.principal?.subject !== subject) continue
      s.abort(new PortcullisError('SESSION_CLOSED', reason ?? 'session ended by an administrator'))
      n++
    }
    return n
  }

  function revokeLocal(entry: RevocationEntry) {
    if (!entry.subject && !entry.jti) throw new PortcullisError('CONFIG_INVALID', 'a revocation names a subject or a jti')
    identity.revocations.add(entry)
    abortRevoked()
  }

  // what other instances did reaches this one's memory here (this one's own changes come back too)
  store.subscribe(c => {
    if (c.kind === 'revocation') revokeLocal(c.entry)
    else if (c.kind === 'kill') {
      if ('sessionId' in c.kill) killLocal(c.kill.sessionId, c.kill.reason)
      else killSubjectLocal(c.kill.subject, c.kill.reason)
    }
  })

  // a memory store holds nothing this process has not seen; a shared one must be read once first
  let revocationsKnown = !shared
  async function loadShared() {
    await approvals.load()
    for (const e of await store.revocations()) revokeLocal(e)
    revocationsKnown = true
  }
  store.onHealth(h => {
    if (!h.ok) {
      audit.log('control store unavailable: approval-requiring operations are refused until it is back', { store: h.kind, error: h.error })
      return
    }
    audit.log('control store available', { store: h.kind })
    // the store's change feed brings what was missed; this fills whatever it no longer holds
    loadShared().catch(err => audit.log('control store reload failed', { error: (err as Error).message }))
    registry.refresh(true)
  })
  await store.start({ id: instance, host: hostname(), pid: process.pid, started: now() })
  if (store.health().ok) await loadShared()
  else audit.log('control store unavailable at start; retrying in the background', { store: store.kind, error: store.health().error })

  const unavailable = () => new PortcullisError('CONTROL_STORE_UNAVAILABLE', 'control store unavailable')

  let closing: Promise<void> | undefined

  const core: Core = {
    get config() {
      return generation.config
    },
    instance,
    auditFailure: () => audit.failure(),
    flushAudit: () => audit.flush(),
    control: {
      health: () => store.health(),
      async sessions() {
        const mine = [...live.values()].map(info)
        if (!shared) return mine
        if (!store.health().ok) throw unavailable()
        const others = (await store.listSessions()).filter(r => r.instance !== instance)
        return [...mine, ...others]
      },
      async kill(id, reason) {
        if (killLocal(id, reason)) return true
        if (!shared) return false
        if (!store.health().ok) throw unavailable()
        const known = (await store.listSessions()).some(r => r.id === id)
        if (!known) return false
        await store.kill({ sessionId: id, reason: reason ?? 'session ended by an administrator' })
        return true
      },
      async killSubject(subject, reason) {
        const here = killSubjectLocal(subject, reason)
        if (!shared) return here
        if (!store.health().ok) throw unavailable()
        const there = (await store.listSessions()).filter(r => r.instance !== instance && r.subject === subject).length
        await store.kill({ subject, reason: reason ?? 'session ended by an administrator' })
        return here + there
      },
      async revoke(entry) {
        revokeLocal(entry)
        if (!store.health().ok) throw unavailable()
        await store.revoke(entry)
      },
    },
    secrets,
    metrics,
    uploader,
    approvals: {
      list: () => approvals.list(),
      get: id => approvals.get(id),
      fetch: async id => approvals.get(id) ?? (await store.getRequest(id)),
      approve: (id, by, reason) => approvals.approve(id, by, reason),
      deny: (id, by, reason) => approvals.deny(id, by, reason),
      subscribe: onRequest =>
        store.subscribe(c => {
          if (c.kind === 'request') onRequest({ ...c.request })
        }),
    },

    openSession(target, remote) {
      if (closing) throw new PortcullisError('SHUTDOWN', 'gateway is shutting down')
      const s = new CoreSession(host, target, remote)
      live.set(s.id, s)
      metrics.sessions = live.size
      return s
    },

    sessions: () => [...live.values()].map(info),

    kill: (id, reason) => killLocal(id, reason),

    killSubject: (subject, reason) => killSubjectLocal(subject, reason),

    revoke(entry) {
      revokeLocal(entry)
      store.revoke(entry).catch(err => audit.log('revocation not shared: the control store did not take it', { error: (err as Error).message }))
    },

    revocations: () => identity.revocations.list(),

    authenticate: token =>
      revocationsKnown
        ? identity.verify(token)
        : Promise.reject(new PortcullisError('AUTH_FAILED', 'the revocation list is not loaded yet (control store unavailable); try again shortly', { reason: 'revocations-unknown' })),

    wouldDecide(principal, targetName, op) {
      return policyDecide(generation.config.rules, principal, targetName, op)
    },

    reload(config) {
      const previous = generation.config
      // identity first: it is the one step that can refuse a config, before anything has changed
      identity.update(config.identity)
      secrets.update(config.secrets)
      approvals.setWebhook(config.approvals.webhook)
      generation = { n: generation.n + 1, config }
      abortRevoked()
      // a pending request binds to the policy it was made under: where the new rules decide the
      // statement differently, it is withdrawn with the reason (the client hears it at once)
      void approvals.reconsider(held => {
        const pd = policyDecide(config.rules, held.principal, held.target, held.op)
        const same =
          pd.action === 'approve' &&
          pd.rule === held.rule &&
          JSON.stringify(pd.approvers ?? []) === JSON.stringify(held.approvers) &&
          (pd.minApprovals ?? 1) === (held.minApprovals ?? 1)
        if (same) return undefined
        const now = pd.action === 'approve' ? `needs approval by rule ${pd.rule} (${(pd.approvers ?? []).join(', ')}, ${pd.minApprovals ?? 1} approver(s))` : `${pd.action === 'allow' ? 'allowed' : 'blocked'} by ${pd.rule ? `rule ${pd.rule}` : 'default deny'}`
        return `policy reloaded: the statement now ${now}; send it again`
      })
      if (JSON.stringify(previous.maskingKey) !== JSON.stringify(config.maskingKey)) {
        keyFromSecret(secrets, config.maskingKey).then(
          k => {
            hashKey = k ?? randomBytes(32)
          },
          err => audit.log('masking key unavailable after reload; keeping the previous key', { error: (err as Error).message }),
        )
      }
      if (JSON.stringify(previous.recording.sign) !== JSON.stringify(config.recording.sign)) {
        signingKeys(secrets, config.recording.sign).then(
          k => {
            recordingSign = k
          },
          err => audit.log('recording key unavailable after reload; keeping the previous key', { error: (err as Error).message }),
        )
      }
      if (previous.audit.destination !== config.audit.destination)
        audit.log('audit.destination changes take effect on restart')
      if (JSON.stringify(previous.recording.upload) !== JSON.stringify(config.recording.upload))
        audit.log('recording.upload changes take effect on restart')
    },

    close(opts = {}) {
      if (!closing) {
        closing = (async () => {
          if (heartbeat) clearInterval(heartbeat)
          approvals.close()
          await Promise.all([...live.values()].map(s => s.close('shutdown')))
          await registry.flushed()
          await store.close()
          await uploader?.close(opts.uploadWaitMs ?? DEFAULT_UPLOAD_WAIT_MS)
          secrets.close()
          await audit.close()
        })()
      }
      return closing
    },
  }
  return core
}
