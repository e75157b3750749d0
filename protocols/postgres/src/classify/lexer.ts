// The skeleton of a SQL text: its tokens as Postgres's scanner (src/backend/parser/scan.l) reads them,
// with every plain constant (string, number, bit string) replaced by a placeholder of its token kind,
// every run of whitespace by one space and every run holding a comment by one \x01. A comment's text
// is not kept but its place is: libpg_query's parser reads `NOT /* c */ IN` as a syntax error where
// the server reads NOT IN, so a text with a comment must not borrow the analysis of one without. Two
// texts with one skeleton give the grammar the same token stream except for those constants' values;
// the classifier (index.ts) decides whether its analysis of one text holds for all of them.
//
// Certainty over coverage: where this scanner and the server's could disagree (PG 15 upstream, the
// PG 17 grammar of libpg_query), a literal it cannot vouch for is kept as written (E'' strings with
// octal, hex or unicode escapes), and a text it cannot follow has no skeleton at all (unterminated
// literal or comment, U&'' and U&"" with their UESCAPE, a `--` comment inside a string
// continuation, a number with trailing junk or PG 16+ syntax — 0x1F, 1_000 —, a \v, a NUL, a
// backslash or another character outside the grammar). Such a text is classified by its exact
// text, as before. standard_conforming_strings is always on through
// the gateway (settings.ts refuses sessions that turn it off) and client encodings are parser-safe,
// so scanning the decoded JS string is scanning the server's bytes.

export interface Skeleton {
  /** the cache key: exact tokens, ' ' for whitespace, \x01 for a comment, \0 + kind for each constant */
  key: string
  /** keyHash(key) */
  hash: number
  /** UTF-16 offset of each constant replaced by a placeholder, in text order */
  literals: number[]
  /** for each of those: offset of a '-' right before it (a negated constant starts there), else -1 */
  minus: number[]
}

/**
 * A text's skeleton as the scanner left it, before any string is made of it: the key as pieces (runs
 * of the text, separators, placeholders) with their hash. The cache looks a key up by its hash and
 * compares the pieces with the key it finds (matches()), so a hit builds no key string and no
 * offset arrays (a skeleton hit used to allocate ~1 KB of them). Valid until the next scan.
 */
export interface ScannedSkeleton {
  readonly hash: number
  readonly literalCount: number
  /** true when `key` is this skeleton's key, compared piece by piece (no string built) */
  matches(key: string): boolean
  /** the Skeleton as strings and arrays of its own (valid after later scans) */
  materialize(): Skeleton
}

// character classes of scan.l
const C_SPACE = 1 // [ \t\n\r\f] (PG 15; \v only from PG 16: refused below)
const C_IDENT_START = 2 // [A-Za-z_\200-\377]
const C_DIGIT = 4
const C_SELF = 8 // [,()\[\].;:+\-*/%^<>=]
const C_OP = 16 // [~!@#^&|`?+\-*/%<>=]

const CLASS = new Uint8Array(128)
for (const c of ' \t\n\r\f') CLASS[c.charCodeAt(0)] |= C_SPACE
for (let c = 65; c <= 90; c++) CLASS[c] |= C_IDENT_START
for (let c = 97; c <= 122; c++) CLASS[c] |= C_IDENT_START
CLASS[95] |= C_IDENT_START
for (let c = 48; c <= 57; c++) CLASS[c] |= C_DIGIT
for (const c of ',()[].;:+-*/%^<>=') CLASS[c.charCodeAt(0)] |= C_SELF
for (const c of '~!@#^&|`?+-*/%<>=') CLASS[c.charCodeAt(0)] |= C_OP

const QUOTE = 39 // '
const DQUOTE = 34 // "
const DOLLAR = 36
const BACKSLASH = 92

function cls(c: number): number {
  return c < 128 ? CLASS[c]! : C_IDENT_START
}

function isIdentStart(c: number): boolean {
  return c >= 128 || (CLASS[c]! & C_IDENT_START) !== 0
}

/** ident_cont: [A-Za-z\200-\377_0-9\$] */
function isIdentCont(c: number): boolean {
  return c >= 128 || (CLASS[c]! & (C_IDENT_START | C_DIGIT)) !== 0 || c === DOLLAR
}

