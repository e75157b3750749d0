// Masks a text/event-stream event by event. Streamed text deltas (OpenAI chat `choices[].delta.content`,
// completions `choices[].text`, Responses API `*.delta`, Anthropic `content_block_delta`) can split a secret over several events
// ("sk-", "proj-Ab", "c123…"), so each delta slot's text is scanned as one stream (masks.scanStream):
// only text that no later match can reach is emitted (masked), the rest waits for the next delta.
// What can be reached is the run at the end made of characters a match may hold (for an email: no
// space), and never more than masks.maxMatchLength; it is flushed as a delta event of its own at the
// slot's next non-delta event, at [DONE] or at stream end. Each delta is scanned once, with a short
// context of the text before it (lookbehinds), not with the whole hold-back again.
import { StringDecoder } from 'node:string_decoder'
import { Transform, type TransformCallback } from 'node:stream'
import { JSON_ESCAPED, holdBack, type Held, type MaskPlan } from '@portcullis/core'
import { type Mark, maskJsonText, newMark, type Replacement } from './json-mask.ts'
import { type Shape, type ShapeLines, fits, jsonString, lastString, shapeOf } from './sse-shape.ts'
import { type Found, NONE, ShapedDelta, deltaSlots } from './sse-deltas.ts'

export interface SseMaskerOptions {
  /** an event larger than this fails the stream (closed: it cannot be inspected) */
  maxEventBytes: number
  /** each batch of masked events as sent to the client, for recording */
  onBatch?: (text: string, masked: number) => void
  /**
   * false: every event parsed and walked, none masked as the last event's shape (sse-shape.ts).
   * The reference the differential test compares with; default true.
   */
  shapes?: boolean
}

/** one delta slot's streamed text (core's holdBack keeps what was sent and what is held) */
interface Slot extends Held {
  /** the slot's last delta: builds a delta event carrying held text, shaped like it */
  last: Found
  /**
   * Every text appended to the slot had nothing JSON.stringify escapes (JSON_ESCAPED): what
   * holdBack emits of it is made of that text and the plan's replacements, so under a plan whose
   * replacements are plain too it goes out between quotes, unscanned (see shapedEvent)
   */
  plain: boolean
}

// An event ends at an empty line: a line end (CRLF, LF or CR) followed by another. A CR is a line end
// of its own only when no LF follows it, or "a\r\nb" would be read as two line ends. The browser's
// parser reads "\n\r\n" as the end of an event too; missing it would fold two events into one that
// no longer parses as JSON (and escapes field rules).
const BOUNDARY = /(?:\r\n|\n|\r(?!\n))(?:\r\n|\n|\r)/g

export class SseMasker extends Transform {
  /** values replaced so far */
  masked = 0
  /** events masked as the last event's shape (sse-shape.ts), without a parse */
  shaped = 0
  private readonly decoder = new StringDecoder('utf8')
  private pending = ''
  /** where the next search for an event boundary starts: an event trickling in is not rescanned */
  private searchFrom = 0
  private readonly slots = new Map<string, Slot>()
  private started = false
  /** the event being read had lines the gateway dropped or masked: it is rebuilt, not passed */
  private changedLines = false
  /** the last plain-text data event, not sent until the next event is known (see event()) */
  private heldPlain: { other: readonly string[]; text: string; scanned: { text: string; count: number } } | undefined
  /** the event being handled is a plain-text one (it handles heldPlain itself) */
  private plainNow = false
  private readonly limit: number
  private readonly shapes: boolean
  /** the last parsed delta event's shape: an event that fits it is masked without a parse */
  private shape: Shape | undefined

  constructor(
    private readonly plan: MaskPlan,
    private readonly opts: SseMaskerOptions,
  ) {
    super()
    const l = plan.maxMatchLength
    this.limit = Number.isFinite(l) && l > 0 ? Math.min(Math.ceil(l), 1 << 16) : 256
    this.shapes = opts.shapes ?? true
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, cb: TransformCallback): void {
    let out: string
    try {
      out = this.maskChunk(chunk)
    } catch (err) {
      cb(err as Error)
      return
    }
    if (out !== '') this.push(out)
    cb()
  }

