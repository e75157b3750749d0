// Query and Parse are recorded one each, with their statement text. Every other message joins a
// run recorded as one 'request' whose `bytes` are the messages exactly as the client sent them
// and whose `type` lists their codes in order ('BES': Bind, Execute, Sync): one record per
// round trip rather than one per message. A run is recorded before anything that must follow it
// in the recording (a Query or Parse record, a decision) and at the end of each read batch. The
// request a statement is decided on (a Query, an Execute's run up to its Sync) is held for its
// decision and recorded in the decision's record (Session.holdRequest): two records a round trip.
import type { Connection } from './connection.ts'
import type { Frame } from './framer.ts'

/** the message joins the run of request bytes not yet recorded */
export function noteRequest(c: Connection, frame: Frame): void {
  if (c.recordedAhead > 0) {
    c.recordedAhead--
    return
  }
  c.requestTypes += String.fromCharCode(frame.code)
  c.requestRun.add(frame.raw)
}

/**
 * Records the run. `upToSync`: a statement is about to be decided; the messages after it up to
 * its Sync, already read, join its record, so that the decision follows the whole request.
 */
export function recordRequests(c: Connection, upToSync = false): void {
  if (upToSync && c.recordedAhead === 0) {
    const inbox = c.inbox
    let i = 0
    while (i < inbox.length) {
      const f = inbox[i]
      if (f.code === 0x51 /* Q */ || f.code === 0x50 /* P */) break
      c.requestTypes += String.fromCharCode(f.code)
      c.requestRun.add(f.raw)
      i++
      if (f.code === 0x53 /* S */) break
    }
    c.recordedAhead = i
  }
  if (c.requestTypes === '') return
  const out = c.requestRun
  const bytes = out.take()!
  const request = { type: c.requestTypes, bytes }
  const held = upToSync && c.session.holdRequest !== undefined
  if (held) c.session.holdRequest!(request)
  else c.session.record('request', request)
  c.requestTypes = ''
  // recorded: the recorder has copied them. Held for the decision: the buffer is the held
  // request's until it is recorded (a run that is a view of one read chunk holds no buffer of ours)
  out.release(!held)
}
