// The data path after startup: client messages are framed, decided and forwarded in order (a
// statement waiting for a decision holds everything the client pipelined after it); upstream
// messages pass as their original bytes unless a mask applies.
//
// A refused statement is answered through the upstream itself: in place of the statement the
// gateway sends SQL that fails to parse, and rewrites the resulting ErrorResponse into the policy
// error. The upstream then does exactly what Postgres does after an error — discards the extended
// batch until Sync, marks an open transaction block failed ('E'), turns the later COMMIT into
// ROLLBACK — and responses stay in order without the gateway re-sequencing them.
//
// What a Bind or an Execute names comes from the session model (session-state.ts): statements and
// portals as the server holds them, whoever created them. A name the gateway does not know is
// refused; under a mask plan an Execute whose row shape is not known gets a Describe of ours.
import type { Duplex } from 'node:stream'
import { randomBytes } from 'node:crypto'
import type { Decision, MaskMethod, MaskPlan, Operation, Session, StatementInfo } from '@portcullis/core/types'
import { PortcullisError, isPortcullisError } from '@portcullis/core/errors'
import { BufferReader } from './buffer-reader.ts'
import { Framer, type Frame } from './framer.ts'
import {
  type BindMessage,
  parseBindMessage,
  parseCloseMessage,
  parseParseMessage,
  parseQueryMessage,
  serializeParse,
  serializeQuery,
  TERMINATE,
} from './frontend.ts'
import {
  commandTagRows,
  parseNoticeFields,
  parseRowDescription,
  serializeErrorResponse,
  serializeNoticeFields,
  serializeNoticeResponse,
  type TransactionStatus,
} from './backend.ts'
import { buildRowMask, maskCopyRow, maskDataRowTo, maskNoticeFields, unresolvedTables, unresolvedTypes, type RowMask } from './masking.ts'
import { copyMethods, hasColumnRules, hasCopyResult, lineageRefusal, rowLineage, type RowLineage } from './column-lineage.ts'
import { Outbox } from './outbox.ts'
import type { Catalog } from './catalog.ts'
import { StatementTexts } from './estimates.ts'
import { sqlstateOf } from './startup.ts'
import { deferredRefusal, statementAsSent } from './approval.ts'
import { scopeRefusal, scopedSettings } from './scope.ts'
import type { ServerSettings } from './settings.ts'
import {
  COPY_SYNC,
  DESCRIBE,
  EXECUTE,
  type Expectation,
  newPortal,
  type Portal,
  QUERY,
  readName,
  serializeDescribePortal,
  SessionModel,
  statementEffects,
  SYNC,
} from './session-state.ts'

const EXACT = Object.freeze({ exact: true })

export interface Classifier {
  classifySql(sql: string, ctx?: { prepared?: Map<string, Operation>; cursors?: ReadonlyMap<string, Operation> }, opts?: { exact?: boolean }): Operation
  /** the operation has an EXECUTE / FETCH / MOVE resolved against the session's names */
  dependsOnSession(op: Operation): boolean
  /** the body of one PREPARE statement, or the query of one DECLARE CURSOR statement */
  statementBody(st: StatementInfo): Operation | undefined
  /** the operation with a LIMIT $n resolved to the bound value */
  withTopK(op: Operation, topK: number): Operation
}

interface PendingOp {
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

/** rows under a mask plan whose row shape the gateway does not know: never forwarded */
const UNKNOWN_SHAPE: RowMask = Object.freeze({ methods: [], scan: [], textLike: [], binary: [], jsonb: [], fixed: [] }) as unknown as RowMask

/** why a statement is not sent: the ErrorResponse the client gets in its place */
interface Refusal {
  sqlstate: string
  message: string
  detail?: string | undefined
}

function refusalOf(err: unknown): Refusal {
  const refusal: Refusal = {
    sqlstate: sqlstateOf(err),
    message: isPortcullisError(err, 'APPROVAL_WITHDRAWN') ? `canceling statement due to user request: ${err.message}` : (err as Error).message,
  }
  const id = isPortcullisError(err) ? err.details.approvalId : undefined
  if (typeof id === 'string') refusal.detail = `approval request ${id}`
  return refusal
}

/** CommandComplete 'SELECT n' or 'FETCH n' */
function isSelectOrFetchTag(raw: Buffer): boolean {
  return (raw[5] === 0x53 && raw[6] === 0x45 && raw[7] === 0x4c && raw[8] === 0x45 && raw[9] === 0x43 && raw[10] === 0x54) || (raw[5] === 0x46 && raw[6] === 0x45 && raw[7] === 0x54 && raw[8] === 0x43 && raw[9] === 0x48)
}

/** a batch of client-bound bytes is written (and recorded) once it reaches this size */
const OUT_FLUSH_BYTES = 256 * 1024
const QUEUE_HIGH_WATER = 256
/** bytes queued on the client socket before the upstream is paused */
const CLIENT_BACKLOG_BYTES = 1024 * 1024
/** a client ending its session that stops reading the last replies for this long is cut off */
const WRITE_STALL_MS = 30_000

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

export class PostgresProxy {
  private readonly client: Duplex
  private readonly upstream: Duplex
  private readonly session: Session
  private readonly classifier: Classifier
  private readonly catalog: Catalog
  /** statement texts and Bind values, for estimates (estimates.ts) */
  private readonly texts: StatementTexts
  private readonly clientFramer: Framer
  private readonly upstreamFramer: Framer
  private readonly cancelUpstream: () => void
  private readonly serverSettings: ServerSettings
  /** the target's scoped setting names (scope.ts) */
  private readonly scoped: ReadonlySet<string>

  // client → upstream
  private inbox: Frame[] = []
  private pumping = false
  /** prepared statements and portals as the server holds them, and what it has yet to answer */
  private readonly model = new SessionModel()
  /** the text of a protocol statement whose class depends on the session's names (`EXECUTE p`) */
  private readonly sqlOf = new WeakMap<Operation, string>()
  /** a message waiting for an earlier batch's answer before the model can say what it names */
  private batchWaiter: { batch: number; resolve: () => void } | undefined
  private discardUntilSync = false
  /** an admin Execute was sent in the extended batch not yet closed by Sync */
  private adminInBatch = false
  /** resolves the pump's wait once the upstream has answered every batch sent (see answered) */
  private onAnswered: (() => void) | undefined
  /** a COPY FROM STDIN was sent and the client has not ended its data (CopyDone / CopyFail) */
  private copyInPending = false
  private pendingDecision: AbortController | undefined
  private sentBatches = 0
  private readonly toUpstreamOut = new Outbox()
  /** client messages not yet recorded (see recordRequests) */
  private readonly requestRun = new Outbox()
  private requestTypes = ''
  /** frames at the head of the inbox already recorded, ahead of a decision */
  private recordedAhead = 0

