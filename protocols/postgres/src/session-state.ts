// The session's prepared statements and portals, as the server holds them.
//
// Postgres has one namespace for statements (protocol Parse and SQL PREPARE) and one for portals
// (protocol Bind and SQL DECLARE). The model changes only when the server confirms a change:
// ParseComplete, BindComplete, CloseComplete, or the CommandComplete of PREPARE / DEALLOCATE [ALL] /
// DECLARE CURSOR / CLOSE CURSOR [ALL] / DISCARD ALL. Until then a change waits in the queue of
// expectations: one entry per message sent upstream that the server answers, in the order sent, so
// each response (and each ErrorResponse, which skips the rest of its batch up to Sync) is matched
// to the message it answers.
//
// A message that names a statement or portal is decided at send time, before the server has
// answered what came before it. Inside one batch (up to Sync) the prediction is exact: an error
// makes the server skip the rest of the batch, so a later message runs only if every change before
// it in the batch took effect. A change in an earlier batch still unanswered may or may not take
// effect: the caller waits for that batch's ReadyForQuery (lookup returns its number).
import type { Operation, StatementInfo } from '@portcullis/core/types'
import { PortcullisError } from '@portcullis/core/errors'
import type { BufferReader } from './buffer-reader.ts'
import type { RowMask } from './masking.ts'

export interface Portal {
  /** what an Execute of it runs: the bound statement's Operation, or the cursor's query */
  readonly op: Operation
  /** DECLARE … WITH HOLD: outlives its transaction */
  readonly hold: boolean
  /** the batch in which the client sent its own Describe of this portal */
  describedBatch: number
  /** set once a Describe of this portal was answered (RowDescription or NoData) */
  shapeKnown: boolean
  /** the Bind that made it and the query text of its statement: an approval's statement as sent */
  bind?: Buffer | undefined
  text?: StatementText | undefined
  /** the RowMask its RowDescription gave; undefined: nothing to mask */
  mask: RowMask | undefined
  /** the plan and catalog generation the mask was built under */
  shapePlan: unknown
  shapeGeneration: number
}

/** what a Parse said of its statement: the query text and the parameter type OIDs it declared */
export interface StatementText {
  readonly query: string
  readonly paramTypes: readonly number[]
}

export function newPortal(op: Operation, hold = false): Portal {
  return { op, hold, describedBatch: -1, shapeKnown: false, bind: undefined, text: undefined, mask: undefined, shapePlan: undefined, shapeGeneration: -1 }
}

/** One change of the model: a name set (statement / portal) or dropped; name '*': the whole namespace. */
export interface Change {
  ns: 'S' | 'P'
  name: string
  statement?: Operation | undefined
  /** a Parse: its query text and parameter types exactly as sent (what an approval binds to; SQL PREPARE has none) */
  text?: StatementText | undefined
  portal?: Portal | undefined
  /** for a SQL statement's change: the CommandComplete tag that confirms it */
  tag?: string
}

/** A message sent upstream that the server will answer. */
export interface Expectation {
  /** the frontend message: P B C D E S Q */
  readonly code: number
  readonly batch: number
  /** Parse, Bind, Close: what it changes once confirmed */
  change?: Change
  /** Describe 'P' / Execute under a mask plan: the portal whose row shape the rows need */
  portal?: Portal | undefined
  /** a Describe the gateway added: its answer is not the client's */
  injected?: boolean
  /** Query / Execute: the changes of each statement, by statement index (SQL PREPARE, DECLARE …) */
  effects?: (Change[] | undefined)[]
  /** the index of the statement whose CommandComplete comes next */
  next?: number
}

const P = 0x50
const B = 0x42
const D = 0x44
const E = 0x45
const S = 0x53
const Q = 0x51

// expectations that carry nothing are shared: no allocation per message on the hot path
export const SYNC: Expectation = Object.freeze({ code: S, batch: 0 })
export const EXECUTE: Expectation = Object.freeze({ code: E, batch: 0 })
export const QUERY: Expectation = Object.freeze({ code: Q, batch: 0 })
export const DESCRIBE: Expectation = Object.freeze({ code: D, batch: 0 })
/** a Sync sent while a COPY FROM STDIN may be reading: ignored by the server if it is */
export const COPY_SYNC: Expectation = Object.freeze({ code: S, batch: 0 })

/** CommandComplete tags that change the model */
const MODEL_TAGS = new Set(['PREPARE', 'DEALLOCATE', 'DEALLOCATE ALL', 'DECLARE CURSOR', 'CLOSE CURSOR', 'CLOSE CURSOR ALL', 'DISCARD ALL'])

/**
 * What each statement of an operation changes once its CommandComplete arrives, by statement
 * index; undefined when the operation changes no name (the common case: nothing allocated).
 */
