// Column lineage of an Operation, resolved against the catalog (the relations' column lists) and
// the session (EXECUTE's prepared body, FETCH's cursor): what the RowDescription handler masks by,
// and what refuses a statement before it runs when the lineage of one of its output columns cannot
// be told while it reads a masked column.
import type { MaskMethod, MaskPlan, Operation } from '@portcullis/core/types'
import { stricter } from '@portcullis/core/masking/methods'
import type { Catalog } from './catalog.ts'
import { preparedStatements, type ClassifyContext } from './classify/index.ts'
import { parseSql, type Node } from './classify/parser.ts'
import { forEachNode } from './classify/tree.ts'
import { borrowedReads, keptLineage, LineageAnalyzer, relationName, opaqueReason, type Column, type ResultLineage, type StatementLineage, type Write } from './classify/lineage.ts'

export interface RowLineage {
  /** one per statement of the operation that can return rows */
  results: ResultLineage[]
  /** the queries of the cursors it declares: no rows now, but checked before it runs */
  declared: ResultLineage[]
  /** masked columns of the relations the statements read ('public.customers.email') */
  maskedRead: string[]
  /** values the statements write into columns (and why some could not be told) */
  writes: Write[]
  writesUnknown?: string
}

type Pending = ResultLineage | { execute: string } | { cursor: string } | { none: true }

interface Analysed {
  generation: number
  /** per result: the analysed lineage (tree), or the name to resolve per session */
  results: Pending[]
  declared: Map<string, ResultLineage>
  relations: (Column[] | null)[]
  writes: Write[]
  writesUnknown?: string
}

// Both by the kept lineage, not the Operation: texts of one skeleton share it (borrowed, see
// classify/lineage.ts) as long as no analysis read its constants, and then share the analysis too.
const analysed = new WeakMap<StatementLineage, Analysed>()
/** per plan: the resolved lineage of a kept lineage with no session-resolved part */
const resolvedByPlan = new WeakMap<MaskPlan, WeakMap<StatementLineage, { generation: number; lineage: RowLineage }>>()

/** a plan with no column rule needs no lineage (an older plan without the flag: assume it has some) */
export function hasColumnRules(plan: MaskPlan): boolean {
  return !plan.empty && (plan as { hasColumnRules?: boolean }).hasColumnRules !== false
}

const MAX_HOPS = 8

/** the op a session-resolved result points at (itself for a cursor it declares) */
function targetOf(op: Operation, kept: StatementLineage, r: { execute: string; at?: number } | { cursor: string }, ctx: ClassifyContext | undefined): Operation | undefined {
  if ('execute' in r) {
    // the session may keep the PREPARE's own operation rather than its body's
    // PREPARE p AS …; EXECUTE p in one text: the last PREPARE of that name before the EXECUTE
    const at = r.at ?? Infinity
    const own = kept.prepares?.filter(p => p.name === r.execute && p.at < at).at(-1)
    if (own) return own.body
    const stored = ctx?.prepared?.get(r.execute)
    return stored && (preparedStatements(stored).get(r.execute) ?? stored)
  }
  if (kept.cursors.has(r.cursor)) return op
  return ctx?.cursors?.get(r.cursor)
}

interface ViewQuery {
  /** undefined: the definition did not parse as one query */
  tree: Node | undefined
  relations: string[]
}

const MAX_VIEWS = 1024
const viewQueries = new Map<string, ViewQuery>()

/** a view's definition (pg_get_viewdef), parsed once per text */
function viewQuery(def: string): ViewQuery {
  let v = viewQueries.get(def)
  if (v) return v
  v = { tree: undefined, relations: [] }
  try {
    const stmts = parseSql(def).stmts
    if (stmts.length === 1 && stmts[0]!.stmt) {
      v.tree = stmts[0]!.stmt
      forEachNode(v.tree, (type, b) => {
        if (type === 'RangeVar' && typeof b.relname === 'string') v!.relations.push(relationName(b))
      })
    }
  } catch {
    // a view the parser cannot read: its columns are opaque
  }
  if (viewQueries.size >= MAX_VIEWS) viewQueries.clear()
  viewQueries.set(def, v)
  return v
}

