// COPY: data from the client passes; COPY … TO STDOUT rows are masked like DataRows (text and CSV).
import type { MaskMethod, Operation } from '@portcullis/core/types'
import { settled } from './admin-barrier.ts'
import { copyMethods, hasColumnRules, hasCopyResult } from './column-lineage.ts'
import type { Connection } from './connection.ts'
import { batchesAnswered } from './expectations.ts'
import { emit, emitFrame, toUpstream } from './flow-control.ts'
import type { Frame } from './framer.ts'
import { maskCopyRow } from './masking.ts'
import { noteRequest } from './request-records.ts'
import { current } from './upstream-replies.ts'

/** c CopyDone / f CopyFail: the client ends its COPY data */
export function copyEnd(c: Connection, frame: Frame): undefined {
  c.copyInPending = false
  noteRequest(c, frame)
  toUpstream(c, frame.raw)
  return undefined
}

/** G CopyInResponse */
export function copyInResponse(c: Connection, frame: Frame): undefined {
  const dropped = c.model.dropCopySyncs()
  if (dropped > 0) {
    c.receivedBatches += dropped
    batchesAnswered(c)
  }
  // an admin COPY … FROM STDIN: the pump holds the data until now (settleAfterAdmin)
  settled(c, true)
  emitFrame(c, frame)
  return undefined
}

/** H CopyOutResponse: COPY … TO STDOUT rows are masked like DataRows */
export function copyOutResponse(c: Connection, frame: Frame): Promise<void> | undefined {
  const plan = c.session.masks
  c.copyOut = undefined
  if (!plan.empty) {
    const p = current(c)
    const methods = p ? copyColumns(c, p.op) : undefined
    if (methods instanceof Promise) {
      c.upstreamQueue.unshift(frame)
      return methods.then(() => undefined)
    }
    if (frame.at(5) === 0) c.copyOut = { methods }
    else if (plan.hasDetectors || methods === undefined || methods.some(m => m !== undefined)) {
      // binary COPY rows cannot be masked: drop them and answer an error in their place
      c.copyOutRefused = true
      return undefined
    }
  }
  emitFrame(c, frame)
  return undefined
}

/** c CopyDone */
export function copyDone(c: Connection, frame: Frame): undefined {
  if (c.copyOutRefused) return undefined
  emitFrame(c, frame)
  return undefined
}

/** d CopyData */
export function copyData(c: Connection, frame: Frame): undefined {
  const plan = c.session.masks
  if (c.copyOutRefused) return undefined
  let raw = frame.raw
  const p = current(c)
  if (c.copyOut) {
    const r = maskCopyRow(raw.subarray(5), c.copyOut.methods, plan)
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
  emit(c, raw)
  return undefined
}

/** column rules by position for `COPY table [(cols)] TO STDOUT`; undefined: detectors only */
export function copyColumns(c: Connection, op: Operation): (MaskMethod | undefined)[] | undefined | Promise<unknown> {
  // COPY (query) / COPY t TO STDOUT, also after other statements in one Query: by column lineage
  if (hasColumnRules(c.session.masks) && hasCopyResult(op)) return copyMethods(op, c.session.masks, c.catalog, c.model.classifyContext())
  const key = op.statement
  if (c.copyColumnCache.has(key)) return c.copyColumnCache.get(key)
  const m = /^\s*copy\s+((?:"[^"]+"|[\w$]+)(?:\.(?:"[^"]+"|[\w$]+))?)\s*(?:\(([^)]*)\))?\s+to\s+stdout/i.exec(op.statement)
  if (!m) {
    c.copyColumnCache.set(key, undefined)
    return undefined
  }
  return c.catalog.relationColumns(m[1]).then(cols => {
    const names = m[2] ? m[2].split(',').map(s => s.trim().replace(/^"|"$/g, '')) : cols.map(c => c.column)
    const plan = c.session.masks
    const byName = new Map(cols.map(c => [c.column, c]))
    c.copyColumnCache.set(
      key,
      names.map(n => {
        const c = byName.get(n)
        return c ? plan.forColumn(c.schema, c.table, c.column) : plan.forColumn(undefined, undefined, n)
      }),
    )
  })
}
