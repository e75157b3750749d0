// Q Query: the simple query protocol. EXECUTE / FETCH are classified against the session model,
// which must be settled first; an admin statement holds what the client pipelined behind it
// (admin-barrier.ts).
import { refuseAfterAdmin, settleAfterAdmin } from './admin-barrier.ts'
import { BufferReader } from './buffer-reader.ts'
import type { Connection } from './connection.ts'
import { classify, decideAndSend } from './decide.ts'
import { waitForBatch } from './expectations.ts'
import type { Frame } from './framer.ts'
import { parseQueryMessage } from './frontend.ts'
import { recordRequests } from './request-records.ts'

/** Q Query: EXECUTE / FETCH are classified against the model, which must be settled */
export function query(c: Connection, frame: Frame): Promise<void> | undefined {
  const wait = c.model.lastChangeBefore(c.sentBatches + 1)
  if (wait > c.receivedBatches) return waitForBatch(c, wait, frame)
  const sql = parseQueryMessage(new BufferReader(frame.raw, 5))
  recordRequests(c)
  // recorded with its decision, one record (Session.holdRequest)
  const request = { type: 'Q', statement: sql }
  if (c.session.holdRequest) c.session.holdRequest(request)
  else c.session.record('request', request)
  if (c.adminInBatch) return refuseAfterAdmin(c, 'Q', classify(c, sql), frame.raw)
  return settleAfterAdmin(c, decideAndSend(c, 'Q', sql, frame.raw))
}