/** the relation names a statement reads, with those its views read (as far as the catalog knows yet) */
function readNames(names: string[], catalog: Catalog): { all: string[]; missing: string[] } {
  const all: string[] = []
  const missing: string[] = []
  const queue = [...names]
  for (let i = 0; i < queue.length && all.length < 4096; i++) {
    const n = queue[i]!
    if (all.includes(n)) continue
    all.push(n)
    const rel = catalog.relationByName(n)
    if (rel === undefined) missing.push(n)
    else if (rel?.viewDef) queue.push(...viewQuery(rel.viewDef).relations)
  }
  return { all, missing }
}

/** relation names the catalog must know before lineage can be told */
function missingRelations(op: Operation, catalog: Catalog, ctx: ClassifyContext | undefined, hops = 0, out: string[] = []): string[] {
  const kept = keptLineage(op)
  if (!kept || hops > MAX_HOPS) return out
  out.push(...readNames(kept.relations, catalog).missing)
  for (const res of kept.results) {
    if (!('execute' in res) && !('cursor' in res)) continue
    const target = targetOf(op, kept, res, ctx)
    if (target && target !== op) missingRelations(target, catalog, ctx, hops + 1, out)
  }
  return out
}

/**
 * The lineage of every row-returning statement of `op`, or a promise that settles once the catalog
 * has what it needs (then call again). undefined when the plan has no column rules or the op kept
 * no parse (nothing to follow).
 */
export function rowLineage(op: Operation, plan: MaskPlan, catalog: Catalog, ctx?: ClassifyContext): RowLineage | Promise<void> | undefined {
  if (!hasColumnRules(plan)) return undefined
  const kept = keptLineage(op)
  if (!kept) return undefined
  // the lineage resolved for this parse under this plan, while the catalog is as it was then (every
  // change to it moves the generation): what the lookups below would find again, without the
  // arrays they build for it (a query's third biggest allocation before)
  const hit = resolvedByPlan.get(plan)?.get(kept)
  if (hit !== undefined && hit.generation === catalog.generation) return hit.lineage
  const missing = missingRelations(op, catalog, ctx)
  if (missing.length > 0) return catalog.loadRelations(missing)
  return resolve(op, plan, catalog, ctx, 0)
}

function resolve(op: Operation, plan: MaskPlan, catalog: Catalog, ctx: ClassifyContext | undefined, hops: number, cursor?: string): RowLineage {
  const found = analyse(op, catalog)
  if (!found) return { results: [{ columns: undefined, unknown: 'a statement the gateway kept no parse of' }], declared: [], maskedRead: ['(unknown statement)'], writes: [] }
  const { kept, a } = found
  if (cursor !== undefined) {
    // FETCH: the rows of the query the cursor was declared with (the op may be that query itself)
    const d = a.declared.get(cursor)
    if (d) return { results: [d], declared: [], maskedRead: maskedOf(a, plan), writes: [] }
  }
  const sessionBound = a.results.some(r => 'execute' in r || 'cursor' in r)
  let byOp = resolvedByPlan.get(plan)
  if (!sessionBound && cursor === undefined) {
    const hit = byOp?.get(kept)
    if (hit && hit.generation === catalog.generation) return hit.lineage
  }
  const masked = new Set(maskedOf(a, plan))
  const results: ResultLineage[] = []
  const writes: Write[] = [...a.writes]
  let writesUnknown = a.writesUnknown
  for (const r of a.results) {
    if ('none' in r) continue
    if ('columns' in r) {
      results.push(r)
      continue
    }
    const target = targetOf(op, kept, r, ctx)
    const name = 'execute' in r ? r.execute : r.cursor
    if (!target || hops >= MAX_HOPS) {
      results.push({ columns: undefined, unknown: 'execute' in r ? `prepared statement "${name}" is not known` : `cursor "${name}" is not known to the gateway` })
      // what an unknown cursor reads is unknown: count it as reading masked data
      masked.add(`(${'execute' in r ? 'prepared statement' : 'cursor'} ${name})`)
      continue
    }
    const inner = resolve(target, plan, catalog, ctx, hops + 1, 'cursor' in r ? r.cursor : undefined)
    results.push(...inner.results)
    for (const m of inner.maskedRead) masked.add(m)
    writes.push(...inner.writes)
    writesUnknown ??= inner.writesUnknown
  }
  const lineage: RowLineage = { results, declared: [...a.declared.values()], maskedRead: [...masked], writes, writesUnknown }
  if (!sessionBound && cursor === undefined) {
    if (!byOp) resolvedByPlan.set(plan, (byOp = new WeakMap()))
    byOp.set(kept, { generation: catalog.generation, lineage })
  }
  return lineage
}

