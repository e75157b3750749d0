// The events of one stream are alike: the same id, model, created, choice index and finish_reason,
// only the delta's text differs (`{"id":"…","choices":[{"index":0,"delta":{"content":"…"}…}]}`). An
// event that is, byte for byte, the last parsed delta event outside the delta string — the same text
// before the string's opening quote and after its closing one — with a well-formed JSON string in
// between is that event with another text: JSON.parse would give the same object but for that one
// string, so deltaSlots the same slot, and the field rules and detectors the same results everywhere
// else. Those results are kept from the parsed event's walk (the masked text before and after the
// string, the values replaced there) and such an event costs two compares, the string's check and its
// own masking: no JSON.parse, no walk. Anything else (another shape, an event line, a string that is
// not JSON) goes the full way, and may become the next shape.
import { JSON_ESCAPED } from '@portcullis/core'
import type { Mark } from './json-mask.ts'

/** what eventBody made of the event's lines before its data (the same for every event that has them) */
export interface ShapeLines {
  /** the raw event up to its data's text: 'data: ', or 'event: …\ndata: ' */
  readonly rawPrefix: string
  /** the lines other than data as they go out (detectors applied), and the values replaced there */
  readonly other: readonly string[]
  readonly lineCount: number
  /** the lines were changed (a value masked, a line dropped): the event is rebuilt */
  readonly linesChanged: boolean
}

export interface Shape extends ShapeLines {
  /** the parsed event's text before the delta string's opening quote, and after its closing one */
  readonly head: string
  readonly tail: string
  /** the same after the walk (field rules, detectors) */
  readonly maskedHead: string
  readonly maskedTail: string
  /** values the walk replaced in head and tail */
  readonly restCount: number
  /** the delta as deltaSlots named it */
  readonly key: string
  readonly path: string
  readonly builtPath: string
  readonly prefix: string
  /**
   * The event as it goes out, around the masked delta string: 'data: ' + maskedHead and maskedTail +
   * '\n\n', what serialize() makes of it when there are no other lines and head and tail hold no line
   * break (the delta string has none: raw or from jsonString); undefined: serialize() builds it.
   */
  readonly outHead: string | undefined
  readonly outTail: string | undefined
}

/** the shape of a parsed event whose one delta string the walk marked; undefined when it met that path more than once */
export function shapeOf(text: string, masked: string, count: number, mark: Mark, delta: { key: string; path: string; builtPath: string; prefix: string }, lines: ShapeLines): Shape | undefined {
  if (mark.n !== 1) return undefined
  const maskedHead = masked.slice(0, mark.outStart)
  const maskedTail = masked.slice(mark.outEnd)
  const plain = lines.other.length === 0 && maskedHead.indexOf('\n') === -1 && maskedTail.indexOf('\n') === -1
  return {
    ...lines,
    head: text.slice(0, mark.inStart),
    tail: text.slice(mark.inEnd),
    maskedHead,
    maskedTail,
    outHead: plain ? 'data: ' + maskedHead : undefined,
    outTail: plain ? maskedTail + '\n\n' : undefined,
    restCount: count - mark.count,
    key: delta.key,
    path: delta.path,
    builtPath: delta.builtPath,
    prefix: delta.prefix,
  }
}

/** the delta string (quotes included) when `text` is the shape's event with another string in it */
export function fits(shape: Shape, text: string): string | undefined {
  const start = shape.head.length
  const end = text.length - shape.tail.length
  // compared as strings, not with startsWith / endsWith: those walk the text a character at a time
  // (0.66 µs for the bench's 190 characters of head and tail, against 0.10 µs for two substrings)
  if (end - start < 2 || text.substring(0, start) !== shape.head || text.substring(end) !== shape.tail) return undefined
  return stringEnd(text, start) === end ? text.slice(start, end) : undefined
}

/**
 * JSON.stringify(s) for a string, without the stringifier's setup: a string with nothing that
 * JSON.stringify escapes (JSON_ESCAPED: any surrogate counts, paired or not) is itself between
 * quotes. For the bench's 52-character masked delta 0.12 µs against 0.23 µs (a charCodeAt loop over
 * it cost 0.21 µs). sse-shapes.test.ts holds the two equal over every character class and position.
 */
export function jsonString(s: string): string {
  return JSON_ESCAPED.test(s) ? JSON.stringify(s) : '"' + s + '"'
}

/**
 * What the last stringEnd that found a string saw in it: `plain` when it had no escape and no
 * surrogate, i.e. its text (the characters between the quotes) has nothing JSON.stringify escapes
 * (JSON_ESCAPED): the masker then need not test the delta's text again (a regex test of it was
 * 0.19 µs an event). Read it right after the fits()/stringEnd() call it belongs to.
 */
export const lastString = { plain: false }

/**
 * Past the JSON string that starts at `p` (at its quote): what JSON.parse reads as one, no control
 * character, every escape one of \" \\ \/ \b \f \n \r \t \uXXXX. -1 when there is none.
 */
export function stringEnd(t: string, p: number): number {
  if (t.charCodeAt(p) !== 34) return -1
  let plain = true
  for (p++; ; ) {
    const c = t.charCodeAt(p)
    if (c === 34) {
      lastString.plain = plain
      return p + 1
    }
    // NaN (the text ended) fails c >= 0x20
    if (!(c >= 0x20)) return -1
    if (c !== 92) {
      if (c >= 0xd800 && c <= 0xdfff) plain = false
      p++
      continue
    }
    plain = false
    const e = t.charCodeAt(p + 1)
    if (e === 117 /* u */) {
      for (let i = 2; i < 6; i++) if (!isHex(t.charCodeAt(p + i))) return -1
      p += 6
    } else if (e === 34 || e === 92 || e === 47 || e === 98 || e === 102 || e === 110 || e === 114 || e === 116) p += 2
    else return -1
  }
}

function isHex(c: number): boolean {
  return (c >= 48 && c <= 57) || (c >= 97 && c <= 102) || (c >= 65 && c <= 70)
}
