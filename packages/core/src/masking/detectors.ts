// Built-in detectors. Each is a JS RegExp source without capturing groups, so that one combined
// alternation `(a)|(b)|…` finds every kind in one pass and the group number names the kind.
// Built-ins use V8's irregexp rather than re2: they are ours, written to be linear from a fixed start
// (anchored by a lookbehind and a literal or class prefix), irregexp was faster on the short values
// that dominate (README.md has the numbers), and re2 lacks the lookaround the boundaries need.
import { isIPv6 } from 'node:net'
import { ibanValid, luhnValid } from './checks.ts'

/** Which cheap pre-check must pass before a detector's regex is worth running. */
export const Trigger = {
  At: 1, // '@'
  Digit: 2, // any ASCII digit
  Colon: 4, // hex ':' hex, or '::'
  Jwt: 8, // 'eyJ'
  Pem: 16, // '-----BEGIN'
  KeyPrefix: 32, // sk- _live_ AKIA ASIA gh?_ github_pat_ xox?-
} as const

export interface Detector {
  readonly name: string
  readonly source: string
  readonly trigger: number
  /** longest match in characters that the streaming hold-back must cover */
  readonly maxLength: number
  readonly validate?: (match: string) => boolean
  /**
   * Every character of every match passes this, and the detector looks at most one character past
   * a match: a streaming codec then holds back only the run of such characters at the end of what
   * it has, not maxLength (without it, maxLength bounds the hold-back).
   */
  readonly chars?: (code: number) => boolean
}

const isWordOrDash = (c: number): boolean => isAlnum(c) || c === 95 || c === 45
const isKeyChar = (c: number): boolean => isAlnum(c) || c === 95
const isSlackChar = (c: number): boolean => isAlnum(c) || c === 45
const isJwtChar = (c: number): boolean => isWordOrDash(c) || c === 46
const isUpperAlnum = (c: number): boolean => (c >= 65 && c <= 90) || (c >= 48 && c <= 57)
function isAlnum(c: number): boolean {
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57)
}
/** an email's characters: the local part's, '@' and the domain's (a subset of the local part's plus '.') */
const isEmailChar = (c: number): boolean => isLocalChar(c) || c === 64

const HEX = '[0-9A-Fa-f]'
const OCTET = '(?:25[0-5]|2[0-4]\\d|1\\d\\d|[1-9]?\\d)'
// PEM bodies are base64 lines plus optional RFC 1421 headers; '\\' admits JSON-escaped newlines.
// A body never holds '-----', so the lazy search for the END line stops at the next marker: text full
// of BEGIN lines costs linear time, not 8000 characters per BEGIN.
const PEM_BODY = '(?:[A-Za-z0-9+/=\\s:,.\\\\]|-(?!----))'
const PEM_LABEL = '(?:[A-Z0-9]+ )*PRIVATE KEY'
/** bound on a terminated PEM block's body (an RSA-4096 PKCS#8 key is ~3.2 KB; encrypted ones a little more) */
export const PEM_MAX_BODY = 8000