  // upstream → client
  private ops: PendingOp[] = []
  private receivedBatches = 0
  private replacements = new Map<string, { error: Buffer; batch: number }>()
  private rowMask: RowMask | undefined
  private lastRowDescription: { raw: Buffer; plan: MaskPlan; generation: number; lineage: RowLineage | undefined; mask: RowMask | undefined } | undefined
  private copyOut: { methods: (MaskMethod | undefined)[] | undefined } | undefined
  /** a binary COPY TO under a mask plan: its rows are dropped and its CommandComplete becomes an error */
  private copyOutRefused = false
  private upstreamQueue: Frame[] = []
  private upstreamBusy = false
  private readonly toClientOut = new Outbox()
  /** DataRows in toClientOut, for the response record */
  private responseRows = 0
  txStatus: TransactionStatus = 'I'

  private closed = false
  /** the client said it is done: Terminate, or EOF ('end') once everything before it is decided */
  private ending: 'terminate' | 'eof' | undefined
  private clientEof = false
  private readonly pauses = { client: new Set<string>(), upstream: new Set<string>() }
  private finish!: () => void
  readonly done: Promise<void>

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
    opts.registerWithdraw(() => {
      if (!this.pendingDecision) return false
      this.pendingDecision.abort(new PortcullisError('APPROVAL_WITHDRAWN', 'canceled by the client'))
      return true
    })

    this.client.on('data', chunk => this.onClientData(chunk))
    this.client.on('end', () => this.clientEnded())
    this.client.on('close', () => this.close())
    this.client.on('error', () => this.close())
    this.client.on('drain', () => this.resume('upstream', 'client-drain'))
    this.upstream.on('data', chunk => this.onUpstreamData(chunk))
    this.upstream.on('end', () => this.upstreamGone())
    this.upstream.on('close', () => this.upstreamGone())
    this.upstream.on('error', () => this.upstreamGone())
    this.upstream.on('drain', () => this.resume('client', 'upstream-drain'))
    this.session.signal.addEventListener('abort', () => this.sessionAborted(), { once: true })

    for (const f of opts.upstreamAhead.frames) this.upstreamQueue.push(f)
    if (opts.upstreamAhead.rest) this.onUpstreamData(opts.upstreamAhead.rest)
    else this.drainUpstream()
    for (const f of opts.clientAhead.frames) this.inbox.push(f)
    if (opts.clientAhead.rest) this.onClientData(opts.clientAhead.rest)
    else void this.pump()
    // the startup readers left both sockets paused, so that nothing they read after the handshake
    // was dropped while nobody listened (token verification, the upstream connect); flow now
    if (!this.closed && this.pauses.upstream.size === 0) this.upstream.resume()
    if (!this.closed && this.pauses.client.size === 0) this.client.resume()
    // an EOF the readers consumed comes as no 'end' event here; nor does one whose 'end' was
    // emitted after the reader let go and before these listeners (a stream emits 'end' on the
    // tick after it reads EOF, paused or not: a client's FIN right behind its first messages,
    // during the upstream connect): readableEnded says so, else the session waits forever
    if (opts.upstreamAhead.ended || this.upstream.readableEnded) this.upstreamGone()
    if (opts.clientAhead.ended || this.client.readableEnded) this.clientEnded()
  }

  // ---- flow control -------------------------------------------------------------------------

  private pause(which: 'client' | 'upstream', reason: string): void {
    const set = this.pauses[which]
    if (set.size === 0) (which === 'client' ? this.client : this.upstream).pause()
    set.add(reason)
  }

  private resume(which: 'client' | 'upstream', reason: string): void {
    const set = this.pauses[which]
    if (!set.delete(reason) || set.size > 0) return
    ;(which === 'client' ? this.client : this.upstream).resume()
  }

  /** queued: one socket write per client read batch (flushUpstream), not one per message */
  private toUpstream(buf: Buffer): void {
    if (this.closed) return
    this.toUpstreamOut.add(buf)
  }

  private flushUpstream(): void {
    const out = this.toUpstreamOut
    const buf = out.take()
    if (buf === undefined || this.closed) return
    if (!this.upstream.write(buf)) this.pause('client', 'upstream-drain')
    out.release(this.upstream.writableLength === 0)
  }

  private toClient(buf: Buffer, written?: () => void): void {
    if (this.closed) return
    // the socket's 16 KiB high-water mark is below one read batch: pausing at every write stalls a
    // big result on a pause/resume round trip per batch, so stop reading only past a bounded backlog
    if (!this.client.write(buf, written) && this.client.writableLength >= CLIENT_BACKLOG_BYTES) this.pause('upstream', 'client-drain')
  }

  // ---- teardown -----------------------------------------------------------------------------
  //
  // A session ends the way Postgres would end it:
  //  - the client sends Terminate or half-closes: everything it sent before goes upstream in order,
  //    then the Terminate (or our own EOF); the upstream answers all of it and closes, and every
  //    reply is written to the client before its socket ends (endUpstream, then upstreamGone);
  //  - the upstream sends a FATAL or PANIC ErrorResponse (pg_terminate_backend, a session timeout):
  //    it is forwarded, masked as usual, and is the session's last word (no error of ours after it);
  //  - the upstream vanishes without a word, or the gateway refuses to go on: one FATAL of ours;
  //  - the client vanishes: everything is torn down at once (close).

  private close(keepClient = false): void {
    if (this.closed) return
    this.recordRequests()
    // what was already decided and passed goes out first
    this.flushUpstream()
    this.flushResponse()
    this.closed = true
    this.pendingDecision?.abort(new PortcullisError('APPROVAL_WITHDRAWN', 'client disconnected'))
    // a pump parked until the upstream answers (after an admin statement, or for an earlier batch's
    // names) wakes up and, the session being closed, stops
    this.onAnswered?.()
    this.onAnswered = undefined
    this.batchWaiter?.resolve()
    this.batchWaiter = undefined
    // a backend busy with a statement notices a closed socket only when it next writes: stop it
    if (this.ops.some(p => !p.done && !p.error)) this.cancelUpstream()
    // never leak the upstream connection
    this.upstream.removeAllListeners('data')
    if (!this.upstream.destroyed && !this.upstream.writableEnded) this.upstream.end(TERMINATE)
    this.upstream.destroy()
    for (const p of this.ops) if (!p.done) this.audit(p, p.error ?? 'connection closed')
    this.ops = []
    if (!keepClient) {
      this.client.destroy()
      this.finish()
      return
    }
    // the session is done once its last bytes are written: whoever holds the socket destroys it then
    const client = this.client
    if (client.destroyed || client.writableFinished) return this.finish()
    const done = () => {
      client.off('finish', done)
      client.off('close', done)
      this.finish()
    }
    client.on('finish', done)
    client.on('close', done)
    // a client that stops reading must not hold the session open: Node's socket timeout counts
    // inactivity, so a slow reader that still drains is never cut off
    if (typeof (client as { setTimeout?: unknown }).setTimeout === 'function') {
      ;(client as unknown as { setTimeout(ms: number, fn: () => void): void }).setTimeout(WRITE_STALL_MS, () => client.destroy())
    }
  }

