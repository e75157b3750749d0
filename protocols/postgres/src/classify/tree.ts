// Small accessors over libpg_query's JSON tree. Nodes are `{ Type: body }`; fields whose type is fixed
// by the grammar (RangeVar `relation`, IntoClause, WithClause) come inline without the wrapper.
import type { Node } from './parser.ts'

export type Body = Record<string, any>

/** The node's type and body when `value` is a `{ Type: body }` wrapper. */
export function nodeOf(value: unknown): [string, Body] | undefined {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return undefined
  for (const key in value as Node) {
    const body = (value as Node)[key]
    // one key, upper-case first letter, object body: a wrapper (bodies' own keys are lower-case)
    if (key.charCodeAt(0) < 65 || key.charCodeAt(0) > 90) return undefined
    if (body === null || typeof body !== 'object' || Array.isArray(body)) return undefined
    return [key, body as Body]
  }
  return undefined
}

export function bodyOf(value: unknown, type: string): Body | undefined {
  const n = nodeOf(value)
  return n && n[0] === type ? n[1] : undefined
}

/** sval of a String node */
export function str(value: unknown): string | undefined {
  const b = bodyOf(value, 'String')
  return b ? (b.sval as string | undefined) ?? '' : undefined
}

/** Names of a qualified-name list ([String, String…]) */
export function names(list: unknown): string[] {
  if (!Array.isArray(list)) return []
  const out: string[] = []
  for (const item of list) {
    const s = str(item)
    if (s !== undefined) out.push(s)
  }
  return out
}

export function lastName(list: unknown): string | undefined {
  const n = names(list)
  return n[n.length - 1]
}

/** A_Const value: number, string, boolean, null, or undefined when not a constant */
export type ConstValue = number | string | boolean | null

export function constValue(value: unknown): ConstValue | undefined {
  // option arguments come as bare value nodes; zero and false are written as empty bodies
  const n = nodeOf(value)
  if (n) {
    switch (n[0]) {
      case 'Integer': return (n[1].ival as number | undefined) ?? 0
      case 'Float': return Number(n[1].fval ?? 0)
      case 'Boolean': return n[1].boolval === true
      case 'String': return (n[1].sval as string | undefined) ?? ''
    }
  }
  const c = bodyOf(value, 'A_Const')
  if (c) {
    if (c.isnull) return null
    if (c.ival) return (c.ival.ival as number | undefined) ?? 0
    if (c.fval) return Number(c.fval.fval)
    if (c.sval) return (c.sval.sval as string | undefined) ?? ''
    if (c.boolval) return c.boolval.boolval === true
    if (c.bsval) return c.bsval.bsval as string
    return undefined
  }
  // 't'::boolean, '1'::int
  const cast = bodyOf(value, 'TypeCast')
  if (cast) {
    const inner = constValue(cast.arg)
    if (inner === undefined) return undefined
    const type = lastName(cast.typeName?.names)
    if (type === 'bool' || type === 'boolean') {
      if (inner === null || typeof inner === 'boolean') return inner
      const s = String(inner).trim().toLowerCase()
      if (['t', 'true', 'y', 'yes', 'on', '1'].includes(s)) return true
      if (['f', 'false', 'n', 'no', 'off', '0'].includes(s)) return false
      return undefined
    }
    return inner
  }
  return undefined
}

/**
 * Calls `visit` on every node wrapper under `value` (depth-first); visit returns false to skip its
 * children. Locations are not read (they move with the lengths of the constants: literal.ts).
 */
export function forEachNode(value: unknown, visit: (type: string, body: Body) => boolean | void): void {
  if (value === null || typeof value !== 'object') return
  if (Array.isArray(value)) {
    for (const v of value) forEachNode(v, visit)
    return
  }
  const n = nodeOf(value)
  if (n) {
    if (visit(n[0], n[1]) === false) return
    // a constant holds no nodes: walking into it would read its value, which makes the text's
    // classification literal-dependent (literal.ts)
    if (n[0] === 'A_Const') return
    // the body's fields, not the body again (a SelectStmt body would be visited twice)
    for (const key in n[1]) if (key !== 'location') forEachNode(n[1][key], visit)
    return
  }
  // a RangeVar in a field whose type the grammar fixes (`relation`, `rel`) comes without its wrapper
  if (typeof (value as Node).relname === 'string') {
    visit('RangeVar', value as Body)
    return
  }
  // so do the arms of a UNION / INTERSECT / EXCEPT (`larg`, `rarg`)
  if (isSelectBody(value)) {
    if (visit('SelectStmt', value as Body) === false) return
  }
  for (const key in value as Node) if (key !== 'location') forEachNode((value as Node)[key], visit)
}

/** A SelectStmt body without its wrapper: every one carries `op` and `limitOption`. */
export function isSelectBody(value: unknown): boolean {
  return typeof (value as Body).op === 'string' && typeof (value as Body).limitOption === 'string'
}

/** The SelectStmt body of a wrapped or inline SELECT. */
export function selectBody(value: unknown): Body | undefined {
  return bodyOf(value, 'SelectStmt') ?? (value !== null && typeof value === 'object' && isSelectBody(value) ? (value as Body) : undefined)
}