/** dolq_cont: [A-Za-z\200-\377_0-9] */
function isTagCont(c: number): boolean {
  return c >= 128 || (CLASS[c]! & (C_IDENT_START | C_DIGIT)) !== 0
}

/** The skeleton of `sql`, or undefined when this scanner is not certain how the server splits it. */
export function skeletonOf(sql: string): Skeleton | undefined {
  return scanSkeleton(sql)?.materialize()
}

/** The same, as pieces in the scanner's scratch space (valid until the next call). */
export function scanSkeleton(sql: string): ScannedSkeleton | undefined {
  // a NUL ends the server's C string, wherever it sits (index.ts refuses such texts): inside a
  // literal it would vanish into a placeholder
  if (sql.includes('\0')) return undefined
  const n = sql.length
  const b = scratch
  b.reset(sql)
  let i = 0
  while (i < n) {
    const c = sql.charCodeAt(i)
    const k = cls(c)
    if (k & C_SPACE) {
      if (b.sep === SEP_NONE) b.sep = SEP_SPACE
      i++
      continue
    }
    // comments start wherever `--` or `/*` appears, also inside a run of operator characters
    if (c === 45 && sql.charCodeAt(i + 1) === 45) {
      i += 2
      while (i < n && sql.charCodeAt(i) !== 10 && sql.charCodeAt(i) !== 13) i++
      b.sep = SEP_COMMENT
      continue
    }
    if (c === 47 && sql.charCodeAt(i + 1) === 42) {
      const end = blockCommentEnd(sql, i + 2)
      if (end < 0) return undefined
      i = end
      b.sep = SEP_COMMENT
      continue
    }
    const start = i
    if (c === QUOTE) {
      const end = quotedEnd(sql, i + 1, 'q')
      if (end < 0) return undefined
      b.placeholder('s', start)
      i = end
    } else if (c === DQUOTE) {
      const end = identEnd(sql, i + 1)
      if (end < 0) return undefined
      b.exact(start, end)
      i = end
    } else if (k & C_IDENT_START) {
      let j = i + 1
      while (j < n && isIdentCont(sql.charCodeAt(j))) j++
      const next = sql.charCodeAt(j)
      if (j === i + 1 && next === QUOTE) {
        // one-letter prefixes of scan.l: xestart, xbstart, xhstart, xnstart
        const r = prefixed(sql, c, j + 1)
        if (r === undefined) return undefined
        if (r.exact) b.exact(start, r.end)
        else {
          // E'' and N'' keep their letter (N'' is NCHAR + string to the grammar); B'' X'' are bits
          const letter = c | 32
          const kind = letter === 101 ? 'e' : letter === 110 ? 'n' : letter === 98 ? 'b' : 'x'
          b.placeholder(kind, letter === 110 ? start + 1 : start)
        }
        i = r.end
      } else if (j === i + 1 && (c | 32) === 117 && next === 38) {
        // U&'' strings and U&"" identifiers: how the parser looks past them for UESCAPE (comments
        // in between, the escape string's own form) is not ours to model
        return undefined
      } else {
        if (j - i === 7 && sql.slice(i, j).toLowerCase() === 'uescape') return undefined
        b.exact(start, j)
        i = j
      }
    } else if (c === DOLLAR) {
      const next = sql.charCodeAt(i + 1)
      if (next >= 48 && next <= 57) {
        // parameter $n; `$1abc` is junk to PG 15 and 17 alike
        let j = i + 2
        while (j < n && (cls(sql.charCodeAt(j)) & C_DIGIT) !== 0) j++
        if (j < n && isIdentCont(sql.charCodeAt(j))) return undefined
        b.exact(start, j)
        i = j
      } else {
        const end = dollarQuotedEnd(sql, i)
        if (end < 0) return undefined
        b.placeholder('s', start)
        i = end
      }
    } else if (k & C_DIGIT || (c === 46 && (cls(sql.charCodeAt(i + 1)) & C_DIGIT) !== 0)) {
      const r = numberEnd(sql, i)
      if (r === undefined) return undefined
      b.placeholder(r.kind, start)
      i = r.end
    } else if (k & (C_SELF | C_OP)) {
      // operators and punctuation are kept as written: how scan.l splits a run of them (the
      // trailing +/- rule) is the same for every text with this skeleton
      b.exact(i, i + 1)
      i++
    } else return undefined // backslash, braces, control characters, NUL, \v: not ours to guess
    b.prevEnd = i
  }
  b.done()
  // no tokens at all: an empty text and a comment are not the same to compile()
  return b.empty ? undefined : b
}

