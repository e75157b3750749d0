// CommandComplete, EmptyQueryResponse, PortalSuspended, ReadyForQuery: a statement's end, audited.
import { settled } from './admin-barrier.ts'
import { commandTagRows, serializeErrorResponse, type TransactionStatus } from './backend.ts'
import { BufferReader } from './buffer-reader.ts'
import type { Connection, PendingOp } from './connection.ts'
import { batchesAnswered, headChanged } from './expectations.ts'
import { emit, emitFrame, flushResponse } from './flow-control.ts'
import type { Frame } from './framer.ts'
import { outOfStep } from './teardown.ts'
import { current } from './upstream-replies.ts'

/** CommandComplete 'SELECT n' or 'FETCH n' (read in place: the tag is past the 5-byte header) */
function isSelectOrFetchTag(f: Frame): boolean {
  const b = f.chunk
  const i = f.start + 5
  if (f.end - i < 6) return false
  return (b[i] === 0x53 && b[i + 1] === 0x45 && b[i + 2] === 0x4c && b[i + 3] === 0x45 && b[i + 4] === 0x43 && b[i + 5] === 0x54) || (b[i] === 0x46 && b[i + 1] === 0x45 && b[i + 2] === 0x54 && b[i + 3] === 0x43 && b[i + 4] === 0x48)
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
  emitFrame(c, frame)
  return undefined
}

/** C CommandComplete, I EmptyQueryResponse, s PortalSuspended */
export function commandComplete(c: Connection, frame: Frame): undefined {
  c.rowMask = undefined
  c.copyOut = undefined
  const p = current(c)
  // SELECT and FETCH rows were counted as DataRows: their tag needs no decoding
  if (frame.code === 0x43 && !isSelectOrFetchTag(frame)) {
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
  emitFrame(c, frame)
  return undefined
}

/** Z ReadyForQuery: a batch is answered */
export function readyForQuery(c: Connection, frame: Frame): undefined {
  c.rowMask = undefined
  c.copyOut = undefined
  // (a ReadyForQuery without its status byte reads as 0, which no state is)
  const status = frame.at(5) ?? 0
  c.txStatus = String.fromCharCode(status) as TransactionStatus
  c.receivedBatches++
  if (!c.model.ready(status)) {
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
  emitFrame(c, frame)
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
  // an Operation's own fields are serialized once (auditOperation), not per line: an Execute runs
  // one Operation object per prepared statement, and a simple Query's texts that differ only in
  // their constants share their skeleton's serialization (classify/index.ts borrowed())
  if (c.session.auditOperation) {
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
