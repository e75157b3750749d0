// The extended query protocol: Parse, Bind, Describe, Execute, Close, Sync. What a Bind or an
// Execute names comes from the session model (session-state.ts): statements and portals as the
// server holds them, whoever created them. A name the gateway does not know is refused; under a
// mask plan an Execute whose row shape is not known gets a Describe of ours.
import type { Operation } from '@portcullis/core/types'
import { answered, refuseAfterAdmin } from './admin-barrier.ts'
import { BufferReader } from './buffer-reader.ts'
import type { Connection } from './connection.ts'
import { classify, decideAndSend, lineageLookups, marker } from './decide.ts'
import { expect, waitForBatch } from './expectations.ts'
import { toUpstream } from './flow-control.ts'
import type { Frame } from './framer.ts'
import { type BindMessage, parseBindMessage, parseCloseMessage, parseParseMessage, serializeParse } from './frontend.ts'
import { noteRequest, recordRequests } from './request-records.ts'
import { isOverLimit, STATEMENT_TOO_LONG } from './statement-limit.ts'
import { COPY_SYNC, DESCRIBE, newPortal, readName, SYNC } from './session-state.ts'

/** P Parse: classified now, decided at Execute */
export function parse(c: Connection, frame: Frame): Promise<void> | undefined {
  const parse = parseParseMessage(new BufferReader(frame.raw, 5))
  recordRequests(c)
  c.session.record('request', { type: 'P', name: parse.name, statement: parse.query })
  const name = readName(new BufferReader(frame.raw, 5))
  const classified = classify(c, parse.query)
  // too long to classify: the server never sees it; it fails here as a Parse fails in Postgres
  // (one ErrorResponse, the rest of the batch skipped up to its Sync)
  if (isOverLimit(classified)) return void refuseUnknown(c, STATEMENT_TOO_LONG, classified.error!)
  const op = c.texts.parsed(classified, parse.query, parse.paramTypes)
  if (c.classifier.dependsOnSession(op)) c.sqlOf.set(op, parse.query)
  // the statement exists once ParseComplete says so
  expect(c, { code: 0x50, batch: c.sentBatches + 1, change: { ns: 'S', name, statement: op, text: parse } })
  // the catalog lookups column lineage needs happen before the Parse goes up, not between its
  // Bind and Execute (an upstream that multiplexes sessions onto one backend loses the portal)
  const lookup = lineageLookups(c, op)
  if (lookup) return lookup.then(() => toUpstream(c, frame.raw))
  toUpstream(c, frame.raw)
  return undefined
}

/** B Bind: only the names, unless a LIMIT $n needs its value */
export function bind(c: Connection, frame: Frame): Promise<void> | undefined {
  const r = new BufferReader(frame.raw, 5)
  const portal = readName(r)
  const statement = readName(r)
  const batch = c.sentBatches + 1
  const op = c.model.statement(statement, batch)
  if (typeof op === 'number') return waitForBatch(c, op, frame)
  noteRequest(c, frame)
  // a statement the gateway does not know is never bound: whatever the server holds under
  // that name was not classified
  if (!op) {
    refuseUnknown(c, '26000', statement === '' ? 'unnamed prepared statement does not exist' : `prepared statement "${statement}" does not exist`)
    return undefined
  }
  const bound = typeof op.facts.topKParam !== 'number' ? op : boundTopK(c, op, parseBindMessage(new BufferReader(frame.raw, 5)))
  const sql = bound === op ? undefined : c.sqlOf.get(op)
  if (sql !== undefined) c.sqlOf.set(bound, sql)
  c.texts.derived(bound, op)
  const made = newPortal(bound)
  // what an approval shows and binds to: kept by reference, read only if one is asked for
  made.bind = frame.raw
  made.text = c.model.statementText(statement, batch)
  c.texts.bound(made, frame.raw)
  expect(c, { code: 0x42, batch, change: { ns: 'P', name: portal, portal: made } })
  toUpstream(c, frame.raw)
  return undefined
}

