// Does a WHERE clause bound the rows an UPDATE / DELETE touches? Unbounded: no WHERE, a WHERE that
// refers to no column (`WHERE true`, `WHERE 1=1`, `WHERE 'a'='a'`, `WHERE $1`, `WHERE now() > …`: the
// same answer for every row), an OR with such an arm, or a column compared with itself. A WHERE that
// is constant and surely false touches nothing and counts as bounded.
import { constValue, forEachNode, lastName, nodeOf, type ConstValue } from './tree.ts'

export function isWhereUnbounded(where: unknown): boolean {
  if (where === undefined || where === null) return true
  return unbounded(where)
}

function unbounded(expr: unknown): boolean {
  const n = nodeOf(expr)
  if (!n) return false
  const [type, b] = n
  // WHERE CURRENT OF cursor: one row
  if (type === 'CurrentOfExpr') return false
  if (type === 'BoolExpr') {
    const args: unknown[] = b.args ?? []
    if (b.boolop === 'OR_EXPR') return args.some(unbounded)
    if (b.boolop === 'AND_EXPR') return args.every(unbounded)
  }
  if (type === 'A_Expr' && b.kind === 'AEXPR_OP' && lastName(b.name) === '=' && sameColumn(b.lexpr, b.rexpr)) return true
  if (!refersToColumn(expr)) return evaluate(expr) !== false
  return false
}

function refersToColumn(expr: unknown): boolean {
  let found = false
  forEachNode(expr, type => {
    if (type === 'ColumnRef') found = true
    return !found
  })
  return found
}

function sameColumn(a: unknown, b: unknown): boolean {
  return nodeOf(a)?.[0] === 'ColumnRef' && nodeOf(b)?.[0] === 'ColumnRef' && sameTree(a, b)
}

/** Deep equality, locations aside (never read: they move with the constants' lengths, literal.ts). */
function sameTree(a: unknown, b: unknown): boolean {
  if (a === b) return true
  if (a === null || b === null || typeof a !== 'object' || typeof b !== 'object') return false
  if (Array.isArray(a) !== Array.isArray(b)) return false
  const ka = Object.keys(a).filter(k => k !== 'location')
  const kb = Object.keys(b).filter(k => k !== 'location')
  if (ka.length !== kb.length) return false
  for (const k of ka) if (!sameTree((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k])) return false
  return true
}

/** The value of a column-free expression when it is plain enough to tell; undefined otherwise. */
function evaluate(expr: unknown): ConstValue | undefined {
  const c = constValue(expr)
  if (c !== undefined) return c
  const n = nodeOf(expr)
  if (!n) return undefined
  const [type, b] = n
  if (type === 'BoolExpr') {
    const vals = (b.args ?? []).map(evaluate)
    if (b.boolop === 'NOT_EXPR') return typeof vals[0] === 'boolean' ? !vals[0] : undefined
    if (b.boolop === 'AND_EXPR') return vals.includes(false) ? false : vals.every((v: unknown) => v === true) ? true : undefined
    if (b.boolop === 'OR_EXPR') return vals.includes(true) ? true : vals.every((v: unknown) => v === false) ? false : undefined
  }
  if (type === 'A_Expr' && b.kind === 'AEXPR_OP') {
    const l = evaluate(b.lexpr)
    const r = evaluate(b.rexpr)
    if (l === undefined || r === undefined || l === null || r === null) return undefined
    // compare numbers as numbers ('1' = 1 is true in Postgres: unknown-typed literal coerced)
    const [x, y] = typeof l === 'number' || typeof r === 'number' ? [Number(l), Number(r)] : [l, r]
    switch (lastName(b.name)) {
      case '=': return x === y
      case '<>':
      case '!=': return x !== y
      case '<': return x < y
      case '>': return x > y
      case '<=': return x <= y
      case '>=': return x >= y
    }
  }
  return undefined
}
