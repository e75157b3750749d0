// The contract between the core and the protocol codecs. A codec knows its wire; the core knows
// nothing of wires. Everything here is a type: implementations live in their own modules.
import type { Duplex } from 'node:stream'
import type { ScopeConfig, SessionScope } from './identity/scope.ts'
import type { PolicyDecision } from './policy/decide.ts'
export type { ScopeConfig, SessionScope }

export type Protocol = 'postgres' | 'redis' | 'http' | 'mcp'

/** Ordered from least to most dangerous; a multi-statement request takes the strictest. */
export const CLASSES = ['session', 'read', 'write', 'delete', 'bulk-delete', 'schema-change', 'admin'] as const
export type OperationClass = (typeof CLASSES)[number]

export interface Principal {
  subject: string
  groups: string[]
  issuer: string
  /** token expiry, ms since epoch; undefined when the token has none */
  expiresAt?: number
  /** jti, for revocation */
  tokenId?: string
}

/** pgvector / RediSearch KNN / vector-set / vector-DB facts */
export interface VectorFacts {
  search?: boolean
  /** LIMIT / KNN k / COUNT / topK / limit; undefined when unbounded */
  topK?: number
  operator?: string
  /** vector values leave the store without a small limit */
  export?: boolean
}

export type FactValue = number | string | boolean

/** One statement / command / request inside an operation. */
export interface StatementInfo {
  class: OperationClass
  resources: string[]
  /** normalized text (SQL, command name + args shape, METHOD /path) */
  statement: string
  vector?: VectorFacts
  facts?: Record<string, FactValue>
}

/** One request as the policy sees it. */
export interface Operation {
  protocol: Protocol
  /** strictest class of its statements */
  class: OperationClass
  resources: string[]
  /** normalized statement text shown to approvers, audit and replay (never credentials) */
  statement: string
  /** stable id of the statement shape, for approval windows and audit (hex) */
  fingerprint: string
  statements: StatementInfo[]
  /** numeric and string facts rules can match: topK, keysTouched, estimatedRows, model, maxTokens, method, path, operation… */
  facts: Record<string, FactValue>
  /** set when the request could not be understood; policy blocks it with this reason */
  error?: string
}

export type Action = 'allow' | 'block' | 'approve'
export type MaskMethod = 'redact' | 'partial' | 'hash' | 'null'

/**
 * What to mask for one principal on one target. Compiled once per session (and per config
 * generation); lookups are cheap and meant for the hot path.
 */
export interface MaskPlan {
  /** true when nothing at all is masked: codecs skip decoding entirely */
  readonly empty: boolean
  /** column rule for 'schema.table.column' (also tries 'table.column' and bare name rules) */
  forColumn(schema: string | undefined, table: string | undefined, column: string): MaskMethod | undefined
  /** JSON field path ('data.0.email', 'email') or Redis hash field name */
  forField(path: string): MaskMethod | undefined
  /** Redis key (glob rules) */
  forKey(key: string): MaskMethod | undefined
  /** false when no column rule applies (codecs skip column lineage); absent: assume some may */
  readonly hasColumnRules?: boolean
  /** true when at least one detector runs on free text */
  readonly hasDetectors: boolean
  /** method applied to detector hits */
  readonly detectorMethod: MaskMethod
  /** apply a method to a whole value; null means SQL NULL / JSON null / Redis nil */
  apply(method: MaskMethod, value: string): string | null
  /** run the detectors over text; count = number of values replaced */
  scan(text: string): { text: string; count: number }
  /**
   * streamed text (a reply's deltas, concatenated): text[0, from) was answered already and is context;
   * returns text[from, cut) masked, with cut placed where no text appended later can change a match
   * that starts before it (final: the stream ended, cut is the end). The caller keeps the text from
   * STREAM_CONTEXT characters before cut and appends the next piece.
   */
  scanStream(text: string, from: number, final: boolean): { text: string; count: number; cut: number }
  /**
   * true when the matches that start after this character (a UTF-16 code) are those of the text
   * after it on its own: no detector's lookbehind reads it otherwise than a text's start. (A match
   * may still run across it, a card number with spaces: that is the hold-back's to decide.) A
   * streaming caller that has sent everything up to such a character may scan the next piece
   * without context (masking/stream.ts); absent: assume not
   */
  scansFreshAfter?(code: number): boolean
  /** longest possible detector match in characters (bounds streaming hold-back) */
  readonly maxMatchLength: number
  /**
   * every detector hit becomes a fixed text with nothing JSON.stringify escapes ('"', '\\', control
   * characters, surrogates): text masked by scan/scanStream is then as plain as the text it came from;
   * absent: assume not
   */
  readonly plainReplacements?: boolean
  /** false when no field rule / no key rule applies (a codec may then allow replies it could not mask by field / key); absent: assume some may */
  readonly hasFieldRules?: boolean
  readonly hasKeyRules?: boolean
}