const SEP_NONE = 0
const SEP_SPACE = 1
const SEP_COMMENT = 2
/**
 * The fixed pieces of a key, by id: the separators (by SEP_*: '' for none) and the placeholder of
 * each constant kind. A piece is a run [start, end) of the text, or -id of one of these.
 */
const FIXED = ['', ' ', '\x01', '\0s', '\0e', '\0n', '\0b', '\0x', '\0i', '\0f']
const PLACEHOLDER: Record<string, number> = { s: 3, e: 4, n: 5, b: 6, x: 7, i: 8, f: 9 }

const FNV_OFFSET = 0x811c9dc5
const FNV_PRIME = 0x01000193

/** The hash the cache files a key under (FNV-1a over its UTF-16 code units), what a scan computes from its pieces. */
export function keyHash(key: string): number {
  let h = FNV_OFFSET
  for (let i = 0; i < key.length; i++) h = Math.imul(h ^ key.charCodeAt(i), FNV_PRIME)
  return h >>> 0
}

/**
 * The key as it grows: runs of exact tokens as one piece each, separators and constants as fixed
 * pieces, hashed as they come. One instance, reused by every scan.
 */
class KeyBuilder implements ScannedSkeleton {
  /** whitespace (SEP_SPACE) or a comment (SEP_COMMENT) since the last token */
  sep = SEP_NONE
  /** end of the previous significant token */
  prevEnd = -1
  private sql = ''
  private h = FNV_OFFSET
  private starts = new Int32Array(64)
  private ends = new Int32Array(64)
  private pieces = 0
  private lits = new Int32Array(16)
  private minuses = new Int32Array(16)
  private nlits = 0
  private runStart = -1
  private runEnd = -1

  reset(sql: string): void {
    this.sql = sql
    this.sep = SEP_NONE
    this.prevEnd = -1
    this.h = FNV_OFFSET
    this.pieces = 0
    this.nlits = 0
    this.runStart = this.runEnd = -1
  }

  get hash(): number {
    return this.h >>> 0
  }

  get literalCount(): number {
    return this.nlits
  }

  /** no piece with any text: an empty key */
  get empty(): boolean {
    return this.pieces === 0
  }