export function statementEffects(op: Operation, bodyOf: (st: StatementInfo) => Operation | undefined): (Change[] | undefined)[] | undefined {
  const f = op.facts
  if (f.prepare === undefined && f.deallocate === undefined && f.declare === undefined && f.closeCursor === undefined) return undefined
  const out: (Change[] | undefined)[] = []
  for (const st of op.statements) {
    const facts = st.facts
    let changes: Change[] | undefined
    if (facts && typeof facts.prepare === 'string') {
      // a PREPARE whose body we did not classify is stored as no statement: refused when bound
      changes = [{ ns: 'S', name: facts.prepare, statement: bodyOf(st), tag: 'PREPARE' }]
    } else if (facts?.discard === 'all') {
      changes = [
        { ns: 'S', name: '*', tag: 'DISCARD ALL' },
        { ns: 'P', name: '*', tag: 'DISCARD ALL' },
      ]
    } else if (facts && typeof facts.deallocate === 'string') {
      const all = facts.deallocate === '*'
      changes = [{ ns: 'S', name: facts.deallocate, tag: all ? 'DEALLOCATE ALL' : 'DEALLOCATE' }]
    } else if (facts && typeof facts.declare === 'string') {
      const body = bodyOf(st)
      changes = [{ ns: 'P', name: facts.declare, portal: body ? newPortal(body, facts.declareHold === true) : undefined, tag: 'DECLARE CURSOR' }]
    } else if (facts && typeof facts.closeCursor === 'string') {
      const all = facts.closeCursor === '*'
      changes = [{ ns: 'P', name: facts.closeCursor, tag: all ? 'CLOSE CURSOR ALL' : 'CLOSE CURSOR' }]
    }
    out.push(changes)
  }
  return out
}

export class SessionModel {
  /** confirmed statements: protocol-named and SQL-PREPAREd, one namespace */
  readonly statements = new Map<string, Operation>()
  /** the query text of each Parsed statement in `statements`, exactly as sent */
  readonly texts = new Map<string, StatementText>()
  /** confirmed portals and cursors, one namespace */
  readonly portals = new Map<string, Portal>()
  /** portal name → its Operation, for the classifier (ClassifyContext.cursors) */
  readonly cursors = new Map<string, Operation>()

  private q: Expectation[] = []
  private head = 0
  /** expectations in the queue that carry a change: a lookup scans only when there are some */
  private changes = 0
  /** …of statements, of portals (a SQL statement's effects count for both) */
  private statementChanges = 0
  private portalChanges = 0

  private count(e: Expectation, n: number): void {
    if (e.change) {
      this.changes += n
      if (e.change.ns === 'S') this.statementChanges += n
      else this.portalChanges += n
    } else if (e.effects) {
      this.changes += n
      this.statementChanges += n
      this.portalChanges += n
    }
  }

  /** set by error() when the failed batch's Sync is still to be sent */
  private skippingUntilSync = false

  /** an earlier message of the batch now being sent failed: the server skips the rest up to its Sync */
  get skippingToSync(): boolean {
    return this.skippingUntilSync
  }

  push(e: Expectation): boolean {
    this.count(e, 1)
    this.q.push(e)
    return this.q.length - this.head === 1
  }

  peek(): Expectation | undefined {
    return this.head < this.q.length ? this.q[this.head] : undefined
  }

  shift(): Expectation | undefined {
    if (this.head >= this.q.length) return undefined
    const e = this.q[this.head]!
    this.q[this.head++] = SYNC
    this.count(e, -1)
    if (this.head === this.q.length) {
      this.q.length = 0
      this.head = 0
    } else if (this.head >= 1024) {
      this.q = this.q.slice(this.head)
      this.head = 0
    }
    return e
  }

  /**
   * CopyInResponse: the server reads CopyData up to CopyDone / CopyFail and ignores the Syncs
   * it reads meanwhile (libpq sends one after Execute). They are dropped here; returns how many.
   */
  dropCopySyncs(): number {
    let n = 0
    let w = this.head
    for (let i = this.head; i < this.q.length; i++) {
      const e = this.q[i]!
      if (e === COPY_SYNC) n++
      else this.q[w++] = e
    }
    this.q.length = w
    return n
  }

  /** the latest batch before `batch` with a change not yet answered, or 0 */
  lastChangeBefore(batch: number): number {
    if (this.changes === 0) return 0
    for (let i = this.q.length - 1; i >= this.head; i--) {
      const e = this.q[i]!
      if ((e.change || e.effects) && e.batch < batch) return e.batch
    }
    return 0
  }