export interface Decision {
  /** final action. After an approval completes, 'approve' becomes 'allow' or 'block' */
  action: Action
  rule: string | null
  reason: string
  masks: MaskPlan
  /** set when the decision went through an approval request */
  approvalId?: string
  /** defer mode: the request is pending; the client is told its id and how to poll */
  deferred?: boolean
}

/**
 * The blast radius of a held statement, estimated before anyone decides (EXPLAIN for Postgres,
 * key / document counts for Redis, point / vector counts for vector databases). Filled by the
 * estimator; `null` when no estimate could be had (then the fact is unknown to rules).
 */
export interface BlastRadius {
  estimatedRows?: number
  tables?: string[]
  keys?: number
  documents?: number
  points?: number
  vectors?: number
  /** how it was had: 'explain', 'dbsize', 'ft.info', 'qdrant-count', 'pinecone-stats', … */
  source: string
}

/**
 * The statement exactly as the client sent it, as the approver sees it, and the hash a request
 * binds to. Codecs build it (they know the wire); `text` and `parameters` are already masked where
 * a masking rule covers a value; `hash` is of the unmasked text and parameters.
 */
export interface StatementAsSent {
  /** SQL text as sent (simple query) or the Parse text (extended), a command line, METHOD /path */
  text: string
  /** Bind values rendered as SQL literals ('abc', 42, NULL, '\x00ff'::bytea), command args, … */
  parameters?: string[]
  /** sha256 hex of the text and the parameters as sent (unmasked, binary-exact) */
  hash: string
}

/** one approver's yes, counted once per approver */
export interface ApprovalVote {
  by: string
  /** ms since epoch */
  at: number
  reason?: string
}

/** one statement the session ran (or was refused) before the held one, normalized */
export interface RecentStatement {
  /** ms since epoch */
  at: number
  statement: string
  class: OperationClass
  action: Action
}

/**
 * How a codec estimates one operation's blast radius. Built by the codec only where an estimate
 * can be had (Postgres DML, Redis multi-key deletes and FT.DROPINDEX DD, Qdrant delete by filter,
 * Pinecone deleteAll); `facts` names what it can tell, so that a rule on one of them is 'unknown'
 * (not 'no') until it has run. run() is called at most once, only when a rule needs the facts or
 * the operation is held; it resolves null when nothing could be had and never rejects.
 */
export interface Estimator {
  readonly facts: readonly string[]
  run(signal: AbortSignal): Promise<BlastRadius | null>
}

export interface ApprovalRequest {
  id: string
  principal: Principal
  target: string
  protocol: Protocol
  class: OperationClass
  /** normalized statement (literals as $n): what a window covers */
  statement: string
  /** of the normalized statement: the approval-window key */
  fingerprint: string
  /** the statement as sent, masked where a rule says so; absent when the codec gave none */
  sent?: Omit<StatementAsSent, 'hash'>
  /** the exact statement the request binds to: approving releases this one and no other */
  statementHash?: string
  /** of the rules in force when the request was made; a reload that changes the decision withdraws it */
  policyVersion?: string
  resources: string[]
  rule: string
  /** the rule's reason (why it needs approval) */
  ruleReason?: string
  approvers: string[]
  /** distinct approvers needed (default 1); the requester never counts */
  minApprovals?: number
  /** who approved so far, once each */
  approvals?: ApprovalVote[]
  facts: Record<string, FactValue>
  /** the session's last statements before this one (bounded ring, normalized) */
  recent?: RecentStatement[]
  /** blast radius, filled by the estimator (another module); null: none could be had */
  estimate?: BlastRadius | null
  /** 'wait': the operation is held; 'defer': answered at once, the same statement re-sent runs once approved */
  mode?: 'wait' | 'defer'
  /** defer mode: ms since epoch when the approved statement was let through (once) */
  released?: number
  created: number
  expires: number
  status: 'pending' | 'approved' | 'denied' | 'expired' | 'withdrawn'
  decidedBy?: string
  /** the approver's reason for a denial, or why the request was withdrawn */
  reason?: string
  /** the gateway instance holding the operation (control store) */
  instance?: string
  /** ms: when set, approving also lets the same statement by the same subject through for this long */
  window?: number
}

