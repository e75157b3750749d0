// CommandComplete, EmptyQueryResponse, PortalSuspended, ReadyForQuery: a statement's end, audited.
import { settled } from './admin-barrier.ts'
import { commandTagRows, serializeErrorResponse, type TransactionStatus } from './backend.ts'
import { BufferReader } from './buffer-reader.ts'
import type { Connection, PendingOp } from './connection.ts'
import { batchesAnswered, headChanged } from './expectations.ts'
import { emit, flushResponse } from './flow-control.ts'
import type { Frame } from './framer.ts'
import { outOfStep } from './teardown.ts'
import { current } from './upstream-replies.ts'

/** CommandComplete 'SELECT n' or 'FETCH n' */
function isSelectOrFetchTag(raw: Buffer): boolean {
  return (raw[5] === 0x53 && raw[6] === 0x45 && raw[7] === 0x4c && raw[8] === 0x45 && raw[9] === 0x43 && raw[10] === 0x54) || (raw[5] === 0x46 && raw[6] === 0x45 && raw[7] === 0x54 && raw[8] === 0x43 && raw[9] === 0x48)
}

/** 1 ParseComplete, 2 BindComplete, 3 CloseComplete: the change the message asked for is now the server's */
export function changeComplete(c: Connection, frame: Frame): undefined {
  const e = c.model.shift()
  const sent = frame.code === 0x31 ? 0x50 : frame.code === 0x32 ? 0x42 : 0x43
  if (e === undefined || e.code !== sent || e.change === undefined) {
    outOfStep(c, `unexpected ${String.fromCharCode(frame.code)}`)
    return undefined
  }
  c.model.apply(e.change)
  headChanged(c)
  emit(c, frame.raw)
  return undefined
}

/** C CommandComplete, I EmptyQueryResponse, s PortalSuspended */
export function commandComplete(c: Connection, frame: Frame): undefined {
  c.rowMask = undefined
  c.copyOut = undefined
  const p = current(c)
  // SELECT and FETCH rows were counted as DataRows: their tag needs no decoding
  if (frame.code === 0x43 && !isSelectOrFetchTag(frame.raw)) {
    const tag = new BufferReader(frame.raw, 5).cstring()
    if (p) {
      const n = commandTagRows(tag)
      if (n !== undefined) p.rows += n
    }
    // PREPARE, DEALLOCATE, DECLARE CURSOR, CLOSE CURSOR, DISCARD ALL change the model now
    if (!c.model.commandComplete(tag)) {
      outOfStep(c, `unexpected ${tag}`)
      return undefined
    }
  } else if (!c.model.commandComplete(undefined)) {
    outOfStep(c, 'unexpected command completion')
    return undefined
  }
  headChanged(c)
  if (c.copyOutRefused) {
    c.copyOutRefused = false
    const message = 'COPY in binary format cannot be masked: use COPY … TO STDOUT in text or CSV format'
    if (p) p.error = message
    if (p && p.kind === 'E') complete(c, p)
    emit(c, serializeErrorResponse('ERROR', '42501', message))
    return undefined
  }
  if (p && p.kind === 'E') complete(c, p)
  emit(c, frame.raw)
  return undefined
}

/** Z ReadyForQuery: a batch is answered */
export function readyForQuery(c: Connection, frame: Frame): undefined {
  c.rowMask = undefined
  c.copyOut = undefined
  c.txStatus = String.fromCharCode(frame.raw[5]) as TransactionStatus
  c.receivedBatches++
  if (!c.model.ready(frame.raw[5])) {
    outOfStep(c, 'unexpected ReadyForQuery')
    return undefined
  }
  headChanged(c)
  batchesAnswered(c)
  settled(c, false)
  let open = 0
  for (const p of c.ops) {
    if (p.batch <= c.receivedBatches && !p.done) complete(c, p, p.kind === 'E' && !p.error ? 'skipped after an earlier error in the batch' : undefined)
    if (!p.done) open++
  }
  if (open === 0) c.ops.length = 0
  else if (open < c.ops.length) c.ops = c.ops.filter(p => !p.done)
  if (c.replacements.size > 0) for (const [m, r] of c.replacements) if (r.batch <= c.receivedBatches) c.replacements.delete(m)
  emit(c, frame.raw)
  flushResponse(c)
  return undefined
}

export function complete(c: Connection, p: PendingOp, error?: string): void {
  if (p.done) return
  p.done = true
  audit(c, p, p.error ?? error)
}

export function audit(c: Connection, p: PendingOp, error?: string): void {
  const d = p.decision
  const op = p.op
  const decision = d?.action ?? 'block'
  const rule = d?.rule ?? null
  const durationMs = Math.round((performance.now() - p.start) * 1000) / 1000
  // an Execute runs its portal's statement, one Operation object per prepared statement: its own
  // fields are serialized once (auditOperation), not per line; a simple Query's Operation is new
  // for each text, so it takes the plain path (caching it would only cost a WeakMap entry), with
  // one object built, not two
  if (p.kind === 'E' && c.session.auditOperation) {
    c.session.auditOperation(op, { decision, rule, approvalId: d?.approvalId, rows: p.rows, bytes: p.bytes, masked: p.masked, durationMs, error })
    return
  }
  c.session.audit({
    class: op.class,
    resources: op.resources,
    fingerprint: op.fingerprint,
    statement: op.statement,
    decision,
    rule,
    approvalId: d?.approvalId,
    rows: p.rows,
    bytes: p.bytes,
    masked: p.masked,
    durationMs,
    error,
  })
}