  override _flush(cb: TransformCallback): void {
    const out = this.maskEnd()
    if (out !== '') this.push(out)
    cb()
  }

  /**
   * The stream without a Transform around it: a chunk in, the masked text that may go out now
   * (recorded through onBatch). Throws when an event grows past the inspection limit.
   */
  maskChunk(chunk: Buffer): string {
    const before = this.masked
    const out = this.feed(chunk)
    if (this.pending.length > this.opts.maxEventBytes) throw new Error('server-sent event larger than the inspection limit')
    if (out !== '') this.opts.onBatch?.(out, this.masked - before)
    return out
  }

  /** the end of the stream: what is left, held text included */
  maskEnd(): string {
    this.pending += this.decoder.end()
    const before = this.masked
    let out = ''
    const rest = this.pending
    if (rest.trim() !== '') out += this.event(rest) ?? rest + '\n\n'
    this.pending = ''
    out += this.flushPlain()
    out += this.flushSlots(() => true)
    if (out !== '') this.opts.onBatch?.(out, this.masked - before)
    return out
  }

  /**
   * Decodes a chunk and masks the events it completes: the text to send ('' when none is complete).
   * Events that pass as they came (terminated by a plain blank line) go out as one slice of the
   * input, not rebuilt one by one.
   */
  private feed(chunk: Buffer): string {
    let text = this.pending + this.decoder.write(chunk)
    // a BOM at the start of the stream is dropped by clients (and would hide the first field name)
    if (!this.started && text.length > 0) {
      this.started = true
      if (text.charCodeAt(0) === 0xfeff) text = text.slice(1)
    }
    // what goes out, in pieces joined once at the end: a batch of rebuilt (masked) events is some
    // 200 pieces, and a rope of them cost more to flatten (the recording and the socket write read
    // it flat) than one join (13 against 18.5 µs for 65 events with their Buffer.from)
    let parts: string[] | undefined
    // [copyFrom, at): a run of events passed unchanged, not yet added to `parts`
    let copyFrom = 0
    let at = 0
    BOUNDARY.lastIndex = this.searchFrom
    for (let m = BOUNDARY.exec(text); m; m = BOUNDARY.exec(text)) {
      const end = m.index + m[0].length
      const r = this.event(text.slice(at, m.index))
      if (r !== undefined || m[0] !== '\n\n') {
        parts ??= []
        if (copyFrom < at) parts.push(text.slice(copyFrom, at))
        parts.push(r ?? text.slice(at, m.index) + '\n\n')
        copyFrom = end
      }
      at = end
    }
    let out: string
    if (parts === undefined) out = copyFrom < at ? text.slice(copyFrom, at) : ''
    else {
      if (copyFrom < at) parts.push(text.slice(copyFrom, at))
      out = parts.length === 1 ? parts[0] : parts.join('')
    }
    this.pending = at === 0 ? text : text.slice(at)
    this.searchFrom = Math.max(0, this.pending.length - 3)
    return out
  }

  /**
   * One event (without its terminating blank line) → the text to send, terminator included; undefined
   * when the event goes out as it came (`raw` and a blank line).
   */
  /**
   * A plain-text (not JSON) data event is held until the next event is known, so that a value split
   * across two of them ("ada@exa" | "mple.com") is caught: the text of both is scanned together and,
   * only when a match spans the boundary, the cut between them moves past it. Any other event sends
   * the held one first, in stream order.
   */
  private event(raw: string): string | undefined {
    this.plainNow = false
    const out = this.eventBody(raw)
    if (this.plainNow || this.heldPlain === undefined) return out
    return this.flushPlain() + (out ?? raw + '\n\n')
  }

