// Free-text scanning: every configured detector in one pass over the value. The built-ins are one
// combined alternation, compiled lazily per set of satisfied pre-checks (text without '@' never runs
// the email branch); user patterns are re2 (linear time) and run after it. Nothing matched → the
// caller gets its own string back, no copy.
import type { KeyObject } from 'node:crypto'
import RE2 from 're2'
import type { MaskMethod } from '../types.ts'
import { type Detector, Trigger, findEmailSpans, triggersOf } from './detectors.ts'
import { maskValue } from './methods.ts'

export interface DetectorEntry {
  readonly detector: Detector
  /** the config name shown in '[REDACTED:<label>]' ('api-key' when the rule said api-key) */
  readonly label: string
  readonly method: MaskMethod
}

export interface PatternEntry {
  readonly name: string
  readonly re: RE2
  readonly method: MaskMethod
}

/** Longest match assumed for a user pattern when bounding streaming hold-back (re2 patterns may be unbounded). */
export const USER_PATTERN_MAX_LENGTH = 1024

interface Combined {
  re: RegExp
  entries: DetectorEntry[]
  /** one sticky regex per entry, for a retry at the same position when a checksum rejects a match */
  sticky: RegExp[]
}

export interface ScanResult {
  text: string
  count: number
}

export interface StreamScan extends ScanResult {
  /** where the masked text ends: what follows is held for the next piece */
  cut: number
}