  /** the client sent Terminate (passed upstream) or EOF (passed on as ours) */
  private endUpstream(how: 'terminate' | 'eof', terminate?: Buffer): void {
    if (this.closed || this.ending) return
    this.ending = how
    // Postgres reads nothing after Terminate
    this.inbox.length = 0
    this.recordRequests()
    if (terminate) this.toUpstream(terminate)
    this.flushUpstream()
    this.upstream.end()
    // later client bytes are read and dropped: a socket closed over unread bytes resets the
    // connection, and the reset could overtake the replies still in flight
    const client = this.client
    client.removeAllListeners('data')
    client.on('data', () => undefined)
    this.pauses.client.clear()
    client.resume()
  }

  /** EOF from the client: Postgres still answers every whole message it read before it */
  private clientEnded(): void {
    if (this.closed || this.ending) return
    this.clientEof = true
    // no human decides for a client that has left: the statement is refused (fail closed), and what
    // the upstream runs already runs to its end, as in Postgres
    this.pendingDecision?.abort(new PortcullisError('APPROVAL_WITHDRAWN', 'client disconnected'))
    void this.pump()
  }

  private upstreamGone(): void {
    if (this.closed) return
    // the upstream closed because the client asked it to: the replies are all out
    if (this.ending) return this.finishGracefully()
    this.fatal('08006', 'upstream connection closed')
  }

  /** every reply is queued for the client: end its socket once they are written */
  private finishGracefully(): void {
    if (this.closed) return
    this.recordRequests()
    this.flushResponse()
    const client = this.client
    client.removeAllListeners('data')
    client.resume()
    if (!client.destroyed && !client.writableEnded) client.end()
    this.close(true)
  }

  private sessionAborted(): void {
    const reason = this.session.signal.reason
    const msg = isPortcullisError(reason) ? reason.message : 'terminating connection due to administrator command'
    this.fatal(isPortcullisError(reason, 'TOKEN_EXPIRED') || isPortcullisError(reason, 'REVOKED') ? '28000' : '57P01', msg)
  }

  /** ends the session with a FATAL ErrorResponse that says why */
  fatal(sqlstate: string, message: string): void {
    if (this.closed) return
    this.recordRequests()
    this.flushResponse()
    this.session.record('error', { message, sqlstate })
    const client = this.client
    // what the client still sends is read and dropped (see endUpstream)
    client.removeAllListeners('data')
    client.resume()
    if (!client.destroyed && !client.writableEnded) client.end(serializeErrorResponse('FATAL', sqlstate, message))
    // a client that never reads must not hold the socket open
    setTimeout(() => client.destroy(), 1000).unref()
    this.close(true)
  }

  // ---- client → upstream --------------------------------------------------------------------

  private onClientData(chunk: Buffer): void {
    let frames: Frame[]
    try {
      frames = this.clientFramer.push(chunk)
    } catch (err) {
      this.fatal(sqlstateOf(err), (err as Error).message)
      return
    }
    for (const f of frames) this.inbox.push(f)
    if (this.inbox.length > QUEUE_HIGH_WATER) this.pause('client', 'queue')
    void this.pump()
  }

  private async pump(): Promise<void> {
    if (this.pumping) return
    this.pumping = true
    try {
      while (this.inbox.length > 0 && !this.closed) {
        const frame = this.inbox.shift()!
        const waited = this.handleClientFrame(frame)
        if (waited) {
          // what came before the statement is not held by its decision
          this.flushUpstream()
          await waited
        }
      }
      this.recordRequests()
      this.flushUpstream()
      this.resume('client', 'queue')
      // EOF after the last whole message: the upstream gets it once everything before is sent
      if (this.clientEof && this.inbox.length === 0 && !this.closed) this.endUpstream('eof')
    } catch (err) {
      this.fatal(sqlstateOf(err), isPortcullisError(err) ? err.message : `internal error: ${(err as Error).message}`)
    } finally {
      this.pumping = false
    }
  }

