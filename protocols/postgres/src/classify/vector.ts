// pgvector facts. A vector search is a SELECT ordered by a distance operator; its top-k is the LIMIT.
// An embedding export is a SELECT that returns embedding values without a LIMIT. Column types are not
// known without the catalog, so embeddings are recognised by name and by explicit cast:
//   - a column named `embedding`, `*embedding*`, `vector`, `vec`, `*_vec` or `*_vector` (any case);
//   - an expression cast to `vector`, `halfvec` or `sparsevec`;
//   - `*` / `t.*` over a sub-select or CTE whose own output has one of the above.
// `SELECT *` straight from a table is not an export by this rule (no catalog): mask vector columns or
// name them in rules when that matters.
import { bodyOf, constValue, lastName, names, nodeOf, forEachNode, selectBody, type Body } from './tree.ts'

export const VECTOR_OPERATORS = new Set(['<->', '<=>', '<#>', '<+>'])
const VECTOR_TYPES = new Set(['vector', 'halfvec', 'sparsevec'])

export interface Limit {
  /** LIMIT n / FETCH FIRST n */
  count?: number
  /** LIMIT $n: known at Bind */
  param?: number
}

export interface VectorSearch {
  operator: string
  topK?: number
  topKParam?: number
}

/** The SELECT's own LIMIT; undefined when it has none (or LIMIT ALL / NULL). */
export function limitOf(select: Body): Limit | undefined {
  const lc = select.limitCount
  if (lc === undefined) return undefined
  const v = constValue(lc)
  if (v === null) return undefined
  if (typeof v === 'number') return { count: v }
  const p = bodyOf(lc, 'ParamRef')
  if (p) return { param: p.number as number }
  // an expression: bounded, by an amount we cannot read
  return {}
}

/** Vector searches in one SELECT's ORDER BY (sort keys may name a select-list alias or position). */
export function vectorSearchesOf(select: Body, limit: Limit | undefined): VectorSearch[] {
  const sort: unknown[] = select.sortClause ?? []
  if (sort.length === 0) return []
  const targets: Body[] = (select.targetList ?? []).map((t: unknown) => nodeOf(t)?.[1]).filter(Boolean)
  const out: VectorSearch[] = []
  for (const s of sort) {
    let key = nodeOf(s)?.[1]?.node
    const ordinal = constValue(key)
    if (typeof ordinal === 'number') key = targets[ordinal - 1]?.val
    const col = bodyOf(key, 'ColumnRef')
    if (col && col.fields?.length === 1) {
      const alias = lastName(col.fields)
      const t = targets.find(t => t.name !== undefined && t.name === alias)
      if (t) key = t.val
    }
    const operator = distanceOperator(key)
    if (!operator) continue
    const search: VectorSearch = { operator }
    if (limit?.count !== undefined) search.topK = limit.count
    if (limit?.param !== undefined) search.topKParam = limit.param
    out.push(search)
  }
  return out
}

function distanceOperator(expr: unknown): string | undefined {
  let found: string | undefined
  forEachNode(expr, (type, b) => {
    if (found) return false
    if (type === 'A_Expr' && b.kind === 'AEXPR_OP') {
      const op = lastName(b.name)
      if (op !== undefined && VECTOR_OPERATORS.has(op)) found = op
    }
  })
  return found
}

export function isEmbeddingName(name: string): boolean {
  const n = name.toLowerCase()
  return n.includes('embedding') || n === 'vector' || n === 'vec' || n.endsWith('_vec') || n.endsWith('_vector')
}

/**
 * Does this SELECT (a SelectStmt node) return embedding values? `ctes` are the CTEs visible to it,
 * name → body, for `SELECT *` over a CTE.
 */
export function embeddingTargets(select: unknown, outer: { ctes: Map<string, unknown>; parent: unknown } | undefined): boolean {
  return returnsEmbeddings(select, collectCtes(outer), 0)
}

function collectCtes(scope: { ctes: Map<string, unknown>; parent: unknown } | undefined): Map<string, unknown> {
  const all = new Map<string, unknown>()
  const chain: { ctes: Map<string, unknown> }[] = []
  for (let s = scope; s; s = s.parent as typeof scope) chain.push(s)
  // inner scopes shadow outer ones
  for (const s of chain.reverse()) for (const [k, v] of s.ctes) all.set(k, v)
  return all
}

function returnsEmbeddings(select: unknown, ctes: Map<string, unknown>, depth: number): boolean {
  // bounded: a pathological chain of CTEs must not blow the stack
  if (depth > 16) return false
  const b = selectBody(select)
  if (!b) return false
  if (b.op && b.op !== 'SETOP_NONE') return returnsEmbeddings(b.larg, ctes, depth + 1) || returnsEmbeddings(b.rarg, ctes, depth + 1)
  let visible = ctes
  if (b.withClause) {
    visible = new Map(ctes)
    for (const c of b.withClause.ctes ?? []) {
      const cte = nodeOf(c)?.[1]
      if (cte) visible.set(cte.ctename, cte.ctequery)
    }
  }
  for (const t of b.targetList ?? []) {
    const val = nodeOf(t)?.[1]?.val
    if (isEmbeddingExpr(val)) return true
    const col = bodyOf(val, 'ColumnRef')
    if (col && nodeOf(col.fields?.[col.fields.length - 1])?.[0] === 'A_Star') {
      for (const from of b.fromClause ?? []) if (starSource(from, visible, depth)) return true
    }
  }
  return false
}

function starSource(from: unknown, ctes: Map<string, unknown>, depth: number): boolean {
  const n = nodeOf(from)
  if (!n) return false
  const [type, b] = n
  if (type === 'RangeSubselect') {
    // a LIMIT inside the sub-select bounds what it returns
    const sub = selectBody(b.subquery)
    if (sub && limitOf(sub)) return false
    return returnsEmbeddings(b.subquery, ctes, depth + 1)
  }
  if (type === 'RangeVar' && !b.schemaname && ctes.has(b.relname)) {
    const body = ctes.get(b.relname)
    const sub = selectBody(body)
    if (sub && limitOf(sub)) return false
    return returnsEmbeddings(body, ctes, depth + 1)
  }
  if (type === 'JoinExpr') return starSource(b.larg, ctes, depth) || starSource(b.rarg, ctes, depth)
  return false
}

function isEmbeddingExpr(val: unknown): boolean {
  const n = nodeOf(val)
  if (!n) return false
  const [type, b] = n
  if (type === 'ColumnRef') {
    const name = lastName(b.fields)
    return name !== undefined && isEmbeddingName(name)
  }
  if (type === 'TypeCast') {
    const type = names(b.typeName?.names)
    return VECTOR_TYPES.has(type[type.length - 1] ?? '') || isEmbeddingExpr(b.arg)
  }
  return false
}
