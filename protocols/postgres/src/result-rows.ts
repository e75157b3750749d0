// RowDescription, DataRow, NoData: rows pass as the bytes they came in, or masked by the row shape.
import { parseRowDescription } from './backend.ts'
import { BufferReader } from './buffer-reader.ts'
import { rowLineage } from './column-lineage.ts'
import type { Connection } from './connection.ts'
import { headChanged, UNKNOWN_SHAPE } from './expectations.ts'
import { emit, emitFrame, flushResponse, OUT_FLUSH_BYTES } from './flow-control.ts'
import type { Frame } from './framer.ts'
import { buildRowMask, maskDataRowTo, type RowMask, unresolvedTables, unresolvedTypes } from './masking.ts'
import { fatal } from './teardown.ts'
import { current } from './upstream-replies.ts'

/** D DataRow, or a run of them (Frame.count) */
export function dataRow(c: Connection, frame: Frame): undefined {
  const plan = c.session.masks
  const p = current(c)
  const n = frame.count ?? 1
  if (!c.rowMask) {
    // nothing to mask: the run passes as the bytes it came in
    if (p) {
      p.rows += n
      p.bytes += frame.length
    }
    c.responseRows += n
    emitFrame(c, frame)
    return undefined
  }
  // each row is masked into the batch buffer: no Buffer per row
  const all = frame.raw
  const out = c.toClientOut
  const mask = c.rowMask
  if (mask === UNKNOWN_SHAPE) {
    // fail closed: rows whose columns the gateway cannot tell apart are never forwarded
    fatal(c, '42501', 'result rows of unknown shape under a mask plan: refused')
    return undefined
  }
  let masked = 0
  let bytes = 0
  for (let off = 0; off < all.length; ) {
    const end = off + 1 + all.readInt32BE(off + 1)
    const before = out.bytes
    masked += maskDataRowTo(all, off, end, mask, plan, out)
    bytes += out.bytes - before
    c.responseRows++
    off = end
    if (out.bytes >= OUT_FLUSH_BYTES) flushResponse(c)
  }
  if (p) {
    p.masked += masked
    p.rows += n
    p.bytes += bytes
  }
  return undefined
}

/** T RowDescription: the row shape a mask plan reads the rows by */
export function rowDescription(c: Connection, frame: Frame): Promise<void> | undefined {
  const plan = c.session.masks
  c.rowMask = undefined
  if (!plan.empty) {
    // the statement's column lineage: what a computed column is made of (column-lineage.ts)
    const p = current(c)
    const lineage = p ? (p.lineage ?? rowLineage(p.op, plan, c.catalog, c.model.classifyContext())) : undefined
    if (lineage instanceof Promise) {
      c.upstreamQueue.unshift(frame)
      return lineage
    }
    // a prepared statement run again describes the same columns: its mask is built once
    const last = c.lastRowDescription
    if (last !== undefined && last.plan === plan && last.generation === c.catalog.generation && last.lineage === lineage && frame.chunk.compare(last.raw, 0, last.raw.length, frame.start, frame.end) === 0) {
      c.rowMask = last.mask
    } else {
      const fields = parseRowDescription(new BufferReader(frame.raw, 5))
      const missing = unresolvedTables(fields, c.catalog)
      const types = unresolvedTypes(fields, plan, c.catalog)
      if (missing.length > 0 || types.length > 0) {
        c.upstreamQueue.unshift(frame)
        return c.catalog.resolve(missing, types)
      }
      c.rowMask = buildRowMask(fields, plan, c.catalog, lineage)
      // a copy: a view would keep the whole read chunk alive
      c.lastRowDescription = { raw: Buffer.from(frame.raw), plan, generation: c.catalog.generation, lineage, mask: c.rowMask }
    }
  }
  // the answer to a Describe: a portal keeps its row shape for the Executes of it
  if (described(c, c.rowMask)) return undefined
  emitFrame(c, frame)
  return undefined
}

/** n NoData */
export function noData(c: Connection, frame: Frame): undefined {
  c.rowMask = undefined
  if (described(c, undefined)) return undefined
  emitFrame(c, frame)
  return undefined
}

/**
 * A RowDescription or NoData that answers a Describe: a portal's row shape is kept; the answer to
 * a Describe the gateway added is not the client's (true: not forwarded).
 */
export function described(c: Connection, mask: RowMask | undefined): boolean {
  const h = c.model.peek()
  if (h === undefined || h.code !== 0x44) return false
  c.model.shift()
  const portal = h.portal
  if (portal !== undefined) {
    portal.shapeKnown = true
    portal.mask = mask
    portal.shapePlan = c.session.masks
    portal.shapeGeneration = c.catalog.generation
  }
  headChanged(c)
  return h.injected === true
}