  /** returns a promise only when the frame waits for a decision */
  private handleClientFrame(frame: Frame): Promise<void> | undefined {
    const code = frame.code
    // the upstream skips the same messages after the refusal's error; Flush is harmless to pass
    if (this.discardUntilSync && code !== 0x53 /* S */ && code !== 0x58 /* X */ && code !== 0x48 /* H */) {
      this.noteRequest(frame)
      return undefined
    }
    switch (code) {
      case 0x51: {
        // Q Query: EXECUTE / FETCH are classified against the model, which must be settled
        const wait = this.model.lastChangeBefore(this.sentBatches + 1)
        if (wait > this.receivedBatches) return this.waitForBatch(wait, frame)
        const sql = parseQueryMessage(new BufferReader(frame.raw, 5))
        this.recordRequests()
        this.session.record('request', { type: 'Q', statement: sql })
        if (this.adminInBatch) return this.refuseAfterAdmin('Q', this.classify(sql), frame.raw)
        return this.settleAfterAdmin(this.decideAndSend('Q', sql, frame.raw))
      }
      case 0x50: {
        // P Parse: classify now, decide at Execute
        const parse = parseParseMessage(new BufferReader(frame.raw, 5))
        this.recordRequests()
        this.session.record('request', { type: 'P', name: parse.name, statement: parse.query })
        const name = readName(new BufferReader(frame.raw, 5))
        const op = this.texts.parsed(this.classify(parse.query), parse.query, parse.paramTypes)
        if (this.classifier.dependsOnSession(op)) this.sqlOf.set(op, parse.query)
        // the statement exists once ParseComplete says so
        this.expect({ code: 0x50, batch: this.sentBatches + 1, change: { ns: 'S', name, statement: op, text: parse } })
        // the catalog lookups column lineage needs happen before the Parse goes up, not between its
        // Bind and Execute (an upstream that multiplexes sessions onto one backend loses the portal)
        const lookup = this.lineageLookups(op)
        if (lookup) return lookup.then(() => this.toUpstream(frame.raw))
        this.toUpstream(frame.raw)
        return undefined
      }
      case 0x42: {
        // B Bind: only the names, unless a LIMIT $n needs its value
        const r = new BufferReader(frame.raw, 5)
        const portal = readName(r)
        const statement = readName(r)
        const batch = this.sentBatches + 1
        const op = this.model.statement(statement, batch)
        if (typeof op === 'number') return this.waitForBatch(op, frame)
        this.noteRequest(frame)
        // a statement the gateway does not know is never bound: whatever the server holds under
        // that name was not classified
        if (!op) {
          this.refuseUnknown('26000', statement === '' ? 'unnamed prepared statement does not exist' : `prepared statement "${statement}" does not exist`)
          return undefined
        }
        const bound = typeof op.facts.topKParam !== 'number' ? op : this.boundTopK(op, parseBindMessage(new BufferReader(frame.raw, 5)))
        const sql = bound === op ? undefined : this.sqlOf.get(op)
        if (sql !== undefined) this.sqlOf.set(bound, sql)
        this.texts.derived(bound, op)
        const made = newPortal(bound)
        // what an approval shows and binds to: kept by reference, read only if one is asked for
        made.bind = frame.raw
        made.text = this.model.statementText(statement, batch)
        this.texts.bound(made, frame.raw)
        this.expect({ code: 0x42, batch, change: { ns: 'P', name: portal, portal: made } })
        this.toUpstream(frame.raw)
        return undefined
      }
      case 0x45: {
        // E Execute: runs what the model says the portal holds, or nothing
        const name = readName(new BufferReader(frame.raw, 5))
        const portal = this.model.portal(name, this.sentBatches + 1)
        if (typeof portal === 'number') return this.waitForBatch(portal, frame)
        // `EXECUTE p` / `FETCH c` Parsed earlier: classified again, as p or c stands when it runs
        const sql = portal && this.sqlOf.get(portal.op)
        if (sql !== undefined) {
          const wait = this.model.lastChangeBefore(this.sentBatches + 1)
          if (wait > this.receivedBatches) return this.waitForBatch(wait, frame)
        }
        this.noteRequest(frame)
        if (!portal) {
          this.refuseUnknown('34000', name === '' ? 'unnamed portal does not exist' : `portal "${name}" does not exist`)
          return undefined
        }
        const op = sql === undefined ? portal.op : this.classify(sql)
        if (this.adminInBatch) return this.refuseAfterAdmin('E', op, frame.raw)
        if (op.class === 'admin') this.adminInBatch = true
        return this.decideAndSend('E', op, frame.raw, portal, name)
      }
      case 0x43: {
        // C Close: the name goes once CloseComplete says so
        this.noteRequest(frame)
        const r = new BufferReader(frame.raw, 5)
        const kind = parseCloseMessage(r).kind
        r.offset = 6
        this.expect({ code: 0x43, batch: this.sentBatches + 1, change: { ns: kind, name: readName(r) } })
        this.toUpstream(frame.raw)
        return undefined
      }
      case 0x53: // S Sync
        this.noteRequest(frame)
        this.discardUntilSync = false
        this.sentBatches++
        this.expect(this.copyInPending ? COPY_SYNC : SYNC)
        this.toUpstream(frame.raw)
        if (this.adminInBatch) {
          this.adminInBatch = false
          return this.answered()
        }
        return undefined
      case 0x44: {
        // D Describe: under a mask plan, a portal Described by the client needs no Describe of ours
        this.noteRequest(frame)
        if (this.session.masks.empty || frame.raw[5] !== 0x50 /* P */) this.expect(DESCRIBE)
        else {
          const batch = this.sentBatches + 1
          const found = this.model.portal(readName(new BufferReader(frame.raw, 6)), batch)
          const portal = typeof found === 'object' ? found : undefined
          if (portal) portal.describedBatch = batch
          this.expect({ code: 0x44, batch, portal })
        }
        this.toUpstream(frame.raw)
        return undefined
      }
      case 0x63: // c CopyDone
      case 0x66: // f CopyFail
        this.copyInPending = false
        this.noteRequest(frame)
        this.toUpstream(frame.raw)
        return undefined
      case 0x48: // H Flush
      case 0x64: // d CopyData
        this.noteRequest(frame)
        this.toUpstream(frame.raw)
        return undefined
      case 0x58: // X Terminate: the upstream answers what came before, then closes
        this.noteRequest(frame)
        this.endUpstream('terminate', frame.raw)
        return undefined
      case 0x46: {
        // F FunctionCall: the fast-path interface calls any function by OID, unseen by SQL
        // classification; refuse it like a blocked statement
        this.noteRequest(frame)
        const marker = this.marker('blocked function call', '42501', 'function calls through the fast-path interface are not allowed')
        this.sentBatches++
        this.sentQuery(QUERY)
        this.toUpstream(serializeQuery(marker))
        return undefined
      }
      case 0x70: // p: no authentication exchange happens after startup
      default:
        throw new PortcullisError('PROTOCOL_ERROR', `invalid frontend message type '${String.fromCharCode(code)}'`)
    }
  }

  // ---- request records ----------------------------------------------------------------------
  //
  // Query and Parse are recorded one each, with their statement text. Every other message joins a
  // run recorded as one 'request' whose `bytes` are the messages exactly as the client sent them
  // and whose `type` lists their codes in order ('BES': Bind, Execute, Sync): one record per
  // round trip rather than one per message. A run is recorded before anything that must follow it
  // in the recording (a Query or Parse record, a decision) and at the end of each read batch.

  /** the message joins the run of request bytes not yet recorded */
  private noteRequest(frame: Frame): void {
    if (this.recordedAhead > 0) {
      this.recordedAhead--
      return
    }
    this.requestTypes += String.fromCharCode(frame.code)
    this.requestRun.add(frame.raw)
  }

  /**
   * Records the run. `upToSync`: a statement is about to be decided; the messages after it up to
   * its Sync, already read, join its record, so that the decision follows the whole request.
   */
  private recordRequests(upToSync = false): void {
    if (upToSync && this.recordedAhead === 0) {
      const inbox = this.inbox
      let i = 0
      while (i < inbox.length) {
        const f = inbox[i]
        if (f.code === 0x51 /* Q */ || f.code === 0x50 /* P */) break
        this.requestTypes += String.fromCharCode(f.code)
        this.requestRun.add(f.raw)
        i++
        if (f.code === 0x53 /* S */) break
      }
      this.recordedAhead = i
    }
    if (this.requestTypes === '') return
    const out = this.requestRun
    const bytes = out.take()!
    this.session.record('request', { type: this.requestTypes, bytes })
    this.requestTypes = ''
    // the recorder has copied them
    out.release(true)
  }

  /** `ORDER BY embedding <-> $1 LIMIT $2`: the top-k is only known at Bind */
  private boundTopK(op: Operation, bind: BindMessage): Operation {
    const n = op.facts.topKParam
    if (typeof n !== 'number') return op
    const v = bind.params[n - 1]
    // LIMIT NULL is no limit: the top-k stays unknown (unbounded)
    if (!v) return op
    const format = bind.paramFormats.length === 1 ? bind.paramFormats[0] : (bind.paramFormats[n - 1] ?? 0)
    let k: number | undefined
    if (format === 0) k = Number(v.toString('utf8').trim())
    else if (v.length === 8) k = Number(v.readBigInt64BE())
    else if (v.length === 4) k = v.readInt32BE()
    else if (v.length === 2) k = v.readInt16BE()
    return k !== undefined && Number.isFinite(k) ? this.classifier.withTopK(op, k) : op
  }

  private classify(sql: string): Operation {
    try {
      // under column rules, lineage reads this text's own parse tree: no classification shared by skeleton
      return this.classifier.classifySql(sql, this.model.classifyContext(), hasColumnRules(this.session.masks) ? EXACT : undefined)
    } catch (err) {
      // fail closed: an operation that could not be understood is blocked by policy
      return {
        protocol: 'postgres',
        class: 'admin',
        resources: [],
        statement: '',
        fingerprint: '',
        statements: [],
        facts: {},
        error: `could not classify: ${(err as Error).message}`,
      }
    }
  }

  /** a statement that fails to parse upstream; its ErrorResponse is replaced by ours */
  private marker(label: string, sqlstate: string, message: string, extra: Record<string, string> = {}): string {
    const marker = `PORTCULLIS_REFUSED_${randomBytes(8).toString('hex')}`
    void label
    this.replacements.set(marker, { error: serializeErrorResponse('ERROR', sqlstate, message, extra), batch: this.sentBatches + 1 })
    return marker
  }