/** what JSON.stringify escapes in a string (any surrogate, paired or not, counted in) */
export const JSON_ESCAPED = /["\\\u0000-\u001f\ud800-\udfff]/

/**
 * Characters of already-answered text a streaming caller keeps before what it still holds: the
 * detectors' lookbehinds and \b read one, an email's local part walks back over at most 64.
 */
export const STREAM_CONTEXT = 72

function isHighSurrogate(code: number): boolean {
  return code >= 0xd800 && code <= 0xdbff
}

export class Scanner {
  readonly entries: readonly DetectorEntry[]
  readonly patterns: readonly PatternEntry[]
  readonly maxMatchLength: number
  private readonly wanted: number
  private readonly combined = new Map<number, Combined | null>()
  private readonly hashKey: KeyObject
  /** email runs outside the combined regex (see findEmails) */
  private readonly email: DetectorEntry | undefined
  /** its kind (index in `entries`) */
  private readonly emailKind: number
  private readonly regexEntries: readonly DetectorEntry[]
  /** entry → its index in `entries` (a span's kind; patterns follow the entries) */
  private readonly kindOf = new Map<DetectorEntry, number>()
  /**
   * Every hit is replaced by a fixed text that JSON.stringify would not escape (no '"', '\\',
   * control character or surrogate): masked text made of plain text and these is plain too.
   */
  readonly plainReplacements: boolean
  /** per kind (entries, then patterns): the replacement when it does not depend on the hit */
  private readonly fixed: readonly (string | undefined)[]
  /** what bounds a streaming cut, per detector and pattern */
  private readonly bounds: readonly { maxLength: number; chars?: (code: number) => boolean }[]

  constructor(entries: DetectorEntry[], patterns: PatternEntry[], hashKey: KeyObject) {
    this.entries = entries
    this.email = entries.find(e => e.detector.name === 'email')
    this.regexEntries = entries.filter(e => e !== this.email)
    this.patterns = patterns
    this.hashKey = hashKey
    let wanted = 0
    let max = 0
    for (const e of entries) {
      wanted |= e.detector.trigger
      max = Math.max(max, e.detector.maxLength)
    }
    if (patterns.length > 0) max = Math.max(max, USER_PATTERN_MAX_LENGTH)
    this.wanted = wanted
    this.maxMatchLength = max
    entries.forEach((e, i) => this.kindOf.set(e, i))
    this.emailKind = this.email === undefined ? -1 : entries.indexOf(this.email)
    // redact and null put '[REDACTED:<label>]' in place of any hit: made once, not per hit
    this.fixed = [...entries.map(e => e.method), ...patterns.map(p => p.method)].map((m, k) =>
      m === 'redact' || m === 'null' ? this.replacementOf(k, '') : undefined,
    )
    this.plainReplacements = this.fixed.every(r => r !== undefined && !JSON_ESCAPED.test(r))
    this.bounds = [
      ...entries.map(e => ({ maxLength: e.detector.maxLength, chars: e.detector.chars })),
      ...patterns.map(() => ({ maxLength: USER_PATTERN_MAX_LENGTH })),
    ]
  }

  get empty(): boolean {
    return this.entries.length === 0 && this.patterns.length === 0
  }

  private combinedFor(triggers: number): Combined | null {
    let c = this.combined.get(triggers)
    if (c === undefined) {
      const entries = this.regexEntries.filter(e => (e.detector.trigger & triggers) !== 0)
      c =
        entries.length === 0
          ? null
          : {
              re: new RegExp(entries.map(e => `(${e.detector.source})`).join('|'), 'g'),
              entries,
              sticky: entries.map(e => new RegExp(e.detector.source, 'y')),
            }
      this.combined.set(triggers, c)
    }
    return c
  }

  scan(text: string): ScanResult {
    const spans = this.spansOf(text, 0)
    return spans === undefined ? { text, count: 0 } : this.build(text, spans, 0, text.length)
  }

  /**
   * One piece of a text that arrives in parts (a streamed reply): `text[0, from)` was answered by an
   * earlier call and is only context now (lookbehinds, an email's local part); `text[from, cut)` comes
   * back masked, and `cut` is chosen so that no text appended later can change a match that starts
   * before it. The caller keeps `text.slice(cut - STREAM_CONTEXT)` (or all of it) and appends the next
   * piece; `final` (the stream ended) takes everything.
   */
  scanStream(text: string, from: number, final: boolean): StreamScan {
    const spans = this.spansOf(text, from)
    let cut = final ? text.length : this.openFrom(text, from)
    for (let moved = !final; moved; ) {
      moved = false
      // a surrogate pair stays together (half of one would reach the client as U+FFFD)
      if (cut > from && cut < text.length && isHighSurrogate(text.charCodeAt(cut - 1))) {
        cut--
        moved = true
      }
      // a match found now that runs past the cut (a bounded-length detector's floor falls inside
      // it) is held whole: the next piece might still change it
      if (spans !== undefined) {
        for (let i = 0; i < spans.length && spans[i] < cut; i += 3) {
          if (spans[i + 1] > cut) {
            cut = spans[i]
            moved = true
            break
          }
        }
      }
    }
    if (spans === undefined) return { text: text.slice(from, cut), count: 0, cut }
    const r = this.build(text, spans, from, cut)
    return { text: r.text, count: r.count, cut }
  }

  /**
   * Are the matches that start after `code` those of the text after it on its own? For the built-in
   * detectors, after a space, tab or line end: each one's lookbehind is a single character of a class
   * without white space (`(?<![\w-])` and the like), an email's local part never takes one, and a
   * string's start reads as such a character does. A user pattern (`^`, `\b`, a lookbehind of its
   * own) may read more: never then. Matches running across it (cards, phones) are scanStream's cut's
   * to hold back, not this.
   */
  freshAfter(code: number): boolean {
    return this.patterns.length === 0 && (code === 32 || code === 10 || code === 9 || code === 13)
  }

  /**
   * Where the text can still be reached by a match that later text completes, at the earliest: for
   * each detector, the run of characters at the end that its matches may consist of (`chars`), and
   * never earlier than its longest match allows.
   */
  private openFrom(text: string, from: number): number {
    const len = text.length
    let cut = len
    for (const b of this.bounds) {
      // a match starting before this ends before the last character, which its lookahead may read
      const floor = len - b.maxLength
      let c = floor
      if (b.chars !== undefined) {
        c = len
        while (c > floor && c > 0 && b.chars(text.charCodeAt(c - 1))) c--
      }
      if (c < cut) cut = c
    }
    return cut < from ? from : cut
  }

  /** the matches that start at `from` or later, as flat triples [start, end, kind], in order, no overlaps */
  private spansOf(text: string, from: number): number[] | undefined {
    let spans: number[] | undefined
    let sources = 0

    const triggers = this.wanted === 0 ? 0 : triggersOf(text, this.wanted)
    // email alone (the usual plan) has no combined regex: no lookup of one per call
    const c = triggers === 0 || this.regexEntries.length === 0 ? null : this.combinedFor(triggers)
    if (c !== null) {
      const re = c.re
      // a regex started at lastIndex still reads what stands before it (lookbehinds)
      re.lastIndex = from
      let m: RegExpExecArray | null
      while ((m = re.exec(text)) !== null) {
        let g = 1
        while (m[g] === undefined) g++
        let entry: DetectorEntry | undefined = c.entries[g - 1]
        let hit = m[0]
        const start = m.index
        if (entry.detector.validate !== undefined && !entry.detector.validate(hit)) {
          // a checksum said no: a later kind may still match here (a Luhn-invalid run is not a card
          // but could be something else); otherwise move on by one character
          entry = undefined
          for (let j = g; j < c.entries.length && entry === undefined; j++) {
            const s = c.sticky[j]
            s.lastIndex = start
            const sm = s.exec(text)
            const d = c.entries[j].detector
            if (sm !== null && (d.validate === undefined || d.validate(sm[0]))) {
              entry = c.entries[j]
              hit = sm[0]
            }
          }
          re.lastIndex = entry === undefined ? start + 1 : start + hit.length
          if (entry === undefined) continue
        }
        spans ??= []
        spans.push(start, start + hit.length, this.kindOf.get(entry)!)
      }
      if (spans !== undefined) sources++
    }

    const email = this.email
    if (email !== undefined && (triggers & Trigger.At) !== 0) {
      // the triples pushed straight into the spans (no callback made per call)
      const out = spans ?? []
      const n = out.length
      findEmailSpans(text, from, out, this.emailKind)
      if (out.length > n) {
        spans = out
        sources++
      }
    }

    for (let i = 0; i < this.patterns.length; i++) {
      const re = this.patterns[i].re
      // re2 too reads the text before lastIndex as context (\b)
      re.lastIndex = from
      let found = false
      let m: RegExpExecArray | null
      while ((m = re.exec(text)) !== null) {
        if (m[0].length === 0) {
          re.lastIndex++
          continue
        }
        spans ??= []
        spans.push(m.index, m.index + m[0].length, this.entries.length + i)
        found = true
      }
      if (found) sources++
    }

    if (spans !== undefined && sources > 1) spans = resolveOverlaps(spans)
    return spans
  }

  /** text[from, to) with the spans that start before `to` replaced */
  private build(text: string, spans: number[], from: number, to: number): ScanResult {
    let out = ''
    let pos = from
    let i = 0
    for (; i < spans.length && spans[i] < to; i += 3) {
      const k = spans[i + 2]
      const replacement = this.fixed[k] ?? this.replacementOf(k, text.slice(spans[i], spans[i + 1]))
      out += text.slice(pos, spans[i]) + replacement
      pos = spans[i + 1]
    }
    if (i === 0) return { text: from === 0 && to === text.length ? text : text.slice(from, to), count: 0 }
    out += text.slice(pos, to)
    return { text: out, count: i / 3 }
  }

  private replacementOf(k: number, hit: string): string {
    return k < this.entries.length
      ? this.replace(this.entries[k].method, hit, this.entries[k].label, this.entries[k].detector.name)
      : this.replace(this.patterns[k - this.entries.length].method, hit, this.patterns[k - this.entries.length].name, this.patterns[k - this.entries.length].name)
  }

  private replace(method: MaskMethod, hit: string, label: string, kind: string): string {
    // partial knows the shape of emails and cards by the detector's own name, redact shows the label
    return maskValue(method, hit, this.hashKey, method === 'partial' ? kind : label) as string
  }
}

/** Sorts triples by start and drops any span overlapping an earlier (or, at the same start, longer) one. */
function resolveOverlaps(spans: number[]): number[] {
  const idx: number[] = []
  for (let i = 0; i < spans.length; i += 3) idx.push(i)
  idx.sort((a, b) => spans[a] - spans[b] || spans[b + 1] - spans[a + 1])
  const out: number[] = []
  let end = -1
  for (const i of idx) {
    if (spans[i] < end) continue
    out.push(spans[i], spans[i + 1], spans[i + 2])
    end = spans[i + 1]
  }
  return out
}