export const BUILTIN: readonly Detector[] = [
  {
    name: 'pem-private-key',
    // Terminated block within the bound; otherwise (unterminated or over-long) fail closed and take
    // the base64 run that follows the BEGIN line.
    source:
      `-----BEGIN ${PEM_LABEL}-----(?:${PEM_BODY}{0,${PEM_MAX_BODY}}?-----END ${PEM_LABEL}-----|[A-Za-z0-9+/=\\r\\n\\\\]*)`,
    trigger: Trigger.Pem,
    maxLength: 8192,
  },
  {
    name: 'jwt',
    source: '(?<![\\w-])eyJ[A-Za-z0-9_-]{2,}\\.eyJ[A-Za-z0-9_-]{2,}\\.[A-Za-z0-9_-]*',
    trigger: Trigger.Jwt,
    maxLength: 8192,
    chars: isJwtChar,
  },
  {
    name: 'openai-key',
    source: '(?<![\\w-])sk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}',
    trigger: Trigger.KeyPrefix,
    maxLength: 256,
    chars: isWordOrDash,
  },
  {
    name: 'aws-key',
    source: '(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])',
    trigger: Trigger.KeyPrefix,
    maxLength: 20,
    chars: isUpperAlnum,
  },
  {
    name: 'github-token',
    source: '(?<!\\w)(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})',
    trigger: Trigger.KeyPrefix,
    maxLength: 256,
    chars: isKeyChar,
  },
  {
    name: 'slack-token',
    source: '(?<![\\w-])xox[abposr]-[A-Za-z0-9-]{10,}',
    trigger: Trigger.KeyPrefix,
    maxLength: 256,
    chars: isSlackChar,
  },
  {
    name: 'stripe-key',
    source: '(?<!\\w)(?:sk|rk)_live_[A-Za-z0-9]{16,}',
    trigger: Trigger.KeyPrefix,
    maxLength: 256,
    chars: isKeyChar,
  },
  {
    name: 'email',
    // Also found without the combined regex (findEmails): a regex has to try the local part at every
    // word start, while searching for '@' and walking out from it is native and proportional to hits.
    // non-ASCII letters count in the local part and domain labels (RFC 6531, IDN): over-masking
    // 'text—anna' beats leaking 'jü' of 'jürgen'. The (ASCII) top-level label ends at any character
    // that is not an ASCII label's: 'bob@example.com—he', '…com。', '…com\u2028' are addresses (a
    // non-ASCII character there used to fail the whole match and let the address through)
    source:
      '(?<![A-Za-z0-9._%+\\u0080-\\uffff-])[A-Za-z0-9._%+\\u0080-\\uffff-]{1,64}@(?:[A-Za-z0-9\\u0080-\\uffff-]{1,63}\\.){1,8}[A-Za-z]{2,24}(?![A-Za-z0-9-])',
    trigger: Trigger.At,
    maxLength: 64 + 1 + 8 * 64 + 24,
    chars: isEmailChar,
  },
  {
    name: 'iban',
    source: '(?<![A-Za-z0-9])[A-Z]{2}\\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])',
    trigger: Trigger.Digit,
    maxLength: 42,
    validate: ibanValid,
  },
  {
    name: 'card',
    // Major networks start 2–6; 13–19 digits with optional single space/dash separators.
    source: '(?<![\\d+])[2-6]\\d(?:[ -]?\\d){11,17}(?!\\d)',
    trigger: Trigger.Digit,
    maxLength: 19 + 18,
    validate: luhnValid,
  },
  {
    name: 'ssn',
    source: '(?<![\\d-])(?!000|666|9\\d\\d)\\d{3}-(?!00)\\d{2}-(?!0000)\\d{4}(?![\\d-])',
    trigger: Trigger.Digit,
    maxLength: 11,
  },
  {
    name: 'phone',
    // NANP with separators ((555) 123-4567, 555-123-4567, +1 555.123.4567) or E.164-like +CC… (7–15 digits).
    // A bare run of digits is not taken: too many ids look like that.
    source:
      '(?<![\\w+])(?:(?:\\+?1[ .-]?)?(?:\\(\\d{3}\\) ?|\\d{3}[ .-])\\d{3}[ .-]\\d{4}|\\+[1-9]\\d{0,2}(?:[ .-]?\\d){6,14})(?![\\w])',
    trigger: Trigger.Digit,
    maxLength: 24,
  },
  {
    name: 'ipv4',
    source: `(?<![\\d.])(?:${OCTET}\\.){3}${OCTET}(?!\\.?\\d)`,
    trigger: Trigger.Digit,
    maxLength: 15,
  },
  {
    name: 'ipv6',
    // a loose candidate, then node's own parser decides
    source: `(?<![\\w:])(?:${HEX}{1,4}:|:)(?::|${HEX}{1,4}:){1,7}(?:${HEX}{1,4}|(?:\\d{1,3}\\.){3}\\d{1,3})?(?![\\w:])`,
    trigger: Trigger.Colon,
    maxLength: 45,
    validate: s => /[0-9A-Fa-f]/.test(s) && isIPv6(s),
  },
]

const byName = new Map(BUILTIN.map(d => [d.name, d]))