  // ---- the session model ---------------------------------------------------------------------

  /** a message sent upstream that the server answers; a new head may carry its portal's row shape */
  private expect(e: Expectation): boolean {
    // after an error the server skips everything up to the batch's Sync: nothing answers these
    if (this.model.skips(e)) return false
    if (this.model.push(e)) this.headChanged()
    return true
  }

  /**
   * A Query goes upstream: it drops the unnamed statement and portal whatever it runs. Sent after
   * an error in the extended batch it is part of, the server skips it: no ReadyForQuery comes.
   */
  private sentQuery(e: Expectation): boolean {
    if (this.model.skips(e)) {
      this.receivedBatches++
      return false
    }
    this.model.simpleQuery()
    this.expect(e)
    return true
  }

  /** the frame is handled again once batch `batch` has been answered */
  private waitForBatch(batch: number, frame: Frame): Promise<void> {
    this.inbox.unshift(frame)
    return new Promise(resolve => (this.batchWaiter = { batch, resolve }))
  }

  /**
   * Under a mask plan, the rows of the Execute now at the head take its portal's row shape
   * (from a Describe answered before them); unknown, they are never forwarded.
   */
  private headChanged(): void {
    if (this.session.masks.empty) return
    const h = this.model.peek()
    if (h !== undefined && h.code === 0x45 && h.portal !== undefined) this.rowMask = h.portal.shapeKnown ? h.portal.mask : UNKNOWN_SHAPE
  }

  /** the model no longer says what the server holds: nothing more can be decided with certainty */
  private outOfStep(what: string): void {
    this.fatal('08P01', `the gateway lost track of the session's statements and portals (${what})`)
  }

  /**
   * A Bind of a statement, or an Execute of a portal, the gateway does not know: refused with
   * Postgres's own SQLSTATE; the upstream skips the rest of the batch up to Sync.
   */
  private refuseUnknown(sqlstate: string, message: string): void {
    const batch = this.sentBatches + 1
    const op: Operation = { protocol: 'postgres', class: 'admin', resources: [], statement: '', fingerprint: '', statements: [], facts: {}, error: message }
    this.ops.push({ kind: 'E', op, decision: undefined, batch, start: performance.now(), rows: 0, bytes: 0, masked: 0, done: false, error: message })
    this.sendMarkerParse(this.marker('refused', sqlstate, message), batch)
  }

  /** a Parse of the unnamed statement that fails: the server drops its unnamed statement too */
  private sendMarkerParse(marker: string, batch: number): void {
    this.expect({ code: 0x50, batch, change: { ns: 'S', name: '', statement: undefined } })
    this.toUpstream(serializeParse('', marker))
    this.discardUntilSync = true
  }

  /** returns a promise only when the statement waits for an approval */
  private decideAndSend(kind: 'Q' | 'E', what: string | Operation, raw: Buffer, portal?: Portal, portalName?: string): Promise<void> | undefined {
    const start = performance.now()
    const sql = typeof what === 'string' ? what : undefined
    const op = typeof what === 'string' ? this.classify(what) : what
    const batch = this.sentBatches + 1
    const pending: PendingOp = { kind, op, decision: undefined, batch, start, rows: 0, bytes: 0, masked: 0, done: false, portal, portalName, sql }
    // an empty query string runs nothing: Postgres answers EmptyQueryResponse
    if (sql !== undefined && sql.trim() === '') {
      this.sentBatches++
      this.sentQuery(QUERY)
      this.toUpstream(raw)
      return undefined
    }
    try {
      this.session.assertAlive()
    } catch (err) {
      this.fatal(sqlstateOf(err), (err as Error).message)
      return undefined
    }
    // the request is in the recording before its decision
    this.recordRequests(kind === 'E')
    // a statement over a masked column whose output the gateway cannot follow is refused before it runs
    const refused = this.lineageCheck(pending)
    if (refused) return refused.then(() => this.decideNext(pending, raw))
    return this.decideNext(pending, raw)
  }

  /** the catalog lookups an op's lineage needs, done ahead (failures are met again at Execute) */
  private lineageLookups(op: Operation, round = 0): Promise<void> | undefined {
    const l = rowLineage(op, this.session.masks, this.catalog, this.model.classifyContext())
    if (!(l instanceof Promise) || round >= 8) return undefined
    return l.then(
      () => this.lineageLookups(op, round + 1),
      () => undefined,
    )
  }

  /** undefined when the check is done; else a promise that settles when it is (catalog lookup) */
  private lineageCheck(pending: PendingOp): Promise<void> | undefined {
    const plan = this.session.masks
    let why: string | undefined | Promise<void>
    try {
      why = lineageRefusal(pending.op, plan, this.catalog, this.model.classifyContext())
    } catch (err) {
      why = `masking: cannot follow the statement's columns: ${(err as Error).message}`
    }
    if (why instanceof Promise) {
      return why.then(
        () => this.lineageCheck(pending),
        err => {
          pending.op = { ...pending.op, class: 'admin', error: `masking: ${(err as Error).message}` }
        },
      )
    }
    if (why !== undefined) pending.op = { ...pending.op, class: 'admin', error: why }
    else {
      const l = rowLineage(pending.op, plan, this.catalog, this.model.classifyContext())
      if (l && !(l instanceof Promise)) pending.lineage = l
    }
    return undefined
  }

  private decideNext(pending: PendingOp, raw: Buffer): Promise<void> | undefined {
    // a statement that could change the session's scope is refused whatever the rules say (scope.ts)
    const outOfScope = scopeRefusal(pending.op, this.session.scope, this.scoped)
    if (outOfScope) pending.op = { ...pending.op, class: 'admin', error: outOfScope }
    const op = pending.op
    let decision: Decision | undefined
    try {
      const estimator = this.texts.estimator(pending.kind, op, pending.sql, pending.portal, false)
      decision = estimator ? this.session.decideNow(op, { estimator }) : this.session.decideNow(op)
    } catch (err) {
      this.send(pending, raw, undefined, refusalOf(err))
      return undefined
    }
    if (decision) {
      this.send(pending, raw, decision)
      return undefined
    }
    return this.waitForApproval(pending, raw)
  }

  private async waitForApproval(pending: PendingOp, raw: Buffer): Promise<void> {
    let decision: Decision | undefined
    let refusal: Refusal | undefined
    const controller = new AbortController()
    this.pendingDecision = controller
    try {
      const defer = this.session.target.options.approvalMode === 'defer'
      const estimator = this.texts.estimator(pending.kind, pending.op, pending.sql, pending.portal, true)
      decision = await this.session.decide(pending.op, {
        signal: controller.signal,
        defer,
        sent: () => statementAsSent(pending, raw, this.session.masks, this.classifier.dependsOnSession(pending.op)),
        ...(estimator ? { estimator } : {}),
        onPending: request => {
          if (defer) return
          this.toClient(
            serializeNoticeResponse(`statement held for approval: request ${request.id}`, {
              D: `rule ${request.rule} requires approval by ${request.approvers.join(', ') || 'an approver'}`,
              H: `approve with: portcullis approvals approve ${request.id}`,
            }),
          )
        },
      })
    } catch (err) {
      refusal = refusalOf(err)
    } finally {
      if (this.pendingDecision === controller) this.pendingDecision = undefined
    }
    if (this.closed) return
    this.send(pending, raw, decision, refusal)
  }