function maskedOf(a: Analysed, plan: MaskPlan): string[] {
  const masked: string[] = []
  for (const cols of a.relations) {
    for (const c of cols ?? []) {
      const key = `${c.schema}.${c.table}.${c.column}`
      if (plan.forColumn(c.schema, c.table, c.column) !== undefined && !masked.includes(key)) masked.push(key)
    }
  }
  return masked
}

/** the analysis of the lineage `op` keeps; undefined when it kept none */
function analyse(op: Operation, catalog: Catalog): { kept: StatementLineage; a: Analysed } | undefined {
  const kept = keptLineage(op)
  if (!kept) return undefined
  const hit = analysed.get(kept)
  if (hit && hit.generation === catalog.generation) return { kept, a: hit }
  const reads = borrowedReads(op)
  const a = analyseTrees(kept, catalog)
  // the analysis read a constant of a borrowed tree: it told what the lender's constants make of
  // it, not this text's. Not kept for the borrowers; this text's own tree is analysed instead
  // (keptLineage now parses it: the watch is set for good)
  if (reads?.value) return analyse(op, catalog)
  analysed.set(kept, a)
  return { kept, a }
}

function analyseTrees(kept: StatementLineage, catalog: Catalog): Analysed {
  const analyzer = new LineageAnalyzer(name => {
    const rel = catalog.relationByName(name)
    if (!rel) return undefined
    if (!rel.viewDef) return rel
    // a view whose query does not parse: an empty node, which the analysis cannot follow
    return { columns: rel.columns, view: viewQuery(rel.viewDef).tree ?? {} }
  })
  const results: Pending[] = kept.results.map(r => ('tree' in r ? (r.copy ? { ...analyzer.result(r.tree), copy: true } : analyzer.result(r.tree)) : r))
  const declared = new Map<string, ResultLineage>()
  for (const [name, tree] of kept.cursors) declared.set(name, analyzer.result(tree))
  let writesUnknown: string | undefined
  for (const tree of kept.writes) writesUnknown ??= analyzer.writesOf(tree)
  const a: Analysed = {
    generation: catalog.generation,
    results,
    declared,
    relations: readNames(kept.relations, catalog).all.map(n => {
      const rel = catalog.relationByName(n)
      return rel ? [...rel.columns, ...rel.others.flat(), ...rel.descendants] : null
    }),
    writes: analyzer.writes,
    writesUnknown,
  }
  return a
}

/**
 * Why the statement must be refused before it runs: it reads a masked column and the lineage of
 * one of its output columns cannot be told. undefined: it may run; a promise: ask again after it.
 */
export function lineageRefusal(op: Operation, plan: MaskPlan, catalog: Catalog, ctx?: ClassifyContext): string | undefined | Promise<void> {
  const l = rowLineage(op, plan, catalog, ctx)
  if (l === undefined || l instanceof Promise) return l
  if (l.maskedRead.length === 0) return undefined
  const why = refusalOf(l) ?? writeRefusal(l, plan)
  if (why === undefined) return undefined
  // the cached column lists may be older than the tables (a column added since): look them up
  // again once before refusing
  if (!refreshed.has(op)) {
    refreshed.add(op)
    return catalog.reloadRelations(relationsOf(op, ctx))
  }
  refreshed.delete(op)
  return why
}

const refreshed = new WeakSet<Operation>()

function relationsOf(op: Operation, ctx: ClassifyContext | undefined, hops = 0, out: string[] = []): string[] {
  const kept = keptLineage(op)
  if (!kept || hops > MAX_HOPS) return out
  out.push(...kept.relations)
  for (const res of kept.results) {
    if (!('execute' in res) && !('cursor' in res)) continue
    const target = targetOf(op, kept, res, ctx)
    if (target && target !== op) relationsOf(target, ctx, hops + 1, out)
  }
  return out
}

