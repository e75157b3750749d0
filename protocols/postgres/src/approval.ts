// What an approver sees of a Postgres statement held for approval, the hash the request binds to,
// and the error defer mode answers with. The proxy calls these only when a rule asks for approval:
// nothing here runs on the allow / block path.
//
// Shown: the text as sent (simple Query, or the Parse text of an extended-protocol Execute) and
// each Bind value rendered as a SQL literal. A value that falls under a column masking rule of the
// requester's plan is masked: one compared with a masked column (`email = $1`, `$1 = c.email`,
// `email IN ($1, $2)`), assigned to one (`SET email = $1`), or inserted into one (`INSERT … (email)
// VALUES ($1)`). A value whose column cannot be told while column rules exist is masked too (when
// unsure, mask); detectors run over what is left. The hash covers the exact text, the parameter
// formats and every parameter byte — never the masked form.
import { randomBytes } from 'node:crypto'
import { statementHash, type Decision, type MaskMethod, type MaskPlan, type StatementAsSent } from '@portcullis/core'
import { BufferReader } from './buffer-reader.ts'
import { parseBindMessage, parseQueryMessage } from './frontend.ts'
import type { Portal } from './session-state.ts'

/**
 * SQLSTATE of defer mode's answer: the statement was not run, an approval request is pending for
 * it. Class PA ("Portcullis approvals") is outside the classes Postgres and the SQL standard use
 * (implementation-defined classes start with I–Z); drivers surface it as an ordinary error.
 */
export const SQLSTATE_APPROVAL_PENDING = 'PA001'

/** a value shown to an approver is cut here (the hash covers all of it) */
const SHOWN_VALUE_MAX = 200
/** binary values up to this many bytes are shown in hex */
const SHOWN_BINARY_MAX = 64
/** the text shown is cut here */
const SHOWN_TEXT_MAX = 8192
/** parameters shown (a Bind may carry 65535; the hash covers them all): the request stays small */
const SHOWN_PARAMS_MAX = 100

type Kind = 'ident' | 'qident' | 'string' | 'number' | 'param' | 'op' | 'punct'
interface Token {
  kind: Kind
  start: number
  end: number
  /** identifiers: the name (lower-cased unless quoted); params: the number; strings: the value */
  value: string
}

const COMPARE = new Set(['=', '<>', '!=', '<', '>', '<=', '>='])
const COMPARE_WORDS = new Set(['like', 'ilike', 'in', 'is', 'any', 'all', 'similar', 'distinct', 'from', 'not', 'to'])
/** a value after these words is a count or a position, not a column's value */
const NO_COLUMN = new Set(['limit', 'offset', 'fetch', 'first', 'next'])
const KEYWORDS = new Set([
  'select', 'from', 'where', 'and', 'or', 'not', 'in', 'is', 'null', 'like', 'ilike', 'update', 'set', 'insert', 'into',
  'values', 'delete', 'returning', 'limit', 'offset', 'order', 'by', 'group', 'having', 'join', 'on', 'as', 'case', 'when',
  'then', 'else', 'end', 'any', 'all', 'between', 'true', 'false', 'using', 'with', 'distinct', 'exists', 'default',
])

