// An admin statement may change how the server reads SQL or who it runs as (SET, set_config, a
// DO block, a write to pg_settings), and the server reports that only with its answer: nothing
// the client pipelined behind one goes upstream before that answer — with its ParameterStatus,
// which may end the session (upstream-replies.ts) — has come back. Within one extended batch
// the server would read the next Parse before any report: a statement after an admin Execute
// and before Sync is refused.
import type { Operation } from '@portcullis/core/types'
import type { Connection, PendingOp } from './connection.ts'
import { send } from './decide.ts'
import { flushUpstream } from './flow-control.ts'
import { recordRequests } from './request-records.ts'

/** after an admin Query (the op decideAndSend just queued): the pump waits for the upstream's answers */
export function settleAfterAdmin(c: Connection, waited: Promise<void> | undefined): Promise<void> | undefined {
  // the plain case (decided at once, not admin) makes no closure: it runs once per Query
  if (!waited) return lastIsAdmin(c) ? answered(c) : undefined
  return waited.then(() => {
    if (!lastIsAdmin(c)) return
    flushUpstream(c)
    return answered(c)
  })
}

function lastIsAdmin(c: Connection): boolean {
  return c.ops[c.ops.length - 1]?.op.class === 'admin'
}

/** resolves once every batch sent upstream has its ReadyForQuery (or the server asks for COPY data) */
export function answered(c: Connection): Promise<void> {
  if (c.closed || c.receivedBatches >= c.sentBatches) return Promise.resolve()
  return new Promise(resolve => (c.onAnswered = resolve))
}

export function settled(c: Connection, copyIn: boolean): void {
  const resolve = c.onAnswered
  if (resolve && (copyIn || c.receivedBatches >= c.sentBatches)) {
    c.onAnswered = undefined
    resolve()
  }
}

export function refuseAfterAdmin(c: Connection, kind: 'Q' | 'E', op: Operation, raw: Buffer): undefined {
  recordRequests(c, kind === 'E')
  const pending: PendingOp = { kind, op, decision: undefined, batch: c.sentBatches + 1, start: performance.now(), rows: 0, bytes: 0, masked: 0, done: false }
  send(c, pending, raw, undefined, {
    sqlstate: '42501',
    message: 'a statement after an admin statement in the same batch is refused: the admin statement may change how the server reads SQL (send Sync after it)',
  })
  return undefined
}