  private plainEvent(other: readonly string[], text: string): string {
    this.plainNow = true
    // streamed JSON text held before this event goes out before it
    const prefix = this.flushSlots(() => true)
    const prev = this.heldPlain
    const mine = this.plan.scan(text)
    if (!prev) {
      this.heldPlain = { other, text, scanned: mine }
      return prefix
    }
    const buf = prev.text + text
    const whole = this.plan.scan(buf)
    if (prev.scanned.text + mine.text === whole.text) {
      this.masked += prev.scanned.count
      this.heldPlain = { other, text, scanned: mine }
      return prefix + serialize(prev.other, prev.scanned.text)
    }
    // a match spans the two: cut further on, where both sides mask as the whole does
    const from = prev.text.length
    const to = Math.min(buf.length, from + this.limit)
    for (let c = from + 1; c <= to; c++) {
      if (isHighSurrogate(buf.charCodeAt(c - 1))) continue
      const a = this.plan.scan(buf.slice(0, c))
      const b = this.plan.scan(buf.slice(c))
      if (a.text + b.text === whole.text) {
        this.masked += a.count
        this.heldPlain = { other, text: buf.slice(c), scanned: b }
        return prefix + serialize(prev.other, a.text)
      }
    }
    // no clean cut in reach: all of it goes out masked with the earlier event
    this.masked += whole.count
    this.heldPlain = { other, text: '', scanned: { text: '', count: 0 } }
    return prefix + serialize(prev.other, whole.text)
  }

  private flushPlain(): string {
    const held = this.heldPlain
    if (!held) return ''
    this.heldPlain = undefined
    this.masked += held.scanned.count
    return serialize(held.other, held.scanned.text)
  }

  private eventBody(raw: string): string | undefined {
    const known = this.shape
    if (known !== undefined) {
      // the last delta event's lines before its data, byte for byte, then one line of data
      const n = known.rawPrefix.length
      if (raw.length > n && raw.substring(0, n) === known.rawPrefix && raw.indexOf('\n', n) === -1 && raw.indexOf('\r', n) === -1) {
        const text = raw.slice(n)
        const delta = fits(known, text)
        if (delta !== undefined) return this.shapedEvent(raw, text, delta, known)
      }
    }
    let text: string
    let other: readonly string[]
    // the data is the event's last line and its only one: the lines before it can be a shape's
    let lastIsData = true
    let lineCount = 0
    if (raw.startsWith('data:') && raw.indexOf('\n') === -1 && raw.indexOf('\r') === -1) {
      // the usual event: one data line, nothing else
      text = raw.charCodeAt(5) === 32 ? raw.slice(6) : raw.slice(5)
      other = NO_LINES
    } else {
      const lines = raw.split(/\r\n|\n|\r/)
      const data: string[] = []
      const rest: string[] = []
      let changed = false
      for (const line of lines) {
        if (line.startsWith('data:')) data.push(line.charCodeAt(5) === 32 ? line.slice(6) : line.slice(5))
        else if (line === '' || line === 'data') continue
        else if (line.charCodeAt(0) === 58 /* : a comment */ || KNOWN_FIELD.test(line)) {
          // comments, event names and ids reach a raw reader too: the detectors see them
          const r = this.plan.hasDetectors ? this.plan.scan(line) : { text: line, count: 0 }
          if (r.count > 0) {
            this.masked += r.count
            lineCount += r.count
            changed = true
          }
          rest.push(r.text)
        } else {
          // a line that is no field of the event-stream format: clients ignore it, so the gateway
          // drops it rather than send text it has not read as what it claims to be
          changed = true
        }
      }
      if (data.length === 0) return changed ? serializeLines(rest) : undefined
      lastIsData = data.length === 1 && lines[lines.length - 1].startsWith('data:')
      text = data.join('\n')
      other = rest
      if (changed) this.changedLines = true
    }
    const linesChanged = this.changedLines
    this.changedLines = false
    if (text === '[DONE]') {
      const held = this.flushSlots(() => true)
      const done = linesChanged ? serialize(other, text) : raw + '\n\n'
      return held === '' && !linesChanged ? undefined : held + done
    }
    const shapeable = this.shapes && lastIsData
    let obj: unknown
    try {
      obj = JSON.parse(text)
    } catch {
      if (!this.plan.hasDetectors) return linesChanged ? serialize(other, text) : undefined
      return this.plainEvent(other, text)
    }
    // without detectors no text is streamed (held back); the deltas are looked for only for the shape
    const deltas = this.plan.hasDetectors || shapeable ? deltaSlots(obj) : NONE
    const found = this.plan.hasDetectors ? deltas : NONE
    const mark = shapeable && deltas.length === 1 ? newMark(deltas[0].path) : undefined
    const lines = { rawPrefix: raw.slice(0, raw.length - text.length), other, lineCount, linesChanged }
    if (found.length === 0 && this.slots.size === 0) {
      // no streamed text in it: masked where it stands, every other byte as the upstream sent it
      const r = maskJsonText(text, this.plan, true, undefined, mark)
      if (mark !== undefined) this.keepShape(text, r, mark, deltas[0], lines)
      this.masked += r.count
      return r.count === 0 && !linesChanged ? undefined : serialize(other, r.text)
    }
    const prefix = this.beforeDeltas(found)
    let changed: Replacement[] | undefined
    for (const f of found) {
      let slot = this.slots.get(f.key)
      if (!slot) this.slots.set(f.key, (slot = { text: '', from: 0, last: f, plain: true }))
      slot.last = f
      if (slot.plain && JSON_ESCAPED.test(f.original)) slot.plain = false
      const r = holdBack(slot, f.original, this.limit, this.plan)
      this.masked += r.count
      if (r.emit !== f.original) (changed ??= []).push({ path: f.path, value: r.emit })
    }
    // the rest of the event masked where it stands; the delta text replaced by what may go out of it
    const r = maskJsonText(text, this.plan, true, changed, mark)
    if (mark !== undefined) this.keepShape(text, r, mark, deltas[0], lines)
    this.masked += r.count
    if (r.text === text && !linesChanged) return prefix === '' ? undefined : prefix + raw + '\n\n'
    return prefix + serialize(other, r.text)
  }