  /**
   * The statement a message of batch `batch` would find under `name`: its Operation, undefined
   * when there is none, or the number of an earlier batch whose answer decides it (wait for it).
   */
  statement(name: string, batch: number): Operation | number | undefined {
    if (this.statementChanges > 0) {
      const c = this.latestChange('S', name)
      if (c) return this.foundBatch === batch ? c.statement : this.foundBatch
    }
    return this.statements.get(name)
  }

  /** as statement(), the query text a Parse gave it (undefined: SQL PREPARE, or not known) */
  statementText(name: string, batch: number): StatementText | undefined {
    if (this.statementChanges > 0) {
      const c = this.latestChange('S', name)
      if (c) return this.foundBatch === batch ? c.text : undefined
    }
    return this.texts.get(name)
  }

  /** as statement(), for portals */
  portal(name: string, batch: number): Portal | number | undefined {
    if (this.portalChanges > 0) {
      const c = this.latestChange('P', name)
      if (c) return this.foundBatch === batch ? c.portal : this.foundBatch
    }
    return this.portals.get(name)
  }

  /** the batch of the change latestChange() found (no object per lookup) */
  private foundBatch = 0

  private latestChange(ns: 'S' | 'P', name: string): Change | undefined {
    for (let i = this.q.length - 1; i >= this.head; i--) {
      const e = this.q[i]!
      const c = e.change
      if (c) {
        if (c.ns === ns && (c.name === name || c.name === '*')) {
          this.foundBatch = e.batch
          return c
        }
        continue
      }
      const effects = e.effects
      if (!effects) continue
      for (let s = effects.length - 1; s >= 0; s--) {
        const list = effects[s]
        if (!list) continue
        for (let k = list.length - 1; k >= 0; k--) {
          const x = list[k]!
          if (x.ns === ns && (x.name === name || x.name === '*')) {
            this.foundBatch = e.batch
            return x
          }
        }
      }
    }
    return undefined
  }

  apply(c: Change): void {
    if (c.ns === 'S') {
      if (c.name === '*') {
        this.statements.clear()
        this.texts.clear()
      } else if (c.statement) {
        this.statements.set(c.name, c.statement)
        if (c.text !== undefined) this.texts.set(c.name, c.text)
        else this.texts.delete(c.name)
      } else {
        this.statements.delete(c.name)
        this.texts.delete(c.name)
      }
      return
    }
    if (c.name === '*') {
      this.portals.clear()
      this.cursors.clear()
    } else if (c.portal) {
      this.portals.set(c.name, c.portal)
      this.cursors.set(c.name, c.portal.op)
    } else {
      this.portals.delete(c.name)
      this.cursors.delete(c.name)
    }
  }

  /**
   * Statements and cursors by name for the classifier (ClassifyContext.prepared / .cursors), as a
   * message sent now finds them: the confirmed maps with the changes still in the queue applied in
   * order. Exact once the caller has waited for the earlier batches (lastChangeBefore): what is
   * left is its own batch's, which runs only if none of it fails.
   */
  classifyContext(): { prepared: Map<string, Operation>; cursors: Map<string, Operation> } {
    if (this.changes === 0) return this.confirmedContext
    // built only if the classifier asks (a text with EXECUTE, FETCH or MOVE). A class with its
    // getters on the prototype: an object literal with getters made two closures and their
    // context per call, twice per Execute while a Bind waits for its BindComplete (1.7 KB a
    // transaction in pgbench -M prepared)
    return new PredictedContext(this)
  }

  private readonly confirmedContext = { prepared: this.statements, cursors: this.cursors }

  /** the confirmed maps with the queued changes applied (PredictedContext) */
  predicted(): { prepared: Map<string, Operation>; cursors: Map<string, Operation> } {
    const prepared = new Map(this.statements)
    const cursors = new Map(this.cursors)
    const put = (c: Change) => {
      const map = c.ns === 'S' ? prepared : cursors
      const value = c.ns === 'S' ? c.statement : c.portal?.op
      if (c.name === '*') map.clear()
      else if (value) map.set(c.name, value)
      else map.delete(c.name)
    }
    for (let i = this.head; i < this.q.length; i++) {
      const e = this.q[i]!
      if (e.change) put(e.change)
      else if (e.effects) for (const list of e.effects) if (list) for (const c of list) put(c)
    }
    return { prepared, cursors }
  }

  /**
   * The head message failed. A failed Parse of the unnamed statement leaves none (Postgres drops
   * it first); a failed Bind leaves no usable portal of that name (a failed batch ends or aborts
   * its transaction). Named statements and Close are unchanged by a failure.
   */
  failed(e: Expectation): void {
    const c = e.change
    if (!c) return
    if (e.code === P && c.name === '') {
      this.statements.delete('')
      this.texts.delete('')
    } else if (e.code === B) {
      this.portals.delete(c.name)
      this.cursors.delete(c.name)
    }
  }