/** A small SQL lexer: enough to find literals, parameters and the names beside them. */
export function lex(sql: string): Token[] {
  const out: Token[] = []
  let i = 0
  const n = sql.length
  while (i < n) {
    const c = sql[i]!
    if (/\s/.test(c)) {
      i++
      continue
    }
    if (c === '-' && sql[i + 1] === '-') {
      while (i < n && sql[i] !== '\n') i++
      continue
    }
    if (c === '/' && sql[i + 1] === '*') {
      let depth = 1
      i += 2
      while (i < n && depth > 0) {
        if (sql[i] === '/' && sql[i + 1] === '*') (depth++, (i += 2))
        else if (sql[i] === '*' && sql[i + 1] === '/') (depth--, (i += 2))
        else i++
      }
      continue
    }
    const start = i
    // E'…' (backslash escapes), B'…', X'…', N'…', U&'…': the prefix belongs to the literal
    if (/[eEbBxXnN]/.test(c) && sql[i + 1] === "'") i++
    else if ((c === 'u' || c === 'U') && sql[i + 1] === '&' && sql[i + 2] === "'") i += 2
    if (sql[i] === "'") {
      const backslash = i > start && (c === 'e' || c === 'E')
      i++
      let value = ''
      while (i < n) {
        const d = sql[i]!
        if (backslash && d === '\\' && i + 1 < n) {
          value += sql[i + 1]
          i += 2
        } else if (d === "'") {
          if (sql[i + 1] === "'") {
            value += "'"
            i += 2
          } else {
            i++
            break
          }
        } else {
          value += d
          i++
        }
      }
      out.push({ kind: 'string', start, end: i, value })
      continue
    }
    i = start
    if (c === '$') {
      const m = /^\$(\d+)/.exec(sql.slice(i, i + 12))
      if (m) {
        out.push({ kind: 'param', start: i, end: i + m[0].length, value: m[1]! })
        i += m[0].length
        continue
      }
      const tag = /^\$([A-Za-z_][A-Za-z0-9_]*)?\$/.exec(sql.slice(i, i + 66))
      if (tag) {
        const close = sql.indexOf(tag[0], i + tag[0].length)
        const end = close < 0 ? n : close + tag[0].length
        out.push({ kind: 'string', start: i, end, value: sql.slice(i + tag[0].length, close < 0 ? n : close) })
        i = end
        continue
      }
    }
    if (c === '"') {
      i++
      let value = ''
      while (i < n) {
        if (sql[i] === '"') {
          if (sql[i + 1] === '"') {
            value += '"'
            i += 2
            continue
          }
          i++
          break
        }
        value += sql[i++]
      }
      out.push({ kind: 'qident', start, end: i, value })
      continue
    }
    if (/[0-9]/.test(c) || (c === '.' && /[0-9]/.test(sql[i + 1] ?? ''))) {
      const m = /^(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?/.exec(sql.slice(i))!
      i += m[0].length
      out.push({ kind: 'number', start, end: i, value: m[0] })
      continue
    }
    if (/[A-Za-z_\u0080-\uffff]/.test(c)) {
      while (i < n && /[A-Za-z0-9_$\u0080-\uffff]/.test(sql[i]!)) i++
      out.push({ kind: 'ident', start, end: i, value: sql.slice(start, i).toLowerCase() })
      continue
    }
    if (/[+\-*/<>=~!@#%^&|`?]/.test(c)) {
      while (i < n && /[+\-*/<>=~!@#%^&|`?]/.test(sql[i]!)) i++
      out.push({ kind: 'op', start, end: i, value: sql.slice(start, i) })
      continue
    }
    out.push({ kind: 'punct', start, end: i + 1, value: c })
    i++
  }
  return out
}

const isName = (t: Token | undefined) => t !== undefined && (t.kind === 'qident' || (t.kind === 'ident' && !KEYWORDS.has(t.value)))

/** the column reference that ends at token index `end` (inclusive): [qualifier…, column] */
function columnBefore(toks: Token[], end: number): string[] | undefined {
  if (!isName(toks[end])) return undefined
  const parts = [toks[end]!.value]
  let i = end
  while (i >= 2 && toks[i - 1]!.value === '.' && isName(toks[i - 2])) {
    parts.unshift(toks[i - 2]!.value)
    i -= 2
  }
  return parts
}

/** the column reference that starts at token index `start` */
function columnAfter(toks: Token[], start: number): string[] | undefined {
  if (!isName(toks[start])) return undefined
  const parts = [toks[start]!.value]
  let i = start
  while (toks[i + 1]?.value === '.' && isName(toks[i + 2])) {
    parts.push(toks[i + 2]!.value)
    i += 2
  }
  // a function call, not a column
  if (toks[i + 1]?.value === '(') return undefined
  return parts
}

/**
 * The column each value token (literal or parameter) is compared with, assigned to or inserted
 * into; null where that cannot be told.
 */
export function valueColumns(toks: Token[]): Map<number, string[] | null> {
  const out = new Map<number, string[] | null>()
  // INSERT INTO t (a, b) VALUES (…, …), (…): the k-th top-level element of a group goes into the k-th column
  const insertCols: string[] | undefined = (() => {
    const at = toks.findIndex((t, i) => t.value === 'insert' && toks[i + 1]?.value === 'into')
    if (at < 0) return undefined
    let i = at + 2
    while (i < toks.length && toks[i]!.value !== '(' && toks[i]!.value !== 'values') i++
    if (toks[i]?.value !== '(') return undefined
    const cols: string[] = []
    for (i++; i < toks.length && toks[i]!.value !== ')'; i++) if (isName(toks[i])) cols.push(toks[i]!.value)
    return cols
  })()
  const valuesAt = toks.findIndex(t => t.kind === 'ident' && t.value === 'values')
  for (let i = 0; i < toks.length; i++) {
    const t = toks[i]!
    if (t.kind !== 'string' && t.kind !== 'number' && t.kind !== 'param') continue
    let col: string[] | undefined
    // inside `IN (…, value, …)` / `ANY (value)`: start from the word before the parenthesis
    let j = i - 1
    let k = j
    while (k >= 0 && (toks[k]!.value === ',' || toks[k]!.kind === 'string' || toks[k]!.kind === 'number' || toks[k]!.kind === 'param')) k--
    if (toks[k]?.value === '(' && ['in', 'any', 'all'].includes(toks[k - 1]?.value ?? '')) j = k - 1
    // LIMIT 10, OFFSET $2: a count, no column's value
    if (toks[j]?.kind === 'ident' && NO_COLUMN.has(toks[j]!.value)) {
      out.set(i, [])
      continue
    }
    // col <op> value, col LIKE value, col IS DISTINCT FROM value, col = ANY (value)
    let m = j
    while (m >= 0 && (COMPARE.has(toks[m]!.value) || (toks[m]!.kind === 'ident' && COMPARE_WORDS.has(toks[m]!.value)))) m--
    if (m < j) col = columnBefore(toks, m)
    // value <op> col
    if (!col && COMPARE.has(toks[i + 1]?.value ?? '')) col = columnAfter(toks, i + 2)
    // INSERT … VALUES: the position inside its group
    if (!col && insertCols && valuesAt >= 0 && i > valuesAt) {
      let depth = 0
      let index = 0
      for (let k = i - 1; k > valuesAt; k--) {
        const v = toks[k]!.value
        if (v === ')') depth++
        else if (v === '(') {
          if (depth === 0) break
          depth--
        } else if (v === ',' && depth === 0) index++
      }
      const name = insertCols[index]
      if (name) col = [name]
    }
    out.set(i, col ?? null)
  }
  return out
}

/** the method a column masking rule of `plan` gives `col`, trying each table the statement touches */
function methodOf(col: string[], plan: MaskPlan, resources: readonly string[]): MaskMethod | undefined {
  const name = col[col.length - 1]!
  const qualifier = col.length >= 2 ? col[col.length - 2] : undefined
  const schema = col.length >= 3 ? col[col.length - 3] : undefined
  if (qualifier) {
    const m = plan.forColumn(schema, qualifier, name)
    if (m) return m
  }
  for (const r of resources) {
    const dot = r.lastIndexOf('.')
    const m = plan.forColumn(dot > 0 ? r.slice(0, dot) : undefined, dot > 0 ? r.slice(dot + 1) : r, name)
    if (m) return m
  }
  return plan.forColumn(undefined, undefined, name)
}

/** what to do with one value shown to the approver: its mask method, 'scan' (detectors), or 'clear' */
function treatment(col: string[] | null, plan: MaskPlan, resources: readonly string[]): MaskMethod | 'scan' | 'clear' {
  if (plan.empty) return 'clear'
  if (col && col.length > 0) {
    const m = methodOf(col, plan, resources)
    if (m) return m
  } else if (col === null && plan.hasColumnRules !== false) return 'redact'
  return plan.hasDetectors ? 'scan' : 'clear'
}

/** a SQL literal for a text value (E'…' when it holds control characters) */
export function sqlLiteral(value: string, number = false): string {
  let v = value
  let cut = ''
  if (v.length > SHOWN_VALUE_MAX) {
    cut = `…(${v.length} chars)`
    v = v.slice(0, SHOWN_VALUE_MAX)
  }
  if (number && cut === '' && /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(v)) return v
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(v)) {
    const esc = v.replace(/\\/g, '\\\\').replace(/'/g, "''").replace(/[\u0000-\u001f\u007f]/g, ch => {
      const code = ch.charCodeAt(0)
      return code === 10 ? '\\n' : code === 13 ? '\\r' : code === 9 ? '\\t' : `\\x${code.toString(16).padStart(2, '0')}`
    })
    return `E'${esc}'${cut}`
  }
  return `'${v.replace(/'/g, "''")}'${cut}`
}

function masked(method: MaskMethod, value: string, plan: MaskPlan): string {
  const out = plan.apply(method, value)
  return out === null ? 'NULL' : sqlLiteral(out)
}

/** the text with its literals masked where the plan says so */
function maskText(sql: string, toks: Token[], columns: Map<number, string[] | null>, plan: MaskPlan, resources: readonly string[]): string {
  if (plan.empty) return sql
  let out = ''
  let at = 0
  for (const [i, col] of columns) {
    const t = toks[i]!
    if (t.kind === 'param') continue
    const how = treatment(col, plan, resources)
    if (how === 'clear') continue
    let shown: string
    if (how === 'scan') {
      const s = plan.scan(t.value)
      if (s.count === 0) continue
      shown = sqlLiteral(s.text)
    } else shown = masked(how, t.value, plan)
    out += sql.slice(at, t.start) + shown
    at = t.end
  }
  out += sql.slice(at)
  return plan.hasDetectors ? plan.scan(out).text : out
}

function cutText(text: string): string {
  return text.length > SHOWN_TEXT_MAX ? text.slice(0, SHOWN_TEXT_MAX) + `… (${text.length} chars)` : text
}

/** a simple Query's statement as sent */
export function sentQuery(sql: string, plan: MaskPlan, resources: readonly string[]): StatementAsSent {
  const toks = lex(sql)
  return { text: cutText(maskText(sql, toks, valueColumns(toks), plan, resources)), hash: statementHash(sql) }
}

/**
 * An Execute's statement as sent: the Parse text and the Bind values. `text` undefined: the
 * statement came from SQL PREPARE (no text of its own here) — shown as the normalized text, and
 * bound to a hash no other statement can have (a retry in defer mode asks again).
 */
export function sentExecute(
  text: string | undefined,
  bind: Buffer | undefined,
  normalized: string,
  plan: MaskPlan,
  resources: readonly string[],
  /** the parameter type OIDs the Parse declared: the same text and values under other types is another statement */
  paramTypes: readonly number[] = [],
): StatementAsSent {
  if (text === undefined || bind === undefined) return { text: cutText(normalized), parameters: [], hash: statementHash(normalized, [randomBytes(16)]) }
  const b = parseBindMessage(new BufferReader(bind, 5))
  const toks = lex(text)
  const columns = valueColumns(toks)
  // parameter n → the column of its first use in the text
  const paramColumn = new Map<number, string[] | null>()
  for (const [i, col] of columns) {
    const t = toks[i]!
    if (t.kind !== 'param') continue
    const n = Number(t.value)
    // a parameter used twice is masked if either use says so: keep the first masked, else the first
    const known = paramColumn.get(n)
    if (known === undefined || (col && treatment(col, plan, resources) !== 'clear' && treatment(known, plan, resources) === 'clear')) paramColumn.set(n, col)
  }
  const formatOf = (i: number) => (b.paramFormats.length === 0 ? 0 : b.paramFormats.length === 1 ? b.paramFormats[0]! : (b.paramFormats[i] ?? 0))
  const parameters = b.params.slice(0, SHOWN_PARAMS_MAX).map((p, i) => {
    if (p === null) return 'NULL'
    const col = paramColumn.get(i + 1) ?? null
    const how = treatment(col, plan, resources)
    if (formatOf(i) === 1) {
      // binary: its type is the server's to know; never shown raw under a mask
      if (how !== 'clear' && how !== 'scan') return masked(how, p.toString('hex'), plan)
      return p.length <= SHOWN_BINARY_MAX ? `'\\x${p.toString('hex')}'::bytea /* binary, ${p.length} bytes */` : `<binary ${p.length} bytes>`
    }
    const v = p.toString('utf8')
    if (how === 'clear') return sqlLiteral(v, true)
    if (how === 'scan') return sqlLiteral(plan.scan(v).text, true)
    return masked(how, v, plan)
  })
  if (b.params.length > SHOWN_PARAMS_MAX) parameters.push(`… ${b.params.length - SHOWN_PARAMS_MAX} more parameters`)
  const formats = b.params.map((_, i) => formatOf(i)).join(',')
  return {
    text: cutText(maskText(text, toks, columns, plan, resources)),
    parameters,
    hash: statementHash(text, [`types:${paramTypes.join(',')}`, `formats:${formats}`, ...b.params]),
  }
}

/**
 * The statement as sent of what the proxy holds: a simple Query's frame, or an Execute's portal.
 * `sessionBound`: the text runs what the session holds under a name (SQL EXECUTE p(20), FETCH c),
 * which can be DEALLOCATEd and PREPAREd again with another body between the approval and a retry:
 * the same text is then another statement. Such a request binds to a hash no retry can have.
 */
export function statementAsSent(
  pending: { kind: 'Q' | 'E'; op: { statement: string; resources: string[] }; portal?: Portal | undefined },
  raw: Buffer,
  plan: MaskPlan,
  sessionBound = false,
): StatementAsSent {
  const sent =
    pending.kind === 'Q'
      ? sentQuery(parseQueryMessage(new BufferReader(raw, 5)), plan, pending.op.resources)
      : sentExecute(pending.portal?.text?.query, pending.portal?.bind, pending.op.statement, plan, pending.op.resources, pending.portal?.text?.paramTypes)
  return sessionBound ? { ...sent, hash: statementHash(sent.hash, [randomBytes(16)]) } : sent
}

/** defer mode's ErrorResponse: the request id and how to wait for it */
export function deferredRefusal(decision: Decision): { sqlstate: string; message: string; detail: string } {
  const id = decision.approvalId!
  return {
    sqlstate: SQLSTATE_APPROVAL_PENDING,
    message: `approval pending: request ${id} (rule ${decision.rule ?? 'default'}); the statement was not run`,
    detail: `approval request ${id}; poll GET /api/approvals/${id} or run: portcullis approvals wait ${id}; once approved, send the identical statement again (it runs once)`,
  }
}