/** E Execute: runs what the model says the portal holds, or nothing */
export function execute(c: Connection, frame: Frame): Promise<void> | undefined {
  const name = readName(new BufferReader(frame.raw, 5))
  const portal = c.model.portal(name, c.sentBatches + 1)
  if (typeof portal === 'number') return waitForBatch(c, portal, frame)
  // `EXECUTE p` / `FETCH c` Parsed earlier: classified again, as p or c stands when it runs
  const sql = portal && c.sqlOf.get(portal.op)
  if (sql !== undefined) {
    const wait = c.model.lastChangeBefore(c.sentBatches + 1)
    if (wait > c.receivedBatches) return waitForBatch(c, wait, frame)
  }
  noteRequest(c, frame)
  if (!portal) {
    refuseUnknown(c, '34000', name === '' ? 'unnamed portal does not exist' : `portal "${name}" does not exist`)
    return undefined
  }
  const op = sql === undefined ? portal.op : classify(c, sql)
  if (c.adminInBatch) return refuseAfterAdmin(c, 'E', op, frame.raw)
  if (op.class === 'admin') c.adminInBatch = true
  return decideAndSend(c, 'E', op, frame.raw, portal, name)
}

/** C Close: the name goes once CloseComplete says so */
export function closeStatement(c: Connection, frame: Frame): undefined {
  noteRequest(c, frame)
  const r = new BufferReader(frame.raw, 5)
  const kind = parseCloseMessage(r).kind
  r.offset = 6
  expect(c, { code: 0x43, batch: c.sentBatches + 1, change: { ns: kind, name: readName(r) } })
  toUpstream(c, frame.raw)
  return undefined
}

/** S Sync: ends an extended batch */
export function sync(c: Connection, frame: Frame): Promise<void> | undefined {
  noteRequest(c, frame)
  c.discardUntilSync = false
  c.sentBatches++
  expect(c, c.copyInPending ? COPY_SYNC : SYNC)
  toUpstream(c, frame.raw)
  if (c.adminInBatch) {
    c.adminInBatch = false
    return answered(c)
  }
  return undefined
}

/** D Describe: under a mask plan, a portal Described by the client needs no Describe of ours */
export function describe(c: Connection, frame: Frame): undefined {
  noteRequest(c, frame)
  if (c.session.masks.empty || frame.raw[5] !== 0x50 /* P */) expect(c, DESCRIBE)
  else {
    const batch = c.sentBatches + 1
    const found = c.model.portal(readName(new BufferReader(frame.raw, 6)), batch)
    const portal = typeof found === 'object' ? found : undefined
    if (portal) portal.describedBatch = batch
    expect(c, { code: 0x44, batch, portal })
  }
  toUpstream(c, frame.raw)
  return undefined
}

/** `ORDER BY embedding <-> $1 LIMIT $2`: the top-k is only known at Bind */
export function boundTopK(c: Connection, op: Operation, bind: BindMessage): Operation {
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
  return k !== undefined && Number.isFinite(k) ? c.classifier.withTopK(op, k) : op
}

/**
 * A Bind of a statement, or an Execute of a portal, the gateway does not know: refused with
 * Postgres's own SQLSTATE; the upstream skips the rest of the batch up to Sync.
 */
export function refuseUnknown(c: Connection, sqlstate: string, message: string): void {
  const batch = c.sentBatches + 1
  const op: Operation = { protocol: 'postgres', class: 'admin', resources: [], statement: '', fingerprint: '', statements: [], facts: {}, error: message }
  c.ops.push({ kind: 'E', op, decision: undefined, batch, start: performance.now(), rows: 0, bytes: 0, masked: 0, done: false, error: message })
  sendMarkerParse(c, marker(c, 'refused', sqlstate, message), batch)
}

/** a Parse of the unnamed statement that fails: the server drops its unnamed statement too */
export function sendMarkerParse(c: Connection, marker: string, batch: number): void {
  expect(c, { code: 0x50, batch, change: { ns: 'S', name: '', statement: undefined } })
  toUpstream(c, serializeParse('', marker))
  c.discardUntilSync = true
}