export interface DecideOptions {
  /** aborting withdraws a pending approval request (client cancel, disconnect) */
  signal?: AbortSignal
  /** called once when the operation is held for approval, before waiting */
  onPending?: (request: ApprovalRequest) => void
  /** the statement as sent (called only when an approval is needed: it may render and hash) */
  sent?: () => StatementAsSent
  /**
   * approvalMode defer: do not wait. Resolves at once with a block that has `deferred: true` and the
   * request id; the same statement (same hash) sent again by the same subject runs once approved.
   */
  defer?: boolean
  /** how to estimate the operation's blast radius, when one can be had (see Estimator) */
  estimator?: Estimator
  /** a blast radius the codec already has (used when no estimator ran); null: none could be had */
  estimate?: BlastRadius | null
}

export interface SecretRef {
  secret: string
}

export interface TlsServerOptions {
  cert: string // file path
  key: string // file path
}

export interface UpstreamTls {
  enabled?: boolean
  rejectUnauthorized?: boolean
  ca?: string
  servername?: string
}

export interface TargetLimits {
  maxConnections: number
  maxMessageBytes: number
  /**
   * Postgres: the longest SQL text (bytes, UTF-8) of a Query or Parse the gateway classifies; longer
   * is refused (54000) before it is parsed. libpg_query's memory grows to its largest parse and is
   * never given back (README "Statement length"). Absent: the codec's default.
   */
  maxStatementBytes?: number
  idleTimeoutMs: number
  handshakeTimeoutMs: number
}

export interface TargetConfig {
  name: string
  protocol: Protocol
  /** host:port */
  listen: string
  upstream: {
    host?: string
    port?: number
    /** http targets */
    url?: string
    database?: string
    user?: string
    password?: SecretRef
    tls?: UpstreamTls
    /** http: header template that carries the upstream credential, e.g. { name: 'authorization', value: 'Bearer {secret}', secret: { secret: 'openai' } } */
    auth?: { header: string; value: string; secret: SecretRef }
  }
  /** client-facing TLS */
  tls?: TlsServerOptions
  limits: TargetLimits
  /** protocol-specific knobs (http profile, redis bulkDeleteKeys, token header…) */
  options: Record<string, unknown>
  /** what each principal may see, from its claims (identity/scope.ts); enforced by the codec */
  scope?: ScopeConfig
  /** mcp: the targets whose tools this target serves (each reached through its own codec) */
  targets?: string[]
}

/** One JSON line per operation. */
export interface AuditEvent {
  time: string
  session: string
  principal?: { sub: string; groups: string[] }
  target: string
  protocol: Protocol
  class?: OperationClass
  resources?: string[]
  fingerprint?: string
  statement?: string
  decision?: Action
  rule?: string | null
  approvalId?: string
  rows?: number
  bytes?: number
  masked?: number
  durationMs?: number
  error?: string
  /** audit.reads: summary — a line for this many allowed reads (bytes, masked, durationMs: their sums) */
  reads?: number
  /** with `reads`: the distinct fingerprints of those reads (at most 64; `resources`: likewise) */
  fingerprints?: string[]
  /** with `reads`: distinct fingerprints and resources past the 64 listed */
  distinctLeftOut?: number
  /** the scope the operation ran under (SessionScope.summary) */
  scope?: string
}

/** Record types in a session recording. */
export type RecordType = 'session-start' | 'request' | 'decision' | 'response' | 'error' | 'event' | 'session-end' | 'seal'

/** A scope's own upstream objects (OpenAI-compatible files, vector stores, batches), by kind and id. */
export interface ScopedObjects {
  /** records that this scope created them (an id another scope already owns stays that scope's) */
  put(kind: string, ids: string[]): Promise<void>
  /** the ones of `ids` this scope owns */
  owned(kind: string, ids: string[]): Promise<string[]>
  /** forgets objects deleted upstream */
  drop(kind: string, ids: string[]): Promise<void>
}

