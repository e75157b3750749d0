// Statement text for approvers, audit and replay. libpg_query's normalize replaces the constants the
// parser sees (A_Const) with $n; what it leaves (COPY file names, NOTIFY payloads, OPTIONS values such
// as a foreign server's password) and comments (free text, possibly PII) are removed here from the
// token stream, so no literal typed by a client reaches a log.
import { normalize, scan, type Token } from './parser.ts'

// libpg_query reports offsets in bytes of the UTF-8 text; JS strings index UTF-16 units.
const NON_ASCII = /[^\x00-\x7f]/

/** Slices [start, end) measured in UTF-8 bytes. */
export function sliceBytes(text: string, start: number, end: number | undefined): string {
  if (!NON_ASCII.test(text)) return text.slice(start, end)
  return Buffer.from(text, 'utf8').subarray(start, end).toString('utf8')
}

const STRING_TOKEN = new Set(['SCONST', 'USCONST', 'BCONST', 'XCONST'])
// Bit/hex strings (B'…', X'…') and dollar-quoted strings may come back as UNKNOWN tokens.
const STRING_TEXT = /^(?:[bBxXeEnN]|[uU]&)?'|^\$(?:[A-Za-z_\x80-\uffff][\w\x80-\uffff]*)?\$/

function isComment(t: Token): boolean {
  return t.name === 'SQL_COMMENT' || t.name === 'C_COMMENT'
}

function isStringLiteral(t: Token): boolean {
  return STRING_TOKEN.has(t.name) || STRING_TEXT.test(t.text)
}

/** Highest $n already in the text, so our placeholders continue normalize's numbering. */
function maxParam(tokens: Token[]): number {
  let max = 0
  for (const t of tokens) {
    if (t.name === 'PARAM') {
      const n = Number(t.text.slice(1))
      if (n > max) max = n
    }
  }
  return max
}

/**
 * Normalized, comment-free, single-spaced text of one statement. Tokens are kept as the client wrote
 * them (identifiers, keywords); every literal becomes $n.
 */
export function statementText(sql: string): string {
  const normalized = normalize(COMMENT.test(sql) ? blankComments(sql) : sql)
  // no quote, no comment, no dollar quote left: only whitespace to fold, no scan needed
  if (!MAY_HOLD_TEXT.test(normalized)) return normalized.replace(/[ \t\n\r\f\v]+/g, ' ').replace(/^ | $/g, '')
  return redact(normalized, false)
}

const MAY_HOLD_TEXT = /['"]|--|\/\*|\$[^0-9]/
const COMMENT = /--|\/\*/

/**
 * Comments as spaces, byte for byte. libpg_query's normalize measures a negated constant from its
 * '-' and loses count over a comment: `x + -/* c *\/12345` came back as `x + $112345`, the value
 * in the text we log.
 */
function blankComments(sql: string): string {
  const bytes = Buffer.from(sql, 'utf8')
  let blanked = false
  for (const t of scan(sql)) {
    if (!isComment(t)) continue
    bytes.fill(0x20, t.start, t.end)
    blanked = true
  }
  return blanked ? bytes.toString('utf8') : sql
}

/**
 * Rebuilds text from its tokens: comments dropped, any whitespace between tokens becomes one space,
 * string literals become $n; so do numbers and quoted names when `unparsed` (text that did not
 * parse, so normalize could not run: any number there may be a value, and a "quoted" word a value
 * typed in the wrong quotes).
 */
export function redact(text: string, unparsed: boolean): string {
  const tokens = scan(text)
  let next = maxParam(tokens)
  const bytes = NON_ASCII.test(text) ? Buffer.from(text, 'utf8') : undefined
  // pieces joined once: `out +=` per token leaves a tree of cons strings (tens of bytes per token)
  // that the cached Operation would keep for as long as it is cached
  const out: string[] = []
  let length = 0
  let prevEnd = 0
  for (const t of tokens) {
    if (isComment(t)) continue
    if (length > 0 && t.start > prevEnd) {
      out.push(' ')
      length++
    }
    prevEnd = t.end
    const piece =
      isStringLiteral(t) || (unparsed && (t.name === 'ICONST' || t.name === 'FCONST' || t.text.startsWith('"') || t.name === 'UIDENT'))
        ? '$' + ++next
        : bytes
          ? bytes.subarray(t.start, t.end).toString('utf8')
          : text.slice(t.start, t.end)
    out.push(piece)
    length += piece.length
  }
  return out.join('')
}