  /**
   * ErrorResponse: the head failed and the server skips the rest of its batch up to Sync — a
   * Query sent before that Sync too (it gets no ReadyForQuery). Returns how many Queries were
   * skipped: batches that will not be answered.
   */
  error(): number {
    const h = this.peek()
    if (!h || h.code === S) return 0
    // a Query's statements after the error do not run: no CommandComplete comes for them
    if (h.code === Q) return 0
    this.failed(this.shift()!)
    let queries = 0
    for (let n = this.peek(); n && n.code !== S; n = this.peek()) if (this.shift()!.code === Q) queries++
    // the batch's Sync is not sent yet (the gateway was still deciding the rest of it): what it
    // sends until that Sync is skipped by the server too (see skips)
    if (this.peek() === undefined) this.skippingUntilSync = true
    return queries
  }

  /**
   * An ErrorResponse arrived before its batch's Sync was sent: the server skips every message until
   * that Sync, so none of them will be answered. True when `e` is one of those (then not queued).
   */
  skips(e: Expectation): boolean {
    if (!this.skippingUntilSync) return false
    if (e.code !== S) return true
    this.skippingUntilSync = false
    return false
  }

  /**
   * CommandComplete of the head Query / Execute: the changes its statement makes take effect.
   * `tag` is the decoded tag for tags that may change the model, else undefined. Returns false
   * when the server did something the model did not expect (the model is no longer exact).
   */
  commandComplete(tag: string | undefined): boolean {
    const h = this.peek()
    if (!h || (h.code !== Q && h.code !== E)) return tag === undefined || !MODEL_TAGS.has(tag)
    let effect: Change[] | undefined
    if (h.effects) {
      const i = h.next ?? 0
      h.next = i + 1
      effect = h.effects[i]
    }
    const changes = tag !== undefined && MODEL_TAGS.has(tag)
    if (changes !== (effect !== undefined)) return false
    if (effect) {
      for (const c of effect) {
        if (c.tag !== tag) return false
        this.apply(c)
      }
    }
    if (h.code === E) this.shift()
    return true
  }

  /**
   * ReadyForQuery ends the head Sync or Query; outside a transaction block only WITH HOLD cursors
   * remain. False when anything else was still expected (the model is no longer exact).
   */
  ready(status: number): boolean {
    let inStep = true
    for (let e = this.shift(); e; e = this.shift()) {
      if (e.code === S || e.code === Q) break
      inStep = false
    }
    this.transactionEnded(status)
    return inStep
  }

  /** a simple Query drops the unnamed statement and portal (exec_simple_query), whatever it runs */
  simpleQuery(): void {
    this.statements.delete('')
    this.texts.delete('')
    if (this.portals.delete('')) this.cursors.delete('')
  }

  /** outside a transaction block only WITH HOLD cursors remain */
  private transactionEnded(status: number): void {
    if (status !== 0x49 /* I */ || this.portals.size === 0) return
    for (const [name, p] of this.portals) {
      if (p.hold) continue
      this.portals.delete(name)
      this.cursors.delete(name)
    }
  }
}

/**
 * A statement or portal name as the server compares it: bytes. A name that is not valid UTF-8
 * would decode to the same string as another name and the model would confuse the two: refused.
 */
export function readName(r: BufferReader): string {
  const start = r.offset
  const s = r.cstring()
  const len = r.offset - 1 - start
  if (s.includes('\uFFFD') || (s.length !== len && Buffer.byteLength(s) !== len)) {
    throw new PortcullisError('PROTOCOL_ERROR', 'statement and portal names must be valid UTF-8')
  }
  return s
}

/** 'D' Describe of a portal, added by the gateway when it must know a result's row shape */
export function serializeDescribePortal(name: string): Buffer {
  const n = Buffer.byteLength(name)
  const out = Buffer.allocUnsafe(7 + n)
  out[0] = 0x44
  out.writeInt32BE(6 + n, 1)
  out[5] = 0x50
  out.write(name, 6)
  out[6 + n] = 0
  return out
}

/** ClassifyContext as a message sent now finds it (SessionModel.classifyContext), built on first read */
class PredictedContext {
  #model: SessionModel
  #built: { prepared: Map<string, Operation>; cursors: Map<string, Operation> } | undefined
  constructor(model: SessionModel) {
    this.#model = model
  }
  get prepared(): Map<string, Operation> {
    return (this.#built ??= this.#model.predicted()).prepared
  }
  get cursors(): Map<string, Operation> {
    return (this.#built ??= this.#model.predicted()).cursors
  }
}