  /** the statement goes upstream, or in its place a marker whose error becomes the refusal */
  private send(pending: PendingOp, raw: Buffer, decision: Decision | undefined, refusal?: Refusal): void {
    const kind = pending.kind
    pending.decision = decision
    if (decision?.deferred) refusal = deferredRefusal(decision)
    else if (decision && decision.action !== 'allow') {
      const rule = decision.rule ?? 'default'
      refusal = {
        sqlstate: '42501',
        message: decision.approvalId
          ? `blocked by rule ${rule}: ${decision.reason} (approval request ${decision.approvalId})`
          : `blocked by rule ${rule}: ${decision.reason}`,
        detail: decision.approvalId ? `approval request ${decision.approvalId}` : undefined,
      }
    }
    if (refusal) {
      pending.error = refusal.message
      const marker = this.marker('refused', refusal.sqlstate, refusal.message, refusal.detail ? { D: refusal.detail } : {})
      if (kind === 'Q') {
        this.sentBatches++
        this.sentQuery(QUERY)
        this.toUpstream(serializeQuery(marker))
      } else this.sendMarkerParse(marker, pending.batch)
      this.ops.push(pending)
      return
    }
    // what its statements change (SQL PREPARE, DECLARE, …) takes effect at their CommandComplete
    const effects = statementEffects(pending.op, this.classifier.statementBody)
    const copy = pending.op.facts.copy
    if (typeof copy === 'string' && copy.includes('from-stdin')) this.copyInPending = true
    if (kind === 'Q') {
      this.sentBatches++
      if (!this.sentQuery(effects ? { code: 0x51, batch: pending.batch, effects } : QUERY)) pending.error = 'skipped after an earlier error in the batch'
    } else {
      const portal = pending.portal!
      const plan = this.session.masks
      if (plan.empty) this.expect(effects ? { code: 0x45, batch: pending.batch, effects } : EXECUTE)
      else {
        // masking never depends on the client's Describe: without one of its own in this batch (or
        // a row shape already known for this portal), the gateway asks for the RowDescription
        const known = portal.shapeKnown && portal.shapePlan === plan && portal.shapeGeneration === this.catalog.generation
        if (!known && portal.describedBatch !== pending.batch) {
          this.expect({ code: 0x44, batch: pending.batch, portal, injected: true })
          this.toUpstream(serializeDescribePortal(pending.portalName!))
        }
        const e: Expectation = { code: 0x45, batch: pending.batch, portal }
        if (effects) e.effects = effects
        this.expect(e)
      }
    }
    this.ops.push(pending)
    this.toUpstream(raw)
  }

  // An admin statement may change how the server reads SQL or who it runs as (SET, set_config, a
  // DO block, a write to pg_settings), and the server reports that only with its answer: nothing
  // the client pipelined behind one goes upstream before that answer — with its ParameterStatus,
  // which may end the session (handleUpstreamFrame) — has come back. Within one extended batch
  // the server would read the next Parse before any report: a statement after an admin Execute
  // and before Sync is refused.

  /** after an admin Query (the op decideAndSend just queued): the pump waits for the upstream's answers */
  private settleAfterAdmin(waited: Promise<void> | undefined): Promise<void> | undefined {
    const admin = () => this.ops[this.ops.length - 1]?.op.class === 'admin'
    if (!waited) return admin() ? this.answered() : undefined
    return waited.then(() => {
      if (!admin()) return
      this.flushUpstream()
      return this.answered()
    })
  }

  /** resolves once every batch sent upstream has its ReadyForQuery (or the server asks for COPY data) */
  private answered(): Promise<void> {
    if (this.closed || this.receivedBatches >= this.sentBatches) return Promise.resolve()
    return new Promise(resolve => (this.onAnswered = resolve))
  }

  private settled(copyIn: boolean): void {
    const resolve = this.onAnswered
    if (resolve && (copyIn || this.receivedBatches >= this.sentBatches)) {
      this.onAnswered = undefined
      resolve()
    }
  }

  private refuseAfterAdmin(kind: 'Q' | 'E', op: Operation, raw: Buffer): undefined {
    this.recordRequests(kind === 'E')
    const pending: PendingOp = { kind, op, decision: undefined, batch: this.sentBatches + 1, start: performance.now(), rows: 0, bytes: 0, masked: 0, done: false }
    this.send(pending, raw, undefined, {
      sqlstate: '42501',
      message: 'a statement after an admin statement in the same batch is refused: the admin statement may change how the server reads SQL (send Sync after it)',
    })
    return undefined
  }

  // ---- upstream → client --------------------------------------------------------------------

  private onUpstreamData(chunk: Buffer): void {
    let frames: Frame[]
    try {
      frames = this.upstreamFramer.push(chunk)
    } catch (err) {
      this.fatal('08P01', `upstream: ${(err as Error).message}`)
      return
    }
    if (this.upstreamBusy || this.upstreamQueue.length > 0) {
      for (const f of frames) this.upstreamQueue.push(f)
      this.drainUpstream()
      return
    }
    // fast path: no lookup pending, handle in place (until a frame ends the session)
    for (let i = 0; i < frames.length && !this.closed; i++) {
      const wait = this.handleUpstreamFrame(frames[i])
      if (wait) {
        for (let j = i + 1; j < frames.length; j++) this.upstreamQueue.push(frames[j])
        this.flushResponse()
        this.waitThenDrain(wait)
        return
      }
    }
    this.flushResponse()
  }

  private drainUpstream(): void {
    if (this.upstreamBusy) return
    while (this.upstreamQueue.length > 0 && !this.closed) {
      const wait = this.handleUpstreamFrame(this.upstreamQueue.shift()!)
      if (wait) {
        this.flushResponse()
        this.waitThenDrain(wait)
        return
      }
    }
    this.flushResponse()
  }

  private waitThenDrain(wait: Promise<void>): void {
    this.upstreamBusy = true
    this.pause('upstream', 'lookup')
    wait.then(
      () => {
        this.upstreamBusy = false
        this.resume('upstream', 'lookup')
        this.drainUpstream()
      },
      err => this.fatal('XX000', `masking: ${(err as Error).message}`),
    )
  }

  private current(): PendingOp | undefined {
    for (const p of this.ops) if (!p.done) return p
    return undefined
  }

  /** queued for the client; written and recorded together at the end of the upstream read batch */
  private emit(buf: Buffer): void {
    this.toClientOut.add(buf)
    if (this.toClientOut.bytes >= OUT_FLUSH_BYTES) this.flushResponse()
  }