export const API_KEY_KINDS = ['openai-key', 'aws-key', 'github-token', 'slack-token', 'stripe-key'] as const

/** Names accepted in config `detectors:`; 'api-key' is every key kind, 'ip' both address families. */
export const DETECTORS: readonly string[] = Object.freeze([
  'email', 'phone', 'ssn', 'card', 'iban', 'ip', 'jwt', 'pem-private-key', 'api-key', ...API_KEY_KINDS,
])

/** The built-in detectors a config name stands for; undefined for an unknown name. */
export function expandDetector(name: string): Detector[] | undefined {
  if (name === 'api-key') return API_KEY_KINDS.map(k => byName.get(k)!)
  if (name === 'ip') return [byName.get('ipv4')!, byName.get('ipv6')!]
  const d = byName.get(name)
  return d && d.name !== 'ipv4' && d.name !== 'ipv6' ? [d] : undefined
}

const KEY_PREFIX = /sk-|_live_|AKIA|ASIA|gh[pousr]_|github_pat_|xox[abposr]-/
const DIGIT = /\d/
// every IPv6 text form has '::' or a hex digit on both sides of some ':' (JSON's '":' has neither)
const IPV6_HINT = /[0-9A-Fa-f]:[0-9A-Fa-f]|::/

/** Which triggers `text` satisfies, limited to `wanted`: native searches only, no regex per detector. */
export function triggersOf(text: string, wanted: number): number {
  let t = 0
  if (wanted & Trigger.At && text.indexOf('@') !== -1) t |= Trigger.At
  if (wanted & Trigger.Digit && DIGIT.test(text)) t |= Trigger.Digit
  if (wanted & Trigger.Colon && IPV6_HINT.test(text)) t |= Trigger.Colon
  if (wanted & Trigger.Jwt && text.indexOf('eyJ') !== -1) t |= Trigger.Jwt
  if (wanted & Trigger.Pem && text.indexOf('-----BEGIN') !== -1) t |= Trigger.Pem
  if (wanted & Trigger.KeyPrefix && KEY_PREFIX.test(text)) t |= Trigger.KeyPrefix
  return t
}

function isLocalChar(c: number): boolean {
  // A-Z a-z 0-9 . _ % + - and anything non-ASCII
  return (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c === 46 || c === 95 || c === 37 || c === 43 || c === 45 || c >= 0x80
}

const EMAIL_DOMAIN = /(?:[A-Za-z0-9\u0080-\uffff-]{1,63}\.){1,8}[A-Za-z]{2,24}(?![A-Za-z0-9-])/y

/**
 * The email detector without a regex over the whole text: for each '@', walk left over the local
 * part (1–64 characters, starting at a non-local character) and match the domain from there. Same
 * matches as the email regex; calls `hit(start, end)` in order.
 */
export function findEmails(text: string, hit: (start: number, end: number) => void, from = 0): void {
  const spans: number[] = []
  findEmailSpans(text, from, spans, 0)
  for (let i = 0; i < spans.length; i += 3) hit(spans[i], spans[i + 1])
}

/** findEmails's matches pushed onto `spans` as triples [start, end, kind] (the scanner's form) */
export function findEmailSpans(text: string, from: number, spans: number[], kind: number): void {
  let at = text.indexOf('@', from)
  // like a global regex, a match never starts inside the previous one (nor before `from`: text before
  // it was answered already, and a local part reaching back past it is no match here, as a regex
  // started there would find none)
  let floor = from
  while (at !== -1) {
    let s = at
    while (s > floor && at - s < 64 && isLocalChar(text.charCodeAt(s - 1))) s--
    if (s < at && (s === 0 || !isLocalChar(text.charCodeAt(s - 1)))) {
      EMAIL_DOMAIN.lastIndex = at + 1
      // test, not exec: a sticky regex leaves lastIndex at the match's end, and no match array is made
      if (EMAIL_DOMAIN.test(text)) {
        const end = EMAIL_DOMAIN.lastIndex
        spans.push(s, end, kind)
        floor = end
        at = text.indexOf('@', end)
        continue
      }
    }
    at = text.indexOf('@', at + 1)
  }
}