  private keepShape(text: string, r: { text: string; count: number }, mark: Mark, delta: Found, lines: ShapeLines): void {
    const shape = shapeOf(text, r.text, r.count, mark, delta, lines)
    if (shape !== undefined) this.shape = shape
  }

  /**
   * An event that fits the last shape (sse-shape.ts), `delta` the string in it: what eventBody's full
   * way makes of it, with head and tail as the shape's walk left them. The same branches and the
   * same counts as there (the differential test in sse-shapes.test.ts holds the bytes equal).
   */
  private shapedEvent(raw: string, text: string, delta: string, shape: Shape): string | undefined {
    this.shaped++
    // the lines before the data went through the detectors in the shape's event: the same again
    this.masked += shape.lineCount
    if (!this.plan.hasDetectors) {
      // eventBody's no-delta branch: field rules only, and none is on the delta's path (it was read)
      this.masked += shape.restCount
      return shape.restCount === 0 && !shape.linesChanged ? undefined : serialize(shape.other, shape.maskedHead + delta + shape.maskedTail)
    }
    // stringEnd (in fits, just now) let no raw '"' or control character through and saw whether
    // the string has an escape or a surrogate: without either, its text is the string as it
    // stands, with nothing JSON.stringify escapes
    const plainIn = lastString.plain
    const escaped = !plainIn && delta.indexOf('\\') !== -1
    const original = escaped ? (JSON.parse(delta) as string) : delta.slice(1, -1)
    const f = new ShapedDelta(shape, original, text)
    // beforeDeltas([f]) sends nothing while fewer than MAX_SLOTS are held (no array for it then)
    const prefix = this.slots.size < MAX_SLOTS ? '' : this.beforeDeltas([f])
    let slot = this.slots.get(f.key)
    if (!slot) this.slots.set(f.key, (slot = { text: '', from: 0, last: f, plain: true }))
    slot.last = f
    if (!plainIn) slot.plain = false
    const r = holdBack(slot, original, this.limit, this.plan)
    this.masked += r.count
    // masked text made of plain text and plain replacements is what JSON.stringify returns between
    // quotes: no scan of it (it is a rope of slices and replacements here; a scan would flatten it)
    const quoted = this.plan.plainReplacements === true
    let out = delta
    if (r.emit !== original) out = quoted && slot.plain ? '"' + r.emit + '"' : jsonString(r.emit)
    else {
      // as the walk reads a string no replacement names: through the detectors
      const d = this.plan.scan(original)
      this.masked += d.count
      if (d.text !== original) out = quoted && plainIn ? '"' + d.text + '"' : jsonString(d.text)
    }
    this.masked += shape.restCount
    const { maskedHead, maskedTail } = shape
    // the event unchanged goes out as it came (its lines byte for byte); lengths first: a masked
    // delta is seldom as long as the original, and then no text is compared
    if (maskedHead.length + out.length + maskedTail.length === text.length && maskedHead + out + maskedTail === text && !shape.linesChanged) {
      return prefix === '' ? undefined : prefix + raw + '\n\n'
    }
    if (shape.outHead !== undefined) return prefix + shape.outHead + out + shape.outTail
    return prefix + serialize(shape.other, maskedHead + out + maskedTail)
  }

