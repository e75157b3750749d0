// What the gateway does with a response body under a mask plan, by what the body is — the declared
// Content-Type is only a hint, since an upstream (or a client choosing `Accept`) can label JSON as
// text/plain, NDJSON or nothing at all:
//
//   text/event-stream          → event by event (sse.ts)
//   textual (JSON, text/*, NDJSON, XML, form, none declared)
//                              → decoded, read whole (bounded), and then: JSON anywhere it parses
//                                (field rules and detectors, masked in place); one JSON value per
//                                line when every line parses; otherwise the detectors over the text.
//                                Declared JSON that does not parse, or bytes that are not UTF-8, are
//                                refused: there is no telling what is in them.
//   anything else (binary, multipart, octet-stream, media)
//                              → refused (502 unmaskable_response), unless the target lists the type
//                                in options.unmaskedResponseTypes (e.g. audio/* for text-to-speech).
import { isUtf8 } from 'node:buffer'
import type { MaskPlan, TargetConfig } from '@portcullis/core'
import { httpError } from './errors.ts'
import { maskJsonText, UnmaskableJson } from './json-mask.ts'

/** sse and text are masked; unmasked passes as it came (the target said so); refused is refused */
export type BodyKind = 'sse' | 'text' | 'unmasked' | 'refused'

export function isJsonType(ct: string | undefined): boolean {
  return !!ct && /^\s*application\/(?:[\w.+-]*\+)?json\b/i.test(ct)
}

const TEXTUAL = /^\s*(?:text\/|application\/(?:[\w.+-]*\+)?(?:json|xml)\b|application\/(?:x-)?ndjson\b|application\/jsonl\b|application\/json-seq\b|application\/(?:x-)?javascript\b|application\/x-www-form-urlencoded\b|application\/graphql)/i

export function bodyKind(ctype: string, target: TargetConfig): BodyKind {
  if (/^\s*text\/event-stream\b/i.test(ctype)) return 'sse'
  if (ctype.trim() === '' || TEXTUAL.test(ctype)) return 'text'
  return unmaskedType(ctype, target) ? 'unmasked' : 'refused'
}

/** the target lets this media type through unmasked (options.unmaskedResponseTypes: ['audio/*', …]) */
export function unmaskedType(ctype: string, target: TargetConfig): boolean {
  const list = target.options.unmaskedResponseTypes
  if (!Array.isArray(list)) return false
  const type = ctype.split(';')[0]!.trim().toLowerCase()
  for (const entry of list) {
    if (typeof entry !== 'string') continue
    const e = entry.trim().toLowerCase()
    if (e === type || (e.endsWith('/*') && type.startsWith(e.slice(0, -1)))) return true
  }
  return false
}

export function unmaskable(ctype: string): Error {
  const type = ctype.split(';')[0]!.trim() || 'untyped'
  return httpError(502, 'unmaskable_response', `the upstream answered ${type}, which the gateway cannot mask; refused under this session's masking rules`)
}

/** a whole, decoded textual body → the body to send and how many values were masked */
export function maskTextBody(body: Buffer, ctype: string, masks: MaskPlan): { body: Buffer; count: number } {
  if (!isUtf8(body)) throw unmaskable(ctype)
  const text = body.toString('utf8')
  const declaredJson = isJsonType(ctype)
  const declaredLines = /ndjson|jsonl|json-seq/i.test(ctype)
  const first = firstChar(text)
  if (declaredJson || declaredLines || first === '{' || first === '[') {
    let r: { text: string; count: number } | undefined
    try {
      r = maskJsonText(text, masks)
    } catch (err) {
      if (err instanceof UnmaskableJson) throw httpError(502, 'unmaskable_response', `${err.message}; refused under this session's masking rules`)
      r = maskLines(text, masks)
    }
    if (r) return r.count > 0 ? { body: Buffer.from(r.text), count: r.count } : { body, count: 0 }
    // declared JSON that is not: there is no telling which of it a field rule would have masked
    if (declaredJson || declaredLines) throw httpError(502, 'upstream_unreadable', 'the upstream response is declared JSON but does not parse; refused under masking')
  }
  if (!masks.hasDetectors) return { body, count: 0 }
  const r = masks.scan(text)
  return r.count > 0 ? { body: Buffer.from(r.text), count: r.count } : { body, count: 0 }
}

/** one JSON value per line (NDJSON, JSON Lines, JSON text sequences); undefined when a line is not JSON */
function maskLines(text: string, masks: MaskPlan): { text: string; count: number } | undefined {
  const lines = text.split('\n')
  let count = 0
  for (let i = 0; i < lines.length; i++) {
    let line = lines[i]!
    // RFC 7464 record separators and CRLF line ends stay as they came
    const lead = line.startsWith('\x1e') ? '\x1e' : ''
    const cr = line.endsWith('\r') ? '\r' : ''
    line = line.slice(lead.length, line.length - cr.length)
    if (line.trim() === '') continue
    let r
    try {
      r = maskJsonText(line, masks)
    } catch (err) {
      if (err instanceof UnmaskableJson) throw httpError(502, 'unmaskable_response', `${err.message}; refused under this session's masking rules`)
      return undefined
    }
    count += r.count
    if (r.count > 0) lines[i] = lead + r.text + cr
  }
  return { text: count > 0 ? lines.join('\n') : text, count }
}

function firstChar(text: string): string {
  for (let i = 0; i < text.length && i < 1024; i++) {
    const c = text[i]!
    if (c !== ' ' && c !== '\n' && c !== '\r' && c !== '\t' && c !== '\ufeff') return c
  }
  return ''
}
