// Client → upstream: messages are framed and handled in order; a statement waiting for a decision
// holds everything the client pipelined after it.
import { isPortcullisError, PortcullisError } from '@portcullis/core/errors'
import type { Connection } from './connection.ts'
import { copyEnd } from './copy.ts'
import { marker } from './decide.ts'
import { sentQuery } from './expectations.ts'
import { bind, closeStatement, describe, execute, parse, sync } from './extended-query.ts'
import { flushUpstream, pause, resume, toUpstream } from './flow-control.ts'
import type { Frame } from './framer.ts'
import { serializeQuery } from './frontend.ts'
import { noteRequest, recordRequests } from './request-records.ts'
import { QUERY } from './session-state.ts'
import { query } from './simple-query.ts'
import { sqlstateOf } from './startup.ts'
import { endUpstream, fatal } from './teardown.ts'

const QUEUE_HIGH_WATER = 256

export function onClientData(c: Connection, chunk: Buffer): void {
  const before = c.inbox.length
  try {
    // straight into the inbox: no array per read
    c.clientFramer.push(chunk, c.inbox)
  } catch (err) {
    // nothing of a read that does not frame is handled, not even its whole messages before the bad one
    c.inbox.length = before
    fatal(c, sqlstateOf(err), (err as Error).message)
    return
  }
  if (c.inbox.length > QUEUE_HIGH_WATER) pause(c, 'client', 'queue')
  pump(c)
}

/**
 * Handles the inbox in order. Synchronous while nothing waits (the common case costs no promise);
 * a frame that waits for a decision or an earlier batch's answer parks the pump, which goes on
 * where it stopped once the wait is over (c.pumping stays set meanwhile: nothing overtakes it).
 */
export function pump(c: Connection): void {
  if (c.pumping) return
  c.pumping = true
  try {
    while (c.inbox.length > 0 && !c.closed) {
      const frame = c.inbox.shift()!
      const waited = handleClientFrame(c, frame)
      if (waited) {
        // what came before the statement is not held by its decision
        flushUpstream(c)
        waited.then(
          () => {
            c.pumping = false
            pump(c)
          },
          err => {
            c.pumping = false
            pumpFailed(c, err)
          },
        )
        return
      }
    }
    recordRequests(c)
    flushUpstream(c)
    resume(c, 'client', 'queue')
    // EOF after the last whole message: the upstream gets it once everything before is sent
    if (c.clientEof && c.inbox.length === 0 && !c.closed) endUpstream(c, 'eof')
  } catch (err) {
    pumpFailed(c, err)
  }
  c.pumping = false
}

function pumpFailed(c: Connection, err: unknown): void {
  fatal(c, sqlstateOf(err), isPortcullisError(err) ? err.message : `internal error: ${(err as Error).message}`)
}

/** returns a promise only when the frame waits for a decision */
export function handleClientFrame(c: Connection, frame: Frame): Promise<void> | undefined {
  const code = frame.code
  // the upstream skips the same messages after the refusal's error; Flush is harmless to pass
  if (c.discardUntilSync && code !== 0x53 /* S */ && code !== 0x58 /* X */ && code !== 0x48 /* H */) {
    noteRequest(c, frame)
    return undefined
  }
  switch (code) {
    case 0x51: // Q Query
      return query(c, frame)
    case 0x50: // P Parse
      return parse(c, frame)
    case 0x42: // B Bind
      return bind(c, frame)
    case 0x45: // E Execute
      return execute(c, frame)
    case 0x43: // C Close
      return closeStatement(c, frame)
    case 0x53: // S Sync
      return sync(c, frame)
    case 0x44: // D Describe
      return describe(c, frame)
    case 0x63: // c CopyDone
    case 0x66: // f CopyFail
      return copyEnd(c, frame)
    case 0x48: // H Flush
    case 0x64: // d CopyData
      noteRequest(c, frame)
      toUpstream(c, frame.raw)
      return undefined
    case 0x58: // X Terminate: the upstream answers what came before, then closes
      noteRequest(c, frame)
      endUpstream(c, 'terminate', frame.raw)
      return undefined
    case 0x46: {
      // F FunctionCall: the fast-path interface calls any function by OID, unseen by SQL
      // classification; refuse it like a blocked statement
      noteRequest(c, frame)
      const markerSql = marker(c, 'blocked function call', '42501', 'function calls through the fast-path interface are not allowed')
      c.sentBatches++
      sentQuery(c, QUERY)
      toUpstream(c, serializeQuery(markerSql))
      return undefined
    }
    case 0x70: // p: no authentication exchange happens after startup
    default:
      throw new PortcullisError('PROTOCOL_ERROR', `invalid frontend message type '${String.fromCharCode(code)}'`)
  }
}