  private piece(start: number, end: number): void {
    if (this.pieces === this.starts.length) {
      const s = new Int32Array(this.pieces * 2)
      s.set(this.starts)
      this.starts = s
      const e = new Int32Array(this.pieces * 2)
      e.set(this.ends)
      this.ends = e
    }
    this.starts[this.pieces] = start
    this.ends[this.pieces] = end
    this.pieces++
    let h = this.h
    if (start >= 0) {
      const sql = this.sql
      for (let i = start; i < end; i++) h = Math.imul(h ^ sql.charCodeAt(i), FNV_PRIME)
    } else {
      const text = FIXED[-start]!
      for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), FNV_PRIME)
    }
    this.h = h
  }

  private flushRun(): void {
    if (this.runStart >= 0) this.piece(this.runStart, this.runEnd)
  }

  private separator(): void {
    if (this.sep !== SEP_NONE) this.piece(-this.sep, 0)
    this.sep = SEP_NONE
  }

  exact(start: number, end: number): void {
    if (this.sep !== SEP_NONE || start !== this.runEnd) {
      this.flushRun()
      this.separator()
      this.runStart = start
    }
    this.runEnd = end
  }

  /**
   * `at`: where the grammar reports the constant (A_Const.location): its first character, the
   * quote of N'' (NCHAR is a token of its own).
   */
  placeholder(kind: string, at: number): void {
    this.flushRun()
    this.runStart = this.runEnd = -1
    this.separator()
    this.piece(-PLACEHOLDER[kind]!, 0)
    if (this.nlits === this.lits.length) {
      const l = new Int32Array(this.nlits * 2)
      l.set(this.lits)
      this.lits = l
      const m = new Int32Array(this.nlits * 2)
      m.set(this.minuses)
      this.minuses = m
    }
    this.lits[this.nlits] = at
    // a '-' ending the token just before (`-5`, `x*-5`): the grammar folds it into the constant
    this.minuses[this.nlits] = this.prevEnd > 0 && this.sql.charCodeAt(this.prevEnd - 1) === 45 ? this.prevEnd - 1 : -1
    this.nlits++
  }

  done(): void {
    this.flushRun()
    this.runStart = this.runEnd = -1
  }

  matches(key: string): boolean {
    const sql = this.sql
    let k = 0
    for (let p = 0; p < this.pieces; p++) {
      const start = this.starts[p]!
      if (start >= 0) {
        const end = this.ends[p]!
        if (k + end - start > key.length) return false
        for (let i = start; i < end; i++) if (key.charCodeAt(k++) !== sql.charCodeAt(i)) return false
      } else {
        const text = FIXED[-start]!
        if (k + text.length > key.length) return false
        for (let i = 0; i < text.length; i++) if (key.charCodeAt(k++) !== text.charCodeAt(i)) return false
      }
    }
    return k === key.length
  }

  materialize(): Skeleton {
    let key = ''
    for (let p = 0; p < this.pieces; p++) {
      const start = this.starts[p]!
      key += start >= 0 ? this.sql.slice(start, this.ends[p]!) : FIXED[-start]!
    }
    const literals: number[] = []
    const minus: number[] = []
    for (let i = 0; i < this.nlits; i++) {
      literals.push(this.lits[i]!)
      minus.push(this.minuses[i]!)
    }
    return { key, hash: this.hash, literals, minus }
  }
}

const scratch = new KeyBuilder()

/** After `/*`: the end of the (nested) comment, or -1 when it does not end. */
function blockCommentEnd(sql: string, i: number): number {
  let depth = 1
  const n = sql.length
  while (i < n) {
    const c = sql.charCodeAt(i)
    if (c === 47 && sql.charCodeAt(i + 1) === 42) {
      depth++
      i += 2
    } else if (c === 42 && sql.charCodeAt(i + 1) === 47) {
      i += 2
      if (--depth === 0) return i
    } else i++
  }
  return -1
}

/** After the opening `"`: the end of a quoted identifier ("" is a quote), -1 when unterminated. */
function identEnd(sql: string, i: number): number {
  const n = sql.length
  while (i < n) {
    if (sql.charCodeAt(i) === DQUOTE) {
      if (sql.charCodeAt(i + 1) === DQUOTE) i += 2
      else return i + 1
    } else i++
  }
  return -1
}

/**
 * After an opening quote: the end of the string, including the parts scan.l joins to it
 * ('a' <newline> 'b' is one constant). `mode`: q plain ('' is a quote), e escape string
 * (backslash escapes), b bit/hex (ends at the first quote). -1 when unterminated; for `e`, -2 - end
 * when an escape is one this scanner does not vouch for (the caller keeps it as written).
 */
function quotedEnd(sql: string, i: number, mode: 'q' | 'e' | 'b'): number {
  const n = sql.length
  let fancy = false
  for (;;) {
    let closed = -1
    while (i < n) {
      const c = sql.charCodeAt(i)
      if (c === QUOTE) {
        if (mode !== 'b' && sql.charCodeAt(i + 1) === QUOTE) {
          i += 2
          continue
        }
        closed = i + 1
        break
      }
      if (mode === 'e' && c === BACKSLASH) {
        const e = sql.charCodeAt(i + 1)
        if (i + 1 >= n) return -1
        // octal, \x hex, \u \U unicode: values to verify as the encoding; single-char escapes are not
        if ((e >= 48 && e <= 55) || e === 120 || e === 117 || e === 85 || e >= 128) fancy = true
        i += 2
        continue
      }
      i++
    }
    if (closed < 0) return -1
    const next = continuation(sql, closed)
    if (next === UNCERTAIN) return -1
    if (next < 0) return fancy ? -2 - closed : closed
    i = next
  }
}

