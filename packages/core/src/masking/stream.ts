// The bookkeeping of a text that arrives in pieces (a streamed reply's deltas): what was answered,
// what is held back, and how much of the answered text stays as context for the next piece.
import type { MaskPlan } from '../types.ts'
import { STREAM_CONTEXT } from './scanner.ts'

/** one stream's text: text[0, from) was sent (context), text[from…] is held back */
export interface Held {
  text: string
  from: number
}

/**
 * Adds `incoming` to a stream's text and returns what may go out now (masked): what no later piece
 * can change (MaskPlan.scanStream). The rest stays held, after a short context of what went out. A
 * run that never lets a cut through (a PEM body without end) goes out masked past 4 × `limit` (the
 * longest match), so that what is held stays bounded.
 */
export function holdBack(held: Held, incoming: string, limit: number, plan: MaskPlan): { emit: string; count: number } {
  const before = held.text
  // Nothing held, and the text sent ends where every detector's match starts afresh (a space, say):
  // the piece scans as a text of its own, without the context put in front of it and flattened with
  // it — the common case of a streamed reply, a delta after a word. The context kept for the next
  // piece is then the piece's own, which means the same to the detectors (MaskPlan.scansFreshAfter)
  const fresh = held.from === before.length && before.length > 0 && plan.scansFreshAfter?.(before.charCodeAt(before.length - 1)) === true
  const buf = fresh ? incoming : before + incoming
  const from = fresh ? 0 : held.from
  let r = plan.scanStream(buf, from, false)
  if (buf.length - r.cut > 4 * limit) r = plan.scanStream(buf, from, true)
  const keep = r.cut > STREAM_CONTEXT ? r.cut - STREAM_CONTEXT : 0
  held.text = keep === 0 ? buf : buf.slice(keep)
  held.from = r.cut - keep
  return { emit: r.text, count: r.count }
}