export interface Session {
  readonly id: string
  readonly target: TargetConfig
  readonly remote: string
  /** set by authenticate() */
  readonly principal: Principal | undefined
  /** aborted on revocation, admin kill, shutdown; reason is a PortcullisError */
  readonly signal: AbortSignal
  /** verifies a token; throws PortcullisError('AUTH_FAILED', reason) — the reason never holds a secret */
  authenticate(token: string): Promise<Principal>
  /** throws PortcullisError('TOKEN_EXPIRED' | 'REVOKED' | 'SESSION_CLOSED') when the session may not go on */
  assertAlive(): void
  /** the mask plan for this principal on this target (empty before authenticate) */
  readonly masks: MaskPlan
  /** the target's scope expanded for this principal (set by authenticate); undefined: no scope */
  readonly scope?: SessionScope
  /**
   * the upstream objects this session's scope created through the gateway (control store), bound
   * to the target and the scope; undefined without a scope. Throws CONTROL_STORE_UNAVAILABLE while
   * the store is away: an object whose owner cannot be read is nobody's (fail closed).
   */
  readonly objects?: ScopedObjects
  /**
   * Decides one operation: records and audits the decision, and when a rule says approve, holds it
   * until approved (→ allow), denied or timed out (→ block with approvalId). Never resolves 'approve'.
   * Throws PortcullisError('RECORDING_FAILED') when recording fails and onFailure is block.
   */
  decide(op: Operation, opts?: DecideOptions): Promise<Decision>
  /**
   * decide() without the wait: the decision when none is needed (recorded and audited the same),
   * undefined when an approval must be asked for (then call decide()). Same throws.
   */
  decideNow(op: Operation, opts?: Pick<DecideOptions, 'estimator'>): Decision | undefined
  /**
   * What the rules would say of this operation by this session's principal, with nothing recorded,
   * audited, counted or asked for ('approve' stays 'approve', no window is looked up): a preview, for
   * what to show (MCP tools/list, tables), never a permission — the operation itself is decided by
   * decide()/decideNow() when it is sent. Throws AUTH_FAILED before authentication.
   */
  wouldDecide(op: Operation): PolicyDecision
  /**
   * whether an estimate with these facts may be wanted: a rule names one of them, or (given `cls`)
   * an approve rule may hold an operation of that class (its approver sees the estimate). Lets a
   * codec skip building an estimator (decideNow: no `cls`) or keeping what one needs (statement
   * texts, parameters). Optional: absent means no.
   */
  estimates?(facts: readonly string[], cls?: OperationClass): boolean
  /** resolves a secret reference of this target (upstream password, API key) */
  secret(ref: SecretRef): Promise<string>
  /** appends to the session recording. Payloads are msgpack-able (Buffers are kept as bytes). */
  record(type: RecordType, payload: Record<string, unknown>): void
  /**
   * audit() of the operation's class, resources, fingerprint and statement plus `rest`, serialized
   * once per Operation; of `rest` only the outcome fields are written (audit.ts OperationOutcome)
   */
  auditOperation?(op: Operation, rest: Pick<AuditEvent, 'decision' | 'rule' | 'approvalId' | 'rows' | 'bytes' | 'masked' | 'durationMs' | 'error'>): void
  /**
   * the request the next decision answers: recorded inside that decision's record (`request`,
   * recording/FORMAT.md), unless another record, a decision that waits or writeRequest() comes first
   */
  holdRequest?(payload: Record<string, unknown>): void
  /** the held request, if any, as a 'request' record now (before a wait of the codec's own) */
  writeRequest?(): void
  /** until releaseDecisions(): the decisions taken go into one 'decision' record per round trip (recording/FORMAT.md) */
  holdDecisions?(): void
  releaseDecisions?(): void
  /** one audit event per operation, written when the operation completes */
  audit(event: Partial<AuditEvent>): void
  /** seals the recording and releases the session; idempotent */
  close(reason?: string): Promise<void>
  /** the gateway's other targets, for a codec that fronts them (mcp); set by the gateway */
  peers?: Peers
}

/** another target of the same gateway, as a codec that fronts it (the MCP server) reaches it */
export interface Peer {
  readonly name: string
  readonly protocol: Exclude<Protocol, 'mcp'>
  readonly options: Record<string, unknown>
  /**
   * a new client connection to the target's own listener, served by its codec exactly like one from
   * the network: the caller authenticates on it with the principal's own token
   */
  connect(): Promise<Duplex>
}

export interface Peers {
  /** a target this gateway serves now (current config generation); undefined when none by that name */
  get(name: string): Peer | undefined
  /**
   * what the rules say of this operation by this principal on that target, with nothing recorded,
   * audited or held (what to list: MCP's tools and tables); 'approve' stays 'approve'
   */
  wouldDecide(principal: Principal, target: string, op: Operation): Action
  /** an approval request by id, through the core's approvals API (the caller checks it is the principal's) */
  approval(id: string): Promise<ApprovalRequest | undefined>
  /** the configured token issuers (an MCP target's protected-resource metadata names them) */
  issuers(): string[]
  /**
   * one more session on this target, for another principal whose requests arrive over the same
   * connection (HTTP keep-alive pools carry many callers); recorded and audited like any, closed by the caller
   */
  openSession(target: TargetConfig, remote: string): Session
}

export interface ProtocolCodec {
  readonly protocol: Protocol
  /** undefined: need more bytes */
  sniff(first: Buffer): boolean | undefined
  /** serves one client connection until it ends; must never throw for bad client input */
  serve(client: Duplex, session: Session): Promise<void>
}
