// Claim templates: `${sub}`, `${claims.<dotted.path>}` and `${groups}` in rule conditions and in a
// target's `scope`. A template is parsed once (config load), expanded once per principal (at
// authentication) and every value is quoted for the place it lands in by the caller's `quote`
// function, so a claim can never add syntax: a tenant called `*` is the literal `*` in a glob, a
// tenant called `x' OR '1'='1` is one string literal in SQL.
//
// Fail closed: a claim that is missing, empty, not a string (numbers, objects, lists are refused:
// `tenant: 42` and `tenant: "42"` would otherwise be two names for one scope), longer than
// MAX_CLAIM_LENGTH or holding a control character refuses the request with TemplateError.
import { PortcullisError } from '../errors.ts'
import type { Principal } from '../types.ts'

export const MAX_CLAIM_LENGTH = 256

/** One parsed template: literal text and references, in order. */
export type TemplatePart = string | { ref: 'sub' } | { ref: 'groups' } | { ref: 'claims'; path: string[] }
export interface Template {
  readonly source: string
  readonly parts: readonly TemplatePart[]
  /** true when at least one `${…}` is in it */
  readonly dynamic: boolean
}

/**
 * A claim a template needs is missing or not a plain string: the request is refused. An
 * authentication failure (each codec answers it natively: 28000, -WRONGPASS/-NOPERM, 401) because
 * the token does not carry what this target needs to know who may see what.
 */
export class TemplateError extends PortcullisError {
  constructor(message: string) {
    super('AUTH_FAILED', message, { reason: 'scope-claim' })
  }
}

const REF = /\$\{([^}]*)\}/g
const PATH_SEGMENT = /^[A-Za-z0-9_:-]+$/

const parsed = new Map<string, Template>()

/** Whether a config string holds a template (cheap: for config loading and rule compilation). */
export function hasTemplate(s: string): boolean {
  return s.includes('${')
}

/** Parses a template; throws Error with a message for check-config on a bad reference. */
export function parseTemplate(source: string): Template {
  const hit = parsed.get(source)
  if (hit) return hit
  const parts: TemplatePart[] = []
  let last = 0
  for (const m of source.matchAll(REF)) {
    if (m.index > last) parts.push(source.slice(last, m.index))
    parts.push(parseRef(m[1]!.trim()))
    last = m.index + m[0].length
  }
  if (last < source.length) parts.push(source.slice(last))
  // a `${` left over is a reference without its `}`: a typo, not a literal
  for (const p of parts) if (typeof p === 'string' && p.includes('${')) throw new Error(`unterminated \${ in "${source}"`)
  const t: Template = { source, parts, dynamic: parts.some(p => typeof p !== 'string') }
  if (parsed.size > 10_000) parsed.clear()
  parsed.set(source, t)
  return t
}

function parseRef(ref: string): TemplatePart {
  if (ref === 'sub') return { ref: 'sub' }
  if (ref === 'groups') return { ref: 'groups' }
  if (ref.startsWith('claims.')) {
    const path = ref.slice(7).split('.')
    if (path.every(s => PATH_SEGMENT.test(s))) return { ref: 'claims', path }
  }
  throw new Error(`unknown template reference \${${ref}} (use \${sub}, \${groups} or \${claims.<name>})`)
}

// ---- the claims beside the principal --------------------------------------------------------------

// The verified token's claims travel beside the principal, never inside it: approval requests,
// recordings and the control store copy the principal, and claims can hold personal data.
const claimsOf = new WeakMap<Principal, Readonly<Record<string, unknown>>>()

export function attachClaims(principal: Principal, claims: Record<string, unknown>): void {
  claimsOf.set(principal, claims)
}

export function principalClaims(principal: Principal): Readonly<Record<string, unknown>> | undefined {
  return claimsOf.get(principal)
}

function plain(name: string, v: unknown): string {
  if (typeof v !== 'string') throw new TemplateError(`scope: claim ${name} is ${v === undefined ? 'missing' : 'not a string'} in the token; request refused`)
  if (v.length === 0) throw new TemplateError(`scope: claim ${name} is empty in the token; request refused`)
  if (v.length > MAX_CLAIM_LENGTH) throw new TemplateError(`scope: claim ${name} is longer than ${MAX_CLAIM_LENGTH} characters; request refused`)
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(v)) throw new TemplateError(`scope: claim ${name} holds a control character; request refused`)
  return v
}

/** The values one reference stands for: one for sub and claims, one per group for groups. */
function refValues(part: Exclude<TemplatePart, string>, principal: Principal): string[] {
  if (part.ref === 'sub') return [plain('sub', principal.subject)]
  if (part.ref === 'groups') return principal.groups.map(g => plain('groups', g))
  let v: unknown = principalClaims(principal)
  for (const seg of part.path) {
    if (v === null || typeof v !== 'object' || Array.isArray(v) || !Object.hasOwn(v, seg)) {
      v = undefined
      break
    }
    v = (v as Record<string, unknown>)[seg]
  }
  return [plain(`claims.${part.path.join('.')}`, v)]
}

export type Quote = (value: string) => string
export const noQuote: Quote = v => v

/**
 * Every expansion of a template in a place that takes a list (rule conditions, key patterns,
 * channels, indexes): `${groups}` gives one expansion per group (none without groups: nothing
 * matches). Literal text is kept as written; each value goes through `quote`.
 */
export function expandAll(t: Template | string, principal: Principal, quote: Quote): string[] {
  const tpl = typeof t === 'string' ? parseTemplate(t) : t
  let outs = ['']
  for (const p of tpl.parts) {
    if (typeof p === 'string') {
      outs = outs.map(o => o + p)
      continue
    }
    const values = refValues(p, principal).map(quote)
    const next: string[] = []
    for (const o of outs) for (const v of values) next.push(o + v)
    outs = next
  }
  return outs
}

/**
 * The one expansion of a template in a place that takes one value (a setting, a filter value, a
 * namespace): `${groups}` is the groups joined by commas, and a group that holds a comma is refused
 * (the list would read back as other groups).
 */
export function expandOne(t: Template | string, principal: Principal, quote: Quote = noQuote): string {
  const tpl = typeof t === 'string' ? parseTemplate(t) : t
  let out = ''
  for (const p of tpl.parts) {
    if (typeof p === 'string') out += p
    else if (p.ref === 'groups') {
      const groups = refValues(p, principal)
      if (groups.some(g => g.includes(','))) throw new TemplateError('scope: a group name holds a comma; ${groups} cannot be one value; request refused')
      out += quote(groups.join(','))
    } else out += quote(refValues(p, principal)[0]!)
  }
  return out
}

/** Quote for glob patterns (`*`, `?`, `[`, `]`, `\` escaped with a backslash): rule globs and Redis MATCH. */
export const globQuote: Quote = v => v.replace(/[*?[\]\\]/g, '\\$&')

/** Quote for RE2 / JavaScript regular expressions. */
export const regexQuote: Quote = v => v.replace(/[\\^$.|?*+()[\]{}]/g, '\\$&')
