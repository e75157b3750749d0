// The state of one proxied connection after startup, in one place: the phases (client-messages,
// simple-query, extended-query, copy, upstream-replies, result-rows, completion, error-response,
// teardown) are functions of it. Nothing here acts; proxy.ts wires the sockets to the phases.
import type { Duplex } from 'node:stream'
import type { Decision, MaskMethod, MaskPlan, Operation, Session, StatementInfo } from '@portcullis/core/types'
import { Framer, type Frame } from './framer.ts'
import type { TransactionStatus } from './backend.ts'
import type { RowMask } from './masking.ts'
import type { RowLineage } from './column-lineage.ts'
import { Outbox } from './outbox.ts'
import type { Catalog } from './catalog.ts'
import { StatementTexts } from './estimates.ts'
import { scopedSettings } from './scope.ts'
import type { ServerSettings } from './settings.ts'
import { type Portal, SessionModel } from './session-state.ts'

export interface Classifier {
  classifySql(sql: string, ctx?: { prepared?: Map<string, Operation>; cursors?: ReadonlyMap<string, Operation> }, opts?: { exact?: boolean }): Operation
  /** the operation has an EXECUTE / FETCH / MOVE resolved against the session's names */
  dependsOnSession(op: Operation): boolean
  /** the body of one PREPARE statement, or the query of one DECLARE CURSOR statement */
  statementBody(st: StatementInfo): Operation | undefined
  /** the operation with a LIMIT $n resolved to the bound value */
  withTopK(op: Operation, topK: number): Operation
}

export interface PendingOp {
  kind: 'Q' | 'E'
  op: Operation
  decision: Decision | undefined
  /** index of the Sync / Query whose ReadyForQuery ends it */
  batch: number
  start: number
  rows: number
  bytes: number
  masked: number
  error?: string
  done: boolean
  /** Execute: the portal it runs, by name */
  portal?: Portal | undefined
  portalName?: string | undefined
  /** column lineage as the session stood when it was decided (EXECUTE, FETCH resolve by name) */
  lineage?: RowLineage
  /** a simple Query's text (its blast radius is estimated from it) */
  sql?: string | undefined
}

export interface ProxyOptions {
  client: Duplex
  upstream: Duplex
  session: Session
  classifier: Classifier
  catalog: Catalog
  /** frames and bytes the startup readers had read ahead, and whether they read EOF too */
  clientAhead: { frames: Frame[]; rest: Buffer | undefined; ended?: boolean }
  upstreamAhead: { frames: Frame[]; rest: Buffer | undefined; ended?: boolean }
  /** cancel requests for a statement waiting for approval land here */
  registerWithdraw(fn: () => boolean): void
  /** sends a CancelRequest for this session's upstream backend */
  cancelUpstream(): void
  /** the upstream's reported settings since startup, watched on every ParameterStatus */
  serverSettings: ServerSettings
}

export class Connection {
  readonly client: Duplex
  readonly upstream: Duplex
  readonly session: Session
  readonly classifier: Classifier
  readonly catalog: Catalog
  /** statement texts and Bind values, for estimates (estimates.ts) */
  readonly texts: StatementTexts
  readonly clientFramer: Framer
  readonly upstreamFramer: Framer
  readonly cancelUpstream: () => void
  readonly serverSettings: ServerSettings
  /** the target's scoped setting names (scope.ts) */
  readonly scoped: ReadonlySet<string>

  // client → upstream
  inbox: Frame[] = []
  pumping = false
  /** prepared statements and portals as the server holds them, and what it has yet to answer */
  readonly model = new SessionModel()
  /** the text of a protocol statement whose class depends on the session's names (`EXECUTE p`) */
  readonly sqlOf = new WeakMap<Operation, string>()
  /** a message waiting for an earlier batch's answer before the model can say what it names */
  batchWaiter: { batch: number; resolve: () => void } | undefined
  discardUntilSync = false
  /** an admin Execute was sent in the extended batch not yet closed by Sync */
  adminInBatch = false
  /** resolves the pump's wait once the upstream has answered every batch sent (see answered) */
  onAnswered: (() => void) | undefined
  /** a COPY FROM STDIN was sent and the client has not ended its data (CopyDone / CopyFail) */
  copyInPending = false
  pendingDecision: AbortController | undefined
  sentBatches = 0
  readonly toUpstreamOut = new Outbox()
  /** client messages not yet recorded (see recordRequests) */
  readonly requestRun = new Outbox()
  requestTypes = ''
  /** frames at the head of the inbox already recorded, ahead of a decision */
  recordedAhead = 0

  // upstream → client
  ops: PendingOp[] = []
  receivedBatches = 0
  replacements = new Map<string, { error: Buffer; batch: number }>()
  rowMask: RowMask | undefined
  lastRowDescription: { raw: Buffer; plan: MaskPlan; generation: number; lineage: RowLineage | undefined; mask: RowMask | undefined } | undefined
  copyOut: { methods: (MaskMethod | undefined)[] | undefined } | undefined
  /** a binary COPY TO under a mask plan: its rows are dropped and its CommandComplete becomes an error */
  copyOutRefused = false
  upstreamQueue: Frame[] = []
  /** the frames of one upstream read on the fast path, handled before the next read (upstream-replies.ts) */
  readonly upstreamFrames: Frame[] = []
  upstreamBusy = false
  readonly toClientOut = new Outbox()
  /** DataRows in toClientOut, for the response record */
  responseRows = 0
  txStatus: TransactionStatus = 'I'

  closed = false
  /** the client said it is done: Terminate, or EOF ('end') once everything before it is decided */
  ending: 'terminate' | 'eof' | undefined
  clientEof = false
  readonly pauses = { client: new Set<string>(), upstream: new Set<string>() }
  finish!: () => void
  readonly done: Promise<void>
  copyColumnCache = new Map<string, (MaskMethod | undefined)[] | undefined>()

  constructor(opts: ProxyOptions) {
    this.client = opts.client
    this.upstream = opts.upstream
    this.session = opts.session
    this.classifier = opts.classifier
    this.catalog = opts.catalog
    this.texts = new StatementTexts(opts.session, opts.catalog)
    this.cancelUpstream = opts.cancelUpstream
    this.serverSettings = opts.serverSettings
    this.scoped = scopedSettings(opts.session.target)
    const max = this.session.target.limits?.maxMessageBytes ?? 1 << 20
    this.clientFramer = new Framer(max)
    // the upstream is trusted more, but a runaway row must not exhaust memory either
    this.upstreamFramer = new Framer(Math.max(max, 1 << 30), { coalesce: 0x44 /* D */ })
    this.done = new Promise(resolve => (this.finish = resolve))
  }
}
