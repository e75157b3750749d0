// Free-text scanning: every configured detector in one pass over the value. The built-ins are one
// combined alternation, compiled lazily per set of satisfied pre-checks (text without '@' never runs
// the email branch); user patterns are re2 (linear time) and run after it. Nothing matched → the
// caller gets its own string back, no copy.
import type { KeyObject } from 'node:crypto'
import RE2 from 're2'
import type { MaskMethod } from '../types.ts'
import { type Detector, Trigger, findEmails, triggersOf } from './detectors.ts'
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

export class Scanner {
  readonly entries: readonly DetectorEntry[]
  readonly patterns: readonly PatternEntry[]
  readonly maxMatchLength: number
  private readonly wanted: number
  private readonly combined = new Map<number, Combined | null>()
  private readonly hashKey: KeyObject
  /** email runs outside the combined regex (see findEmails) */
  private readonly email: DetectorEntry | undefined
  private readonly regexEntries: readonly DetectorEntry[]

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
    // spans as flat triples [start, end, replacementIndex] to avoid an object per hit
    let spans: number[] | undefined
    let replacements: string[] | undefined
    let sources = 0

    const triggers = this.wanted === 0 ? 0 : triggersOf(text, this.wanted)
    const c = triggers === 0 ? null : this.combinedFor(triggers)
    if (c !== null) {
      const re = c.re
      re.lastIndex = 0
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
        replacements ??= []
        spans.push(start, start + hit.length, replacements.length)
        replacements.push(this.replace(entry.method, hit, entry.label, entry.detector.name))
      }
      if (spans !== undefined) sources++
    }

    const email = this.email
    if (email !== undefined && (triggers & Trigger.At) !== 0) {
      let found = false
      findEmails(text, (start, end) => {
        spans ??= []
        replacements ??= []
        spans.push(start, end, replacements.length)
        replacements.push(this.replace(email.method, text.slice(start, end), email.label, 'email'))
        found = true
      })
      if (found) sources++
    }

    for (const p of this.patterns) {
      const re = p.re
      re.lastIndex = 0
      let found = false
      let m: RegExpExecArray | null
      while ((m = re.exec(text)) !== null) {
        if (m[0].length === 0) {
          re.lastIndex++
          continue
        }
        spans ??= []
        replacements ??= []
        spans.push(m.index, m.index + m[0].length, replacements.length)
        replacements.push(this.replace(p.method, m[0], p.name, p.name))
        found = true
      }
      if (found) sources++
    }

    if (spans === undefined) return { text, count: 0 }
    if (sources > 1) spans = resolveOverlaps(spans)
    let out = ''
    let pos = 0
    for (let i = 0; i < spans.length; i += 3) {
      out += text.slice(pos, spans[i]) + replacements![spans[i + 2]]
      pos = spans[i + 1]
    }
    out += text.slice(pos)
    return { text: out, count: spans.length / 3 }
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
