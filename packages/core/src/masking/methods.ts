// The four masking methods. `kind` is what was found (a detector name, a user pattern name) or
// undefined for a whole column/field/key value.
import { createHmac, type KeyObject } from 'node:crypto'
import type { MaskMethod } from '../types.ts'

/** Strictest first: when several rules cover one value, the earliest method here wins. */
const STRICTNESS: Record<MaskMethod, number> = { null: 3, redact: 2, hash: 1, partial: 0 }

export function stricter(a: MaskMethod | undefined, b: MaskMethod): MaskMethod {
  return a === undefined || STRICTNESS[b] > STRICTNESS[a] ? b : a
}

export const MASK_METHODS: readonly MaskMethod[] = ['redact', 'partial', 'hash', 'null']

/**
 * 'hash:' + first 16 hex of HMAC-SHA256(key, value): stable per key, so equal values stay equal.
 * Plans pass a KeyObject made once (createSecretKey), sparing a key import per value.
 */
export function hashValue(key: Buffer | KeyObject, value: string): string {
  return 'hash:' + createHmac('sha256', key).update(value).digest('hex').slice(0, 16)
}

const EMAIL_SHAPE = /^[^@\s]+@[^@\s]+$/
const CARD_SHAPE = /^[\d -]{13,}$/

/**
 * Keep a little: email → first char + '***@' + domain; card → last 4 digits; anything else → up to
 * 2 characters at each end with '*' between, never more than a third of the value kept.
 */
export function partialValue(value: string, kind?: string): string {
  if ((kind === 'email' || kind === undefined) && EMAIL_SHAPE.test(value)) {
    const at = value.lastIndexOf('@')
    return value[0] + '***' + value.slice(at)
  }
  if (kind === 'card' || (kind === undefined && CARD_SHAPE.test(value))) {
    let digits = 0
    for (let i = 0; i < value.length; i++) if (value.charCodeAt(i) >= 48 && value.charCodeAt(i) <= 57) digits++
    if (digits >= 13) {
      let out = ''
      let seen = 0
      for (let i = 0; i < value.length; i++) {
        const c = value.charCodeAt(i)
        if (c >= 48 && c <= 57) out += ++seen > digits - 4 ? value[i] : '*'
        else out += value[i]
      }
      return out
    }
  }
  const keep = Math.min(2, Math.floor(value.length / 6))
  return value.slice(0, keep) + '*'.repeat(value.length - 2 * keep) + value.slice(value.length - keep)
}

/**
 * Masks one value. Detector hits inside text pass their kind and get '[REDACTED:<kind>]'; whole
 * values get '[REDACTED]'. 'null' on a whole value is null; inside text there is no null, so a hit
 * is redacted instead (fail closed, and the reader sees why).
 */
export function maskValue(method: MaskMethod, value: string, hashKey: Buffer | KeyObject, kind?: string): string | null {
  switch (method) {
    case 'redact':
      return kind === undefined ? '[REDACTED]' : `[REDACTED:${kind}]`
    case 'partial':
      return partialValue(value, kind)
    case 'hash':
      return hashValue(hashKey, value)
    case 'null':
      return kind === undefined ? null : `[REDACTED:${kind}]`
  }
}