/**
 * scan.l's quotecontinue: whitespace with a newline, then a quote, joins two strings into one.
 * Whether `--` comments may sit in that whitespace differs between Postgres versions (PG 17, our
 * parser, says no): a text that has one there has no skeleton (UNCERTAIN). Returns the offset
 * after the next part's opening quote, -1 when the string ends here.
 */
const UNCERTAIN = -3

function continuation(sql: string, i: number): number {
  const n = sql.length
  let newline = false
  let comment = false
  while (i < n) {
    const c = sql.charCodeAt(i)
    if (c === 32 || c === 9 || c === 12) i++
    else if (c === 10 || c === 13) {
      newline = true
      i++
    } else if (c === 45 && sql.charCodeAt(i + 1) === 45) {
      comment = true
      while (i < n && sql.charCodeAt(i) !== 10 && sql.charCodeAt(i) !== 13) i++
    } else break
  }
  if (!newline || sql.charCodeAt(i) !== QUOTE) return -1
  return comment ? UNCERTAIN : i + 1
}

/** E'', B'', X'', N'' after their letter and quote: end, and whether to keep it as written. */
function prefixed(sql: string, letter: number, i: number): { end: number; exact: boolean } | undefined {
  const l = letter | 32
  const mode = l === 101 ? 'e' : l === 98 || l === 120 ? 'b' : 'q'
  const end = quotedEnd(sql, i, mode)
  if (end === -1) return undefined
  if (end < -1) return { end: -2 - end, exact: true }
  return { end, exact: false }
}

/** After `$`: the end of a dollar-quoted string ($tag$ … $tag$), or -1 when it is not one. */
function dollarQuotedEnd(sql: string, i: number): number {
  let j = i + 1
  const first = sql.charCodeAt(j)
  if (first !== DOLLAR) {
    // dolq_start, then dolq_cont*, then $
    if (!(first >= 128 || (first < 128 && (CLASS[first]! & C_IDENT_START) !== 0))) return -1
    j++
    while (j < sql.length && isTagCont(sql.charCodeAt(j))) j++
    if (sql.charCodeAt(j) !== DOLLAR) return -1
  }
  const delimiter = sql.slice(i, j + 1)
  const close = sql.indexOf(delimiter, j + 1)
  return close < 0 ? -1 : close + delimiter.length
}

function isDigitAt(sql: string, p: number): boolean {
  const c = sql.charCodeAt(p)
  return c >= 48 && c <= 57
}

/**
 * A number: integer, decimal (1.5, 1., .5), real (1e5, 1.5e-3). Integers that fit int32 are ICONST
 * to the grammar, the rest FCONST: the kinds differ in the key. Anything glued to it (letters, `_`,
 * `$`, another `.`, a digit after an exponent sign missing) is junk or PG 16+ syntax: undefined.
 */
function numberEnd(sql: string, i: number): { end: number; kind: 'i' | 'f' } | undefined {
  const n = sql.length
  const start = i
  while (isDigitAt(sql, i)) i++
  let integer = true
  if (sql.charCodeAt(i) === 46) {
    // `1..2` (numericfail) is left to the exact path
    if (sql.charCodeAt(i + 1) === 46) return undefined
    integer = false
    i++
    while (isDigitAt(sql, i)) i++
  }
  const e = sql.charCodeAt(i)
  if (e === 101 || e === 69) {
    integer = false
    i++
    const s = sql.charCodeAt(i)
    if (s === 43 || s === 45) i++
    if (!isDigitAt(sql, i)) return undefined
    while (isDigitAt(sql, i)) i++
  }
  if (i < n) {
    const c = sql.charCodeAt(i)
    if (isIdentCont(c) || c === 46) return undefined
  }
  if (!integer) return { end: i, kind: 'f' }
  // strtoint: int32 range
  let d = start
  while (d < i - 1 && sql.charCodeAt(d) === 48) d++
  const digits = i - d
  const fits = digits < 10 || (digits === 10 && sql.slice(d, i) <= '2147483647')
  return { end: i, kind: fits ? 'i' : 'f' }
}
