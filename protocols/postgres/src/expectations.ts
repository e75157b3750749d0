// What the server has yet to answer (the session model, session-state.ts), as messages go upstream.
import type { Connection } from './connection.ts'
import type { Frame } from './framer.ts'
import type { RowMask } from './masking.ts'
import type { Expectation } from './session-state.ts'

/** rows under a mask plan whose row shape the gateway does not know: never forwarded */
export const UNKNOWN_SHAPE: RowMask = Object.freeze({ methods: [], scan: [], textLike: [], binary: [], jsonb: [], fixed: [] }) as unknown as RowMask

/** a message sent upstream that the server answers; a new head may carry its portal's row shape */
export function expect(c: Connection, e: Expectation): boolean {
  // after an error the server skips everything up to the batch's Sync: nothing answers these
  if (c.model.skips(e)) return false
  if (c.model.push(e)) headChanged(c)
  return true
}

/**
 * A Query goes upstream: it drops the unnamed statement and portal whatever it runs. Sent after
 * an error in the extended batch it is part of, the server skips it: no ReadyForQuery comes.
 */
export function sentQuery(c: Connection, e: Expectation): boolean {
  if (c.model.skips(e)) {
    c.receivedBatches++
    return false
  }
  c.model.simpleQuery()
  expect(c, e)
  return true
}

/** the frame is handled again once batch `batch` has been answered */
export function waitForBatch(c: Connection, batch: number, frame: Frame): Promise<void> {
  c.inbox.unshift(frame)
  return new Promise(resolve => (c.batchWaiter = { batch, resolve }))
}

/**
 * c.receivedBatches grew: a frame waiting for one of the batches now answered is handled again.
 * Called wherever a batch counts as answered: its ReadyForQuery, and the Queries an error made the
 * server skip (they get no ReadyForQuery; a waiter left asleep would park the pump for good, and a
 * client's EOF then never reaches the upstream).
 */
export function batchesAnswered(c: Connection): void {
  const waiter = c.batchWaiter
  if (waiter !== undefined && c.receivedBatches >= waiter.batch) {
    c.batchWaiter = undefined
    waiter.resolve()
  }
}

/**
 * Under a mask plan, the rows of the Execute now at the head take its portal's row shape
 * (from a Describe answered before them); unknown, they are never forwarded.
 */
export function headChanged(c: Connection): void {
  if (c.session.masks.empty) return
  const h = c.model.peek()
  if (h !== undefined && h.code === 0x45 && h.portal !== undefined) c.rowMask = h.portal.shapeKnown ? h.portal.mask : UNKNOWN_SHAPE
}