  /**
   * Held text that goes out before this event, as delta events of its own: all of it before an event
   * with no delta (a choice's finish, a Responses `.done`, a tool call); before a delta event only
   * the oldest slots past MAX_SLOTS. Choices take turns (`n: 2` sends one choice per event) and
   * Responses parts interleave: a slot's text is not cut where another slot's delta comes between
   * two of its own (that cut let a key split across them through whole).
   */
  private beforeDeltas(found: readonly Found[]): string {
    if (this.slots.size === 0) return ''
    if (found.length === 0) return this.flushSlots(() => true)
    let over = this.slots.size - MAX_SLOTS
    for (const f of found) if (!this.slots.has(f.key)) over++
    if (over <= 0) return ''
    return this.flushSlots(k => over > 0 && !found.some(f => f.key === k) && over-- > 0)
  }

  private flushSlots(which: (key: string) => boolean): string {
    let out = ''
    for (const [key, slot] of this.slots) {
      if (!which(key)) continue
      this.slots.delete(key)
      if (slot.text.length === slot.from) continue
      const r = this.plan.scanStream(slot.text, slot.from, true)
      this.masked += r.count
      // shaped like the slot's last event, whose other fields are masked as any event's
      const e = maskJsonText(slot.last.event(), this.plan, true, [{ path: slot.last.builtPath, value: r.text }])
      this.masked += e.count
      // the event line names the upstream's type: read by the detectors like any event line
      const line = slot.last.prefix === '' ? undefined : this.plan.scan(slot.last.prefix)
      if (line !== undefined) this.masked += line.count
      out += (line?.text ?? '') + 'data: ' + e.text + '\n\n'
    }
    return out
  }
}

/** delta slots held at once (choices, Responses parts, content blocks); the oldest goes out past it */
const MAX_SLOTS = 16

const KNOWN_FIELD = /^(?:event|id|retry)(?::|$)/

const NO_LINES: readonly string[] = []

function serializeLines(lines: readonly string[]): string {
  let s = ''
  for (const line of lines) s += line + '\n'
  return s === '' ? '' : s + '\n'
}

function serialize(other: readonly string[], data: string): string {
  // a JSON text has no raw newline: one data line
  if (other.length === 0 && data.indexOf('\n') === -1) return 'data: ' + data + '\n\n'
  let s = ''
  for (const line of other) if (line !== '') s += line + '\n'
  for (const line of data.split('\n')) s += 'data: ' + line + '\n'
  return s + '\n'
}

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff
}
