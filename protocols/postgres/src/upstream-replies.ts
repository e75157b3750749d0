// Upstream → client: replies pass as their original bytes unless a mask applies; a reply that needs
// a catalog lookup first (a mask's row shape) holds the ones behind it.
import { BufferReader } from './buffer-reader.ts'
import { changeComplete, commandComplete, readyForQuery } from './completion.ts'
import type { Connection, PendingOp } from './connection.ts'
import { copyData, copyDone, copyInResponse, copyOutResponse } from './copy.ts'
import { errorResponse, noticeResponse } from './error-response.ts'
import { emit, emitFrame, flushResponse, pause, resume } from './flow-control.ts'
import type { Frame } from './framer.ts'
import { dataRow, noData, rowDescription } from './result-rows.ts'
import { fatal } from './teardown.ts'

/** S ParameterStatus */
export function parameterStatus(c: Connection, frame: Frame): undefined {
  // S ParameterStatus: a server that now reads SQL unlike the gateway's parser, or runs the
  // session as another role, ends the session, whatever statement did it (even one the
  // classifier could not see, like a function whose body calls set_config)
  const body = new BufferReader(frame.raw, 5)
  const why = c.serverSettings.report(body.cstring(), body.cstring())
  if (why) fatal(c, '42501', why)
  else emitFrame(c, frame)
  return undefined
}

export function onUpstreamData(c: Connection, chunk: Buffer): void {
  const queued = c.upstreamBusy || c.upstreamQueue.length > 0
  // the read's frames go to the queue, or to the connection's scratch list (no array per read)
  const frames = queued ? c.upstreamQueue : c.upstreamFrames
  const before = frames.length
  try {
    c.upstreamFramer.push(chunk, frames)
  } catch (err) {
    // as before the lists were shared: none of a read that does not frame is handled
    frames.length = before
    fatal(c, '08P01', `upstream: ${(err as Error).message}`)
    return
  }
  if (queued) {
    drainUpstream(c)
    return
  }
  // fast path: no lookup pending, handle in place (until a frame ends the session)
  for (let i = 0; i < frames.length && !c.closed; i++) {
    const wait = handleUpstreamFrame(c, frames[i]!)
    if (wait) {
      for (let j = i + 1; j < frames.length; j++) c.upstreamQueue.push(frames[j]!)
      frames.length = 0
      flushResponse(c)
      waitThenDrain(c, wait)
      return
    }
  }
  // emptied in place: nothing keeps a frame of it (the chunk it views is let go)
  frames.length = 0
  flushResponse(c)
}

export function drainUpstream(c: Connection): void {
  if (c.upstreamBusy) return
  while (c.upstreamQueue.length > 0 && !c.closed) {
    const wait = handleUpstreamFrame(c, c.upstreamQueue.shift()!)
    if (wait) {
      flushResponse(c)
      waitThenDrain(c, wait)
      return
    }
  }
  flushResponse(c)
}

export function waitThenDrain(c: Connection, wait: Promise<void>): void {
  c.upstreamBusy = true
  pause(c, 'upstream', 'lookup')
  wait.then(
    () => {
      c.upstreamBusy = false
      resume(c, 'upstream', 'lookup')
      drainUpstream(c)
    },
    err => fatal(c, 'XX000', `masking: ${(err as Error).message}`),
  )
}

export function current(c: Connection): PendingOp | undefined {
  for (const p of c.ops) if (!p.done) return p
  return undefined
}

/** returns a promise when the frame needs a catalog lookup first (it is then re-run) */
export function handleUpstreamFrame(c: Connection, frame: Frame): Promise<void> | undefined {
  // nothing follows an upstream FATAL; whatever might is not the client's any more
  if (c.closed) return undefined
  switch (frame.code) {
    case 0x44: // D DataRow
      return dataRow(c, frame)
    case 0x54: // T RowDescription
      return rowDescription(c, frame)
    case 0x6e: // n NoData
      return noData(c, frame)
    case 0x31: // 1 ParseComplete
    case 0x32: // 2 BindComplete
    case 0x33: // 3 CloseComplete
      return changeComplete(c, frame)
    case 0x43: // C CommandComplete
    case 0x49: // I EmptyQueryResponse
    case 0x73: // s PortalSuspended
      return commandComplete(c, frame)
    case 0x45: // E ErrorResponse
      return errorResponse(c, frame)
    case 0x4e: // N NoticeResponse
      return noticeResponse(c, frame)
    case 0x47: // G CopyInResponse
      return copyInResponse(c, frame)
    case 0x48: // H CopyOutResponse
      return copyOutResponse(c, frame)
    case 0x63: // c CopyDone
      return copyDone(c, frame)
    case 0x64: // d CopyData
      return copyData(c, frame)
    case 0x5a: // Z ReadyForQuery
      return readyForQuery(c, frame)
    case 0x53: // S ParameterStatus
      return parameterStatus(c, frame)
    default:
      // ParseComplete, BindComplete, NotificationResponse, CopyIn… pass through
      emitFrame(c, frame)
      return undefined
  }
}
