// The parsed, normalized configuration. Durations are milliseconds here; YAML may say `30s`.
import type { Action, OperationClass, SecretRef, TargetConfig, UpstreamTls } from '../types.ts'
import type { MaskingRuleConfig } from '../masking/plan.ts'

export interface IssuerConfig {
  issuer: string
  audience: string
  /** JWKS URL (fetched, cached, refreshed on unknown kid) */
  jwks?: string
  /** ms to wait for the JWKS URL to answer (default 5 s) */
  jwksTimeout?: number
  /** local JWKS file (re-read when it changes) */
  jwksFile?: string
  /** accepted JWS algorithms; HS* only when `secret` is set */
  algorithms: string[]
  /** dotted path of the groups claim */
  groupsClaim: string
  /** ms */
  clockSkew: number
  /** refuse tokens without `exp` (absent: true): a token that never expires is good forever once leaked */
  requireExp?: boolean
  /** shared secret for HS256/384/512 issuers */
  secret?: SecretRef
}

/** The web console signs people in with this OpenID Connect issuer (authorization code + PKCE). */
export interface ConsoleConfig {
  issuer: string
  clientId: string
  /** absent: a public client (PKCE alone) */
  clientSecret?: SecretRef
  /** the console's public base URL (the redirect URI is `${url}/console/callback`); default: the admin listener's URL */
  url?: string
  /** dotted path of the groups claim in the ID token (default: the matching identity issuer's, else `groups`) */
  groupsClaim?: string
  /** ms: the longest a console session lasts (it ends sooner when the ID token expires) */
  sessionTtl?: number
}

export interface RevocationEntry {
  subject?: string
  jti?: string
}

export interface IdentityConfig {
  issuers: IssuerConfig[]
  revocations: RevocationEntry[]
}

export type SecretSource =
  | { env: string }
  | { file: string }
  | { exec: string[]; ttl: number }

export type FactCondition =
  | { gt?: number; gte?: number; lt?: number; lte?: number; eq?: number | string | boolean }
  | string
  | number
  | boolean

export interface RuleWhen {
  groups?: string[]
  subjects?: string[]
  targets?: string[]
  class?: OperationClass[]
  resources?: string[]
  /** re2 pattern over the normalized statement */
  statement?: string
  operations?: string[]
  facts?: Record<string, FactCondition>
}

export interface RuleConfig {
  id: string
  when: RuleWhen
  action: Action
  approvers?: string[]
  /** ms: an approval grants the same fingerprint to the same subject for this long */
  window?: number
  /** ms: how long an approval request waits */
  timeout?: number
  /** distinct approvers (from `approvers` groups, never the requester) needed to approve; default 1 */
  minApprovals?: number
  reason?: string
}

/** A masking rule as written in the config: the masking engine's own rule type. */
export type MaskingRuleEntry = MaskingRuleConfig

export interface RecordingConfig {
  dir: string
  onFailure: 'block' | 'allow'
  /** seal signatures: HMAC-SHA256 key, and/or an Ed25519 private key (PEM) */
  sign?: { hmacKey?: SecretRef; ed25519Key?: SecretRef }
  /** sealed recordings are uploaded to object storage and then removed from `dir` (recording/upload/) */
  upload?: RecordingUploadConfig
}

export interface S3UploadConfig {
  /** http(s) URL of an S3-compatible store; absent: AWS S3 of `region` */
  endpoint?: string
  bucket: string
  /** prepended to `<yyyy-mm-dd>/<session>.pcr`; ends with '/' when not empty */
  prefix: string
  region: string
  /** both or neither: without them the AWS SDK's default chain (env AWS_*, web identity, instance role) */
  accessKeyId?: SecretRef
  secretAccessKey?: SecretRef
  /** bucket in the path rather than the host name (default: true when an endpoint is set) */
  forcePathStyle: boolean
}

export interface RecordingUploadConfig {
  s3: S3UploadConfig
  /** bytes of sealed recordings awaiting upload past which recording.onFailure applies (default 1 GiB) */
  maxSpoolBytes: number
  /** ms: retries back off exponentially up to this (default 1m) */
  maxRetryDelayMs: number
}

export interface ApprovalsConfig {
  /** ms */
  timeoutMs: number
  /** url may be a secret reference (Slack webhook URLs are credentials) */
  webhook?: { url: string | SecretRef; format: 'json' | 'slack' }
  /** ms an estimate (blast radius) may take before its facts are taken as unknown (default 2s) */
  estimateTimeoutMs?: number
  /** Slack: a message with Approve / Deny buttons per request (gateway/src/slack) */
  slack?: SlackConfig
}

export interface SlackConfig {
  botToken: SecretRef
  signingSecret: SecretRef
  /** channel id (C…) or name the messages go to */
  channel: string
  /** Slack user id (U…) or, with lookupByEmail, an email → who that is as an approver */
  users: Record<string, { subject?: string; groups: string[] }>
  /** resolve email keys of `users` through users.lookupByEmail */
  lookupByEmail: boolean
  /** Web API base (tests point it at the fixture); default https://slack.com/api */
  apiUrl: string
}

/** Where several gateway instances share approvals, revocations and the session registry. */
export interface ControlStoreConfig {
  /** absent: this process's memory (one instance) */
  postgres?: {
    host: string
    port: number
    database: string
    user: string
    password?: SecretRef
    tls?: UpstreamTls
    /** the schema its tables live in (default portcullis_control) */
    schema: string
  }
  /** one Redis (a primary, not Cluster) */
  redis?: {
    host: string
    port: number
    user?: string
    password?: SecretRef
    db?: number
    tls?: UpstreamTls
    /** every key starts with it (default portcullis:control:) */
    prefix: string
  }
  /** ms: an instance silent this long is taken for dead: its held requests read withdrawn, its sessions end */
  leaseMs: number
  /** ms: how often an instance renews its lease and its sessions' last activity */
  heartbeatMs: number
  /** ms: how often changes are read when no notification came (the fallback for a lost LISTEN) */
  pollMs: number
}

export interface Config {
  admin?: {
    listen: string
    /** groups allowed to list/kill sessions and revoke (default decided by the admin API) */
    groups?: string[]
    /** require a token for /metrics (default: only when listening beyond loopback) */
    metricsAuth?: boolean
    /** groups that may read recordings and the audit log (default decided by the admin API) */
    auditors?: string[]
    /** the web console's sign-in (absent: no console, the JSON API only) */
    console?: ConsoleConfig
  }
  identity: IdentityConfig
  secrets: Record<string, SecretSource>
  recording: RecordingConfig
  /**
   * reads: 'each' (default) one line per operation; 'summary' one line per SUMMARY_READS allowed
   * reads of a session (counts, distinct fingerprints and resources), every other operation and
   * every refusal still one line each
   */
  audit: { destination: 'stdout' | string; reads: 'each' | 'summary' }
  approvals: ApprovalsConfig
  controlStore: ControlStoreConfig
  targets: TargetConfig[]
  rules: RuleConfig[]
  masking: MaskingRuleEntry[]
  maskingKey?: SecretRef
  /** node:cluster workers on this host ('auto': one per available core); 1 runs without a cluster */
  workers: 'auto' | number
  /** the file it was read from */
  file?: string
}

export interface ConfigIssue {
  file: string
  line: number
  /** dotted key path, e.g. targets.0.upstream.port */
  path: string
  message: string
}