/**
 * A write that puts a masked value into a column masked less (UPDATE customers SET note = email,
 * INSERT INTO other SELECT email …, CREATE TABLE AS) would let the next read return it in clear.
 */
function writeRefusal(l: RowLineage, plan: MaskPlan): string | undefined {
  const cols = l.maskedRead.slice(0, 3).join(', ')
  if (l.writesUnknown) return `masking: cannot tell what the statement writes (${l.writesUnknown}), and it reads masked column ${cols}`
  for (const w of l.writes) {
    const why = opaqueReason(w.value)
    const t = w.target
    const into = `${t.schema ? `${t.schema}.` : ''}${t.table}.${t.column}`
    if (why) return `masking: cannot tell what is written into ${into} (${why}), and the statement reads masked column ${cols}`
    let m: MaskMethod | undefined
    let from: Column | undefined
    for (const c of w.value.sources) {
      const x = plan.forColumn(c.schema, c.table, c.column)
      if (x && stricter(m, x) !== m) {
        m = x
        from = c
      }
    }
    if (!m || !from) continue
    const target = plan.forColumn(t.schema, t.table, t.column)
    if (target === undefined || stricter(target, m) !== target) {
      return `masking: the statement writes masked column ${from.schema}.${from.table}.${from.column} (${m}) into ${into}, which is ${target ? `masked only by ${target}` : 'not masked'}`
    }
  }
  return undefined
}

function refusalOf(l: RowLineage): string | undefined {
  const cols = l.maskedRead.slice(0, 3).join(', ') + (l.maskedRead.length > 3 ? ', …' : '')
  for (const r of [...l.results, ...l.declared]) {
    if (!r.columns) return `masking: cannot tell which columns the result is made of (${r.unknown ?? 'unknown'}), and the statement reads masked column ${cols}`
    for (let i = 0; i < r.columns.length; i++) {
      const why = opaqueReason(r.columns[i]!)
      if (why) return `masking: cannot tell which columns output column ${i + 1} is made of (${why}), and the statement reads masked column ${cols}`
    }
  }
  return undefined
}

/** the strictest method of the masked columns among `sources` */
export function strictestOf(plan: MaskPlan, sources: Column[]): MaskMethod | undefined {
  let m: MaskMethod | undefined
  for (const c of sources) {
    const x = plan.forColumn(c.schema, c.table, c.column)
    if (x) m = stricter(m, x)
  }
  return m
}

// a result has at most 1664 columns: a COPY whose columns are unknown has every one NULLed
const ALL_NULL: MaskMethod[] = new Array(1664).fill('null')

/** COPY (query) TO STDOUT: the method per column position (whole values), or a promise to wait on */
export function copyMethods(op: Operation, plan: MaskPlan, catalog: Catalog, ctx?: ClassifyContext): (MaskMethod | undefined)[] | undefined | Promise<void> {
  const l = rowLineage(op, plan, catalog, ctx)
  if (l === undefined || l instanceof Promise) return l
  if (l.maskedRead.length === 0) return undefined
  // the COPY statements of the text; which one these rows are is not said: the strictest by position
  const copies = l.results.filter(r => r.copy)
  if (copies.length === 0 || copies.some(r => !r.columns)) return ALL_NULL
  const width = Math.max(...copies.map(r => r.columns!.length))
  const out: (MaskMethod | undefined)[] = []
  for (let i = 0; i < width; i++) {
    let m: MaskMethod | undefined
    for (const r of copies) {
      const v = r.columns![i]
      if (!v) continue
      const x = opaqueReason(v) ? 'null' : strictestOf(plan, v.sources)
      if (x) m = stricter(m, x)
    }
    out.push(m)
  }
  return out
}

/** the op has a COPY … TO STDOUT whose columns lineage can tell */
export function hasCopyResult(op: Operation): boolean {
  return keptLineage(op)?.results.some(r => 'tree' in r && r.copy === true) ?? false
}