  /**
   * One socket write and one bounded 'response' record per batch: the record holds exactly the
   * bytes the client was sent (after masking), whole messages only.
   */
  private flushResponse(): void {
    const out = this.toClientOut
    const buf = out.take()
    if (buf === undefined) return
    // a batch built in the box's buffer comes back to it once written (the recorder copies it)
    this.toClient(buf, out.lendToWrite())
    this.session.record('response', { bytes: buf, rows: this.responseRows })
    this.responseRows = 0
  }

  /** returns a promise when the frame needs a catalog lookup first (it is then re-run) */
  private handleUpstreamFrame(frame: Frame): Promise<void> | undefined {
    // nothing follows an upstream FATAL; whatever might is not the client's any more
    if (this.closed) return undefined
    const plan = this.session.masks
    switch (frame.code) {
      case 0x44: {
        // D DataRow, or a run of them (Frame.count)
        const p = this.current()
        const n = frame.count ?? 1
        if (!this.rowMask) {
          // nothing to mask: the run passes as the bytes it came in
          if (p) {
            p.rows += n
            p.bytes += frame.raw.length
          }
          this.responseRows += n
          this.emit(frame.raw)
          return undefined
        }
        // each row is masked into the batch buffer: no Buffer per row
        const all = frame.raw
        const out = this.toClientOut
        const mask = this.rowMask
        if (mask === UNKNOWN_SHAPE) {
          // fail closed: rows whose columns the gateway cannot tell apart are never forwarded
          this.fatal('42501', 'result rows of unknown shape under a mask plan: refused')
          return undefined
        }
        let masked = 0
        let bytes = 0
        for (let off = 0; off < all.length; ) {
          const end = off + 1 + all.readInt32BE(off + 1)
          const before = out.bytes
          masked += maskDataRowTo(all, off, end, mask, plan, out)
          bytes += out.bytes - before
          this.responseRows++
          off = end
          if (out.bytes >= OUT_FLUSH_BYTES) this.flushResponse()
        }
        if (p) {
          p.masked += masked
          p.rows += n
          p.bytes += bytes
        }
        return undefined
      }
      case 0x54: {
        // T RowDescription
        this.rowMask = undefined
        if (!plan.empty) {
          // the statement's column lineage: what a computed column is made of (column-lineage.ts)
          const p = this.current()
          const lineage = p ? (p.lineage ?? rowLineage(p.op, plan, this.catalog, this.model.classifyContext())) : undefined
          if (lineage instanceof Promise) {
            this.upstreamQueue.unshift(frame)
            return lineage
          }
          // a prepared statement run again describes the same columns: its mask is built once
          const last = this.lastRowDescription
          if (last !== undefined && last.plan === plan && last.generation === this.catalog.generation && last.lineage === lineage && last.raw.equals(frame.raw)) {
            this.rowMask = last.mask
          } else {
            const fields = parseRowDescription(new BufferReader(frame.raw, 5))
            const missing = unresolvedTables(fields, this.catalog)
            const types = unresolvedTypes(fields, plan, this.catalog)
            if (missing.length > 0 || types.length > 0) {
              this.upstreamQueue.unshift(frame)
              return this.catalog.resolve(missing, types)
            }
            this.rowMask = buildRowMask(fields, plan, this.catalog, lineage)
            // a copy: a view would keep the whole read chunk alive
            this.lastRowDescription = { raw: Buffer.from(frame.raw), plan, generation: this.catalog.generation, lineage, mask: this.rowMask }
          }
        }
        // the answer to a Describe: a portal keeps its row shape for the Executes of it
        if (this.described(this.rowMask)) return undefined
        this.emit(frame.raw)
        return undefined
      }
      case 0x6e: // n NoData
        this.rowMask = undefined
        if (this.described(undefined)) return undefined
        this.emit(frame.raw)
        return undefined
      case 0x31: // 1 ParseComplete
      case 0x32: // 2 BindComplete
      case 0x33: {
        // 3 CloseComplete: the change the message asked for is now the server's
        const e = this.model.shift()
        const sent = frame.code === 0x31 ? 0x50 : frame.code === 0x32 ? 0x42 : 0x43
        if (e === undefined || e.code !== sent || e.change === undefined) {
          this.outOfStep(`unexpected ${String.fromCharCode(frame.code)}`)
          return undefined
        }
        this.model.apply(e.change)
        this.headChanged()
        this.emit(frame.raw)
        return undefined
      }
      case 0x43: // C CommandComplete
      case 0x49: // I EmptyQueryResponse
      case 0x73: {
        // s PortalSuspended
        this.rowMask = undefined
        this.copyOut = undefined
        const p = this.current()
        // SELECT and FETCH rows were counted as DataRows: their tag needs no decoding
        if (frame.code === 0x43 && !isSelectOrFetchTag(frame.raw)) {
          const tag = new BufferReader(frame.raw, 5).cstring()
          if (p) {
            const n = commandTagRows(tag)
            if (n !== undefined) p.rows += n
          }
          // PREPARE, DEALLOCATE, DECLARE CURSOR, CLOSE CURSOR, DISCARD ALL change the model now
          if (!this.model.commandComplete(tag)) {
            this.outOfStep(`unexpected ${tag}`)
            return undefined
          }
        } else if (!this.model.commandComplete(undefined)) {
          this.outOfStep('unexpected command completion')
          return undefined
        }
        this.headChanged()
        if (this.copyOutRefused) {
          this.copyOutRefused = false
          const message = 'COPY in binary format cannot be masked: use COPY … TO STDOUT in text or CSV format'
          if (p) p.error = message
          if (p && p.kind === 'E') this.complete(p)
          this.emit(serializeErrorResponse('ERROR', '42501', message))
          return undefined
        }
        if (p && p.kind === 'E') this.complete(p)
        this.emit(frame.raw)
        return undefined
      }
      case 0x45: {
        // E ErrorResponse
        this.rowMask = undefined
        this.copyOut = undefined
        const fields = parseNoticeFields(new BufferReader(frame.raw, 5))
        const marker = /"(PORTCULLIS_REFUSED_[0-9a-f]{16})"/.exec(fields.M ?? '')
        const replacement = marker ? this.replacements.get(marker[1]) : undefined
        const p = this.current()
        // the message that failed changes nothing (but a failed Parse of the unnamed statement);
        // the server skips the rest of its batch, a Query in it included
        const skipped = this.model.error()
        if (skipped > 0) {
          for (const q of this.ops) if (q.kind === 'Q' && !q.done && q.batch > this.receivedBatches && q.batch <= this.receivedBatches + skipped) q.error = 'skipped after an earlier error in the batch'
          this.receivedBatches += skipped
        }
        this.headChanged()
        if (replacement) {
          this.replacements.delete(marker![1])
          if (p && p.kind === 'E') this.complete(p)
          this.emit(replacement.error)
          return undefined
        }
        if (p) {
          p.error = fields.M
          if (p.kind === 'E') this.complete(p)
        }
        this.emitNotice('E', frame.raw, fields)
        // FATAL / PANIC: the backend ends the connection (pg_terminate_backend, a session timeout);
        // its error is the client's one and only, and the session ends with it
        const severity = fields.V ?? fields.S
        if (severity === 'FATAL' || severity === 'PANIC') {
          this.session.record('event', { type: 'upstream-fatal', sqlstate: fields.C })
          this.finishGracefully()
        }
        return undefined
      }
      case 0x4e: // N NoticeResponse
        this.emitNotice('N', frame.raw, parseNoticeFields(new BufferReader(frame.raw, 5)))
        return undefined
      case 0x47: // G CopyInResponse
        this.receivedBatches += this.model.dropCopySyncs()
        // an admin COPY … FROM STDIN: the pump holds the data until now (settleAfterAdmin)
        this.settled(true)
        this.emit(frame.raw)
        return undefined
      case 0x48: {
        // H CopyOutResponse: COPY … TO STDOUT rows are masked like DataRows
        this.copyOut = undefined
        if (!plan.empty) {
          const p = this.current()
          const methods = p ? this.copyColumns(p.op) : undefined
          if (methods instanceof Promise) {
            this.upstreamQueue.unshift(frame)
            return methods.then(() => undefined)
          }
          if (frame.raw[5] === 0) this.copyOut = { methods }
          else if (plan.hasDetectors || methods === undefined || methods.some(m => m !== undefined)) {
            // binary COPY rows cannot be masked: drop them and answer an error in their place
            this.copyOutRefused = true
            return undefined
          }
        }
        this.emit(frame.raw)
        return undefined
      }
      case 0x63: // c CopyDone
        if (this.copyOutRefused) return undefined
        this.emit(frame.raw)
        return undefined
      case 0x64: {
        // d CopyData
        if (this.copyOutRefused) return undefined
        let raw = frame.raw
        const p = this.current()
        if (this.copyOut) {
          const r = maskCopyRow(raw.subarray(5), this.copyOut.methods, plan)
          if (r.masked > 0) {
            const out = Buffer.allocUnsafe(5 + r.data.length)
            out[0] = 0x64
            out.writeInt32BE(4 + r.data.length, 1)
            r.data.copy(out, 5)
            raw = out
            if (p) p.masked += r.masked
          }
        }
        if (p) p.bytes += raw.length
        this.emit(raw)
        return undefined
      }
      case 0x5a: {
        // Z ReadyForQuery
        this.rowMask = undefined
        this.copyOut = undefined
        this.txStatus = String.fromCharCode(frame.raw[5]) as TransactionStatus
        this.receivedBatches++
        if (!this.model.ready(frame.raw[5])) {
          this.outOfStep('unexpected ReadyForQuery')
          return undefined
        }
        this.headChanged()
        const waiter = this.batchWaiter
        if (waiter !== undefined && this.receivedBatches >= waiter.batch) {
          this.batchWaiter = undefined
          waiter.resolve()
        }
        this.settled(false)
        let open = 0
        for (const p of this.ops) {
          if (p.batch <= this.receivedBatches && !p.done) this.complete(p, p.kind === 'E' && !p.error ? 'skipped after an earlier error in the batch' : undefined)
          if (!p.done) open++
        }
        if (open === 0) this.ops.length = 0
        else if (open < this.ops.length) this.ops = this.ops.filter(p => !p.done)
        if (this.replacements.size > 0) for (const [m, r] of this.replacements) if (r.batch <= this.receivedBatches) this.replacements.delete(m)
        this.emit(frame.raw)
        this.flushResponse()
        return undefined
      }
      case 0x53: {
        // S ParameterStatus: a server that now reads SQL unlike the gateway's parser, or runs the
        // session as another role, ends the session, whatever statement did it (even one the
        // classifier could not see, like a function whose body calls set_config)
        const body = new BufferReader(frame.raw, 5)
        const why = this.serverSettings.report(body.cstring(), body.cstring())
        if (why) this.fatal('42501', why)
        else this.emit(frame.raw)
        return undefined
      }
      default:
        // ParseComplete, BindComplete, NotificationResponse, CopyIn… pass through
        this.emit(frame.raw)
        return undefined
    }
  }

