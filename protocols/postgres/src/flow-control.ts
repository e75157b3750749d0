// Flow control and socket writes: client messages go upstream in one write per client read batch,
// replies in one write (and one 'response' record) per upstream read batch or ReadyForQuery.
import type { Connection } from './connection.ts'
import type { Frame } from './framer.ts'

/** a batch of client-bound bytes is written (and recorded) once it reaches this size */
export const OUT_FLUSH_BYTES = 256 * 1024
/** bytes queued on the client socket before the upstream is paused */
const CLIENT_BACKLOG_BYTES = 1024 * 1024

export function pause(c: Connection, which: 'client' | 'upstream', reason: string): void {
  const set = c.pauses[which]
  if (set.size === 0) (which === 'client' ? c.client : c.upstream).pause()
  set.add(reason)
}

export function resume(c: Connection, which: 'client' | 'upstream', reason: string): void {
  const set = c.pauses[which]
  if (!set.delete(reason) || set.size > 0) return
  ;(which === 'client' ? c.client : c.upstream).resume()
}

/** queued: one socket write per client read batch (flushUpstream), not one per message */
export function toUpstream(c: Connection, buf: Buffer): void {
  if (c.closed) return
  c.toUpstreamOut.add(buf)
}

export function flushUpstream(c: Connection): void {
  const out = c.toUpstreamOut
  const buf = out.take()
  if (buf === undefined || c.closed) return
  if (!c.upstream.write(buf)) pause(c, 'client', 'upstream-drain')
  out.release(c.upstream.writableLength === 0)
}

export function toClient(c: Connection, buf: Buffer, written?: () => void): void {
  if (c.closed) return
  // the socket's 16 KiB high-water mark is below one read batch: pausing at every write stalls a
  // big result on a pause/resume round trip per batch, so stop reading only past a bounded backlog
  if (!c.client.write(buf, written) && c.client.writableLength >= CLIENT_BACKLOG_BYTES) pause(c, 'upstream', 'client-drain')
}

/** queued for the client; written and recorded together at the end of the upstream read batch */
export function emit(c: Connection, buf: Buffer): void {
  c.toClientOut.add(buf)
  if (c.toClientOut.bytes >= OUT_FLUSH_BYTES) flushResponse(c)
}

/** emit() of a frame by its range in the chunk it came in: no Buffer view of it is made */
export function emitFrame(c: Connection, frame: Frame): void {
  c.toClientOut.addRange(frame.chunk, frame.start, frame.end)
  if (c.toClientOut.bytes >= OUT_FLUSH_BYTES) flushResponse(c)
}

/**
 * One socket write and one bounded 'response' record per batch: the record holds exactly the
 * bytes the client was sent (after masking), whole messages only.
 */
export function flushResponse(c: Connection): void {
  const out = c.toClientOut
  const buf = out.take()
  if (buf === undefined) return
  // a batch built in the box's buffer comes back to it once written (the recorder copies it)
  toClient(c, buf, out.lendToWrite())
  c.session.record('response', { bytes: buf, rows: c.responseRows })
  c.responseRows = 0
}
