// ErrorResponse and NoticeResponse: a marker's error becomes the refusal; notices are masked.
import { PortcullisError } from '@portcullis/core/errors'
import { parseNoticeFields, serializeNoticeFields } from './backend.ts'
import { BufferReader } from './buffer-reader.ts'
import { complete } from './completion.ts'
import type { Connection } from './connection.ts'
import { marker } from './decide.ts'
import { batchesAnswered, headChanged } from './expectations.ts'
import { emit } from './flow-control.ts'
import type { Frame } from './framer.ts'
import { maskNoticeFields } from './masking.ts'
import { finishGracefully } from './teardown.ts'
import { current } from './upstream-replies.ts'

/** E ErrorResponse */
export function errorResponse(c: Connection, frame: Frame): undefined {
  c.rowMask = undefined
  c.copyOut = undefined
  const fields = parseNoticeFields(new BufferReader(frame.raw, 5))
  const marker = /"(PORTCULLIS_REFUSED_[0-9a-f]{16})"/.exec(fields.M ?? '')
  const replacement = marker ? c.replacements.get(marker[1]) : undefined
  const p = current(c)
  // the message that failed changes nothing (but a failed Parse of the unnamed statement);
  // the server skips the rest of its batch, a Query in it included
  const skipped = c.model.error()
  if (skipped > 0) {
    for (const q of c.ops) if (q.kind === 'Q' && !q.done && q.batch > c.receivedBatches && q.batch <= c.receivedBatches + skipped) q.error = 'skipped after an earlier error in the batch'
    c.receivedBatches += skipped
    // a message waiting for one of them (an Execute whose portal a Bind before the Query made)
    // goes on: the server skips it too, up to the Sync
    batchesAnswered(c)
  }
  // an Execute of this batch held for approval cannot run any more: its request is withdrawn, or
  // the client would wait for an approver (and its ReadyForQuery) after its batch already failed
  if (c.pendingDecision && c.model.skippingToSync) c.pendingDecision.abort(new PortcullisError('APPROVAL_WITHDRAWN', 'an earlier message of its batch failed'))
  headChanged(c)
  if (replacement) {
    c.replacements.delete(marker![1])
    if (p && p.kind === 'E') complete(c, p)
    emit(c, replacement.error)
    return undefined
  }
  if (p) {
    p.error = fields.M
    if (p.kind === 'E') complete(c, p)
  }
  emitNotice(c, 'E', frame.raw, fields)
  // FATAL / PANIC: the backend ends the connection (pg_terminate_backend, a session timeout);
  // its error is the client's one and only, and the session ends with it
  const severity = fields.V ?? fields.S
  if (severity === 'FATAL' || severity === 'PANIC') {
    c.session.record('event', { type: 'upstream-fatal', sqlstate: fields.C })
    finishGracefully(c)
  }
  return undefined
}

/** N NoticeResponse */
export function noticeResponse(c: Connection, frame: Frame): undefined {
  emitNotice(c, 'N', frame.raw, parseNoticeFields(new BufferReader(frame.raw, 5)))
  return undefined
}

export function emitNotice(c: Connection, code: 'E' | 'N', raw: Buffer, fields: Record<string, string>): void {
  const plan = c.session.masks
  const n = plan.empty ? 0 : maskNoticeFields(fields, plan)
  if (n > 0) {
    const p = current(c)
    if (p) p.masked += n
    emit(c, serializeNoticeFields(code, fields))
  } else emit(c, raw)
}