  /**
   * A RowDescription or NoData that answers a Describe: a portal's row shape is kept; the answer to
   * a Describe the gateway added is not the client's (true: not forwarded).
   */
  private described(mask: RowMask | undefined): boolean {
    const h = this.model.peek()
    if (h === undefined || h.code !== 0x44) return false
    this.model.shift()
    const portal = h.portal
    if (portal !== undefined) {
      portal.shapeKnown = true
      portal.mask = mask
      portal.shapePlan = this.session.masks
      portal.shapeGeneration = this.catalog.generation
    }
    this.headChanged()
    return h.injected === true
  }

  private copyColumnCache = new Map<string, (MaskMethod | undefined)[] | undefined>()

  /** column rules by position for `COPY table [(cols)] TO STDOUT`; undefined: detectors only */
  private copyColumns(op: Operation): (MaskMethod | undefined)[] | undefined | Promise<unknown> {
    // COPY (query) / COPY t TO STDOUT, also after other statements in one Query: by column lineage
    if (hasColumnRules(this.session.masks) && hasCopyResult(op)) return copyMethods(op, this.session.masks, this.catalog, this.model.classifyContext())
    const key = op.statement
    if (this.copyColumnCache.has(key)) return this.copyColumnCache.get(key)
    const m = /^\s*copy\s+((?:"[^"]+"|[\w$]+)(?:\.(?:"[^"]+"|[\w$]+))?)\s*(?:\(([^)]*)\))?\s+to\s+stdout/i.exec(op.statement)
    if (!m) {
      this.copyColumnCache.set(key, undefined)
      return undefined
    }
    return this.catalog.relationColumns(m[1]).then(cols => {
      const names = m[2] ? m[2].split(',').map(s => s.trim().replace(/^"|"$/g, '')) : cols.map(c => c.column)
      const plan = this.session.masks
      const byName = new Map(cols.map(c => [c.column, c]))
      this.copyColumnCache.set(
        key,
        names.map(n => {
          const c = byName.get(n)
          return c ? plan.forColumn(c.schema, c.table, c.column) : plan.forColumn(undefined, undefined, n)
        }),
      )
    })
  }

  private emitNotice(code: 'E' | 'N', raw: Buffer, fields: Record<string, string>): void {
    const plan = this.session.masks
    const n = plan.empty ? 0 : maskNoticeFields(fields, plan)
    if (n > 0) {
      const p = this.current()
      if (p) p.masked += n
      this.emit(serializeNoticeFields(code, fields))
    } else this.emit(raw)
  }

  private complete(p: PendingOp, error?: string): void {
    if (p.done) return
    p.done = true
    this.audit(p, p.error ?? error)
  }

  private audit(p: PendingOp, error?: string): void {
    const d = p.decision
    this.session.audit({
      class: p.op.class,
      resources: p.op.resources,
      fingerprint: p.op.fingerprint,
      statement: p.op.statement,
      decision: d?.action ?? 'block',
      rule: d?.rule ?? null,
      approvalId: d?.approvalId,
      rows: p.rows,
      bytes: p.bytes,
      masked: p.masked,
      durationMs: Math.round((performance.now() - p.start) * 1000) / 1000,
      error,
    })
  }
}
