// Ties config, identity, policy, approvals, secrets, audit and metrics into one object the gateway
// holds. It has no sockets: codecs get Sessions from it.
import { createPrivateKey, randomBytes } from 'node:crypto'
import { PortcullisError } from './errors.ts'
import type { ApprovalRequest, Decision, Operation, Principal, Protocol, TargetConfig } from './types.ts'
import type { Config, RevocationEntry } from './config/types.ts'
import { createApprovals } from './approvals/approvals.ts'
import type { ApprovalStore } from './approvals/store.ts'
import { createAuditLog } from './audit/audit.ts'
import { createIdentity } from './identity/verify.ts'
import { Metrics } from './metrics/metrics.ts'
import { decide as policyDecide } from './policy/decide.ts'
import { createSecretStore, type SecretStore } from './secrets/store.ts'
import { compileMasks } from './session/engines.ts'
import { createUploader, type Uploader } from './recording/upload/index.ts'
import { CoreSession, type RecordingSign, type SessionHost } from './session/session.ts'

export interface SessionInfo {
  id: string
  target: string
  protocol: Protocol
  remote: string
  subject?: string
  groups?: string[]
  /** ms since epoch, from the token */
  expiresAt?: number
  started: number
}

export interface CoreApprovals {
  list(): ApprovalRequest[]
  get(id: string): ApprovalRequest | undefined
  approve(id: string, by: Principal): ApprovalRequest
  deny(id: string, by: Principal, reason?: string): ApprovalRequest
}

export interface Core {
  /** current generation */
  readonly config: Config
  openSession(target: TargetConfig, remote: string): CoreSession
  sessions(): SessionInfo[]
  kill(sessionId: string, reason?: string): boolean
  killSubject(subject: string, reason?: string): number
  revoke(entry: RevocationEntry): void
  revocations(): RevocationEntry[]
  authenticate(token: string): Promise<Principal>
  readonly approvals: CoreApprovals
  decide(principal: Principal, targetName: string, op: Operation): Decision
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
  approvalStore?: ApprovalStore
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
  const approvals = createApprovals({
    now,
    ...(opts.approvalStore ? { store: opts.approvalStore } : {}),
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
  // leftovers of a previous run: sessions opened meanwhile register their files first (opened())
  uploader?.resume(initial.recording.dir).catch(err => audit.log('recording spool cannot be read', { dir: initial.recording.dir, error: (err as Error).message }))
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
    closed(session) {
      if (live.delete(session.id)) metrics.sessions = live.size
    },
  }

  function abortRevoked() {
    for (const s of live.values()) {
      const p = s.principal
      if (p && identity.revocations.isRevoked(p)) s.abort(new PortcullisError('REVOKED', 'access revoked'))
    }
  }

  let closing: Promise<void> | undefined

  const core: Core = {
    get config() {
      return generation.config
    },
    secrets,
    metrics,
    uploader,
    approvals: {
      list: () => approvals.list(),
      get: id => approvals.get(id),
      approve: (id, by) => approvals.approve(id, by),
      deny: (id, by, reason) => approvals.deny(id, by, reason),
    },

    openSession(target, remote) {
      if (closing) throw new PortcullisError('SHUTDOWN', 'gateway is shutting down')
      const s = new CoreSession(host, target, remote)
      live.set(s.id, s)
      metrics.sessions = live.size
      return s
    },

    sessions() {
      return [...live.values()].map(s => {
        const info: SessionInfo = {
          id: s.id,
          target: s.target.name,
          protocol: s.target.protocol,
          remote: s.remote,
          started: s.started,
        }
        if (s.principal) {
          info.subject = s.principal.subject
          info.groups = s.principal.groups
          if (s.principal.expiresAt !== undefined) info.expiresAt = s.principal.expiresAt
        }
        return info
      })
    },

    kill(id, reason) {
      const s = live.get(id)
      if (!s) return false
      s.abort(new PortcullisError('SESSION_CLOSED', reason ?? 'session ended by an administrator'))
      return true
    },

    killSubject(subject, reason) {
      let n = 0
      for (const s of live.values()) {
        if (s.principal?.subject !== subject) continue
        s.abort(new PortcullisError('SESSION_CLOSED', reason ?? 'session ended by an administrator'))
        n++
      }
      return n
    },

    revoke(entry) {
      if (!entry.subject && !entry.jti) throw new PortcullisError('CONFIG_INVALID', 'a revocation names a subject or a jti')
      identity.revocations.add(entry)
      abortRevoked()
    },

    revocations: () => identity.revocations.list(),

    authenticate: token => identity.verify(token),

    decide(principal, targetName, op) {
      const { config } = generation
      const pd = policyDecide(config.rules, principal, targetName, op)
      const masks = compileMasks(config.masking, { target: targetName, subject: principal.subject, groups: principal.groups }, hashKey)
      return { action: pd.action, rule: pd.rule, reason: pd.reason, masks }
    },

    reload(config) {
      const previous = generation.config
      // identity first: it is the one step that can refuse a config, before anything has changed
      identity.update(config.identity)
      secrets.update(config.secrets)
      approvals.setWebhook(config.approvals.webhook)
      generation = { n: generation.n + 1, config }
      abortRevoked()
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
          approvals.close()
          await Promise.all([...live.values()].map(s => s.close('shutdown')))
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
