// Lineage: for each output column of a statement's result, the source columns its value derives
// from, read off the parse tree. Column masking follows the data through it: `lower(email)`,
// `ARRAY[email]`, `row_to_json(c)` are masked like `email`. Where the tree does not say what a value
// is made of (a user function over a whole row, a set-returning function we do not know), the value
// is `opaque` and a statement that reads a masked relation is refused (see masking.ts).
//
// Two phases: the tree is kept per Operation when a text is compiled (once per distinct text); the
// analysis needs the relations' column lists (for `*` and bare names), so it runs once the catalog
// has them, and its result is cached per Operation and catalog generation.
import type { Operation } from '@portcullis/core/types'
import type { Node } from './parser.ts'
import { bodyOf, forEachNode, nodeOf } from './tree.ts'
import { relationName } from './lineage-values.ts'

export interface Column {
  schema: string
  table: string
  column: string
}

/** What a value is made of. */
export interface Value {
  /** every source column the value derives from */
  sources: Column[]
  /** the value is this one column, unchanged */
  direct?: Column
  /** where the parts are in the value's text form; absent: the value is one indivisible whole */
  parts?: Parts
  /** the analysis cannot tell what the value is made of: why */
  opaque?: string
}

export type Parts =
  /** record text `(1,"a@b.example",x)`: fields by position (names: for the JSON of the record) */
  | { kind: 'record'; fields: Value[]; names: string[] }
  /** array text `{a,b}`: every element */
  | { kind: 'array'; element: Value }
  /** JSON: the values of these keys in any object, the elements of any array */
  | { kind: 'json'; keys: Map<string, Value>; element?: Value; anyKey?: Value }

/** One statement that can return rows, as kept from the parse. */
export type ResultSource =
  /** copy: COPY (query) TO STDOUT, whose rows come as CopyData, never after a RowDescription */
  | { tree: Node; copy?: boolean }
  /** EXECUTE name: the prepared body's lineage (at: its statement's index in the text) */
  | { execute: string; at?: number }
  /** FETCH / MOVE name: the cursor's query's lineage */
  | { cursor: string }
  /** a statement whose result is not data (EXPLAIN, SHOW) */
  | { none: true }

export interface StatementLineage {
  /** statements of the text that can return rows, in order */
  results: ResultSource[]
  /** relation names as written anywhere in the text (for the catalog) */
  relations: string[]
  /** DECLARE name CURSOR FOR q: name → q (no rows now; FETCH returns them) */
  cursors: Map<string, Node>
  /** statements that write rows and return none (INSERT, UPDATE, MERGE, CREATE TABLE AS, COPY (q)) */
  writes: Node[]
  /** PREPARE name AS body in the text, by statement index: an EXECUTE after it in the text runs it */
  prepares?: { name: string; at: number; body: Operation }[]
}

/** a value written into a column: masked data must not land in a column masked less */
export interface Write {
  /** schema undefined: a table the statement creates (CREATE TABLE AS, SELECT INTO) */
  target: { schema?: string; table: string; column: string }
  value: Value
}

/** A relation as the analysis needs it: its columns in order; for a view, its query's parse. */
export interface Relation {
  columns: Column[]
  view?: Node
  /** same-named relations the name may also mean (another schema on the session's search_path) */
  others?: Column[][]
  /** columns of child tables and partitions: a read without ONLY returns their rows too */
  descendants?: Column[]
}

/** Catalog access the analysis needs; undefined when the relation is unknown. */
export type RelationColumns = (name: string) => Relation | undefined

/** The analysed result of one statement: its output columns, or why it cannot be told. */
export interface ResultLineage {
  /** the rows of COPY (query) TO STDOUT */
  copy?: boolean
  columns: Value[] | undefined
  /** the result's columns could not be listed (an unknown relation under `*`, an unknown cursor) */
  unknown?: string
}

const kept = new WeakMap<Operation, StatementLineage>()

// ---- phase 1: what is kept per text ---------------------------------------------------------

/** The statement's row-returning part, kept on the Operation compiled from it. */
export function lineageSource(stmt: Node | undefined): { result?: ResultSource; relations: string[]; cursor?: { name: string; tree: Node }; write?: Node } {
  const relations: string[] = []
  if (!stmt) return { relations }
  forEachNode(stmt, (type, b) => {
    if (type === 'RangeVar' && typeof b.relname === 'string') relations.push(relationName(b))
  })
  const n = nodeOf(stmt)
  if (!n) return { relations }
  const [type, b] = n
  switch (type) {
    case 'SelectStmt':
      return { result: { tree: stmt }, relations }
    case 'InsertStmt':
    case 'UpdateStmt':
    case 'DeleteStmt':
    case 'MergeStmt':
      return Array.isArray(b.returningList) && b.returningList.length > 0 ? { result: { tree: stmt }, relations } : { relations, write: stmt }
    case 'CreateTableAsStmt':
      return { relations, write: stmt }
    case 'CopyStmt':
      // COPY (query) TO STDOUT: rows without a RowDescription, masked by position (proxy's COPY path)
      if (b.is_from || b.filename || b.is_program) return { relations }
      if (b.query) return { result: { tree: b.query as Node, copy: true }, relations }
      if (!b.relation) return { relations }
      {
        // COPY t [(cols)] TO STDOUT: the rows of SELECT cols FROM t
        const cols = Array.isArray(b.attlist) && b.attlist.length > 0 ? b.attlist.map((a: unknown) => ({ ResTarget: { val: { ColumnRef: { fields: [a] } } } })) : [{ ResTarget: { val: { ColumnRef: { fields: [{ A_Star: {} }] } } } }]
        const tree = { SelectStmt: { targetList: cols, fromClause: [{ RangeVar: b.relation }], op: 'SETOP_NONE', limitOption: 'LIMIT_OPTION_DEFAULT' } }
        return { result: { tree, copy: true }, relations }
      }
    case 'DeclareCursorStmt':
      return { relations, cursor: { name: String(b.portalname ?? ''), tree: b.query as Node } }
    case 'ExecuteStmt':
      return { result: { execute: String(b.name ?? '') }, relations }
    case 'FetchStmt':
      return b.ismove ? { relations } : { result: { cursor: String(b.portalname ?? '') }, relations }
    case 'ExplainStmt': {
      // not a data result; but EXPLAIN ANALYZE runs the statement: its writes are checked
      const inner = nodeOf(b.query)?.[0]
      const writes = inner === 'InsertStmt' || inner === 'UpdateStmt' || inner === 'DeleteStmt' || inner === 'MergeStmt' || inner === 'CreateTableAsStmt' || bodyOf(b.query, 'SelectStmt')?.intoClause
      return writes ? { result: { none: true }, relations, write: b.query as Node } : { result: { none: true }, relations }
    }
    case 'VariableShowStmt':
      return { result: { none: true }, relations }
    default:
      return { relations }
  }
}

export function keepLineage(op: Operation, lineage: StatementLineage): void {
  const b = borrowOf(op)
  if (b !== undefined) {
    // a frozen borrower keeps its record: the lineage given is its own from now on
    b.settled = lineage
    return
  }
  borrowed.delete(op)
  kept.set(op, lineage)
}

// A text classified by skeleton under column rules (classify/index.ts) borrows the lineage kept for
// the first text of its skeleton: the same tree but for the constants, whose A_Const nodes are
// watched (literal.ts). While no analysis has read one, the lender's tree says what this text's
// would; once one has (`reads.value`), the borrower's own tree is parsed (`own`) and kept instead.
export interface Borrowed {
  lineage: StatementLineage
  reads: { readonly value: boolean }
  own: () => StatementLineage | undefined
  /** the borrower's own lineage once it has one (parsed after a read, or kept since); null: none */
  settled: StatementLineage | null | undefined
}

/**
 * The borrow record of a skeleton hit's Operation sits on the Operation itself, as a property no
 * spread, JSON or key listing sees (borrowerOf): a WeakMap entry per Query made every text of a
 * skeleton cost an ephemeron insert and its share of the scavenges (~2 µs a query, the largest
 * cost a simple Query paid that an Execute of a prepared statement did not)
 */
const BORROW = Symbol('portcullis.borrowedLineage')

/** `fields` (a copy of an Operation, not frozen yet) as a borrower of `lineage` */
export function borrowerOf<T extends Operation>(fields: T, lineage: StatementLineage, reads: { readonly value: boolean }, own: () => StatementLineage | undefined): T {
  const b: Borrowed = { lineage, reads, own, settled: undefined }
  Object.defineProperty(fields, BORROW, { value: b, enumerable: false })
  return fields
}

function borrowOf(op: Operation): Borrowed | undefined {
  return (op as { [BORROW]?: Borrowed })[BORROW] ?? borrowed.get(op)
}

// (for an Operation made elsewhere that keeps another's borrow: keepLineageOf)
const borrowed = new WeakMap<Operation, Borrowed>()

export function keptLineage(op: Operation): StatementLineage | undefined {
  const b = borrowOf(op)
  if (b === undefined) return kept.get(op)
  if (b.settled !== undefined) return b.settled ?? undefined
  if (!b.reads.value) return b.lineage
  const own = b.own()
  b.settled = own ?? null
  return own
}

/**
 * The watch over the constants of the tree `keptLineage(op)` returns when that tree is borrowed,
 * else undefined: an analysis of it that set `value` told what the lender's constants make of it.
 */
export function borrowedReads(op: Operation): { readonly value: boolean } | undefined {
  const b = borrowOf(op)
  return b !== undefined && b.settled === undefined ? b.reads : undefined
}

/** `bound` (withTopK) keeps the lineage of `op` as `op` keeps it, borrowed or its own */
export function keepLineageOf(bound: Operation, op: Operation): void {
  const b = borrowOf(op)
  if (b) borrowed.set(bound, { lineage: b.lineage, reads: b.reads, own: b.own, settled: b.settled })
  else {
    const own = kept.get(op)
    if (own) kept.set(bound, own)
  }
}

/** `DECLARE name CURSOR FOR q` in an operation: the names it declares (FETCH resolves them) */
export function declaredCursors(op: Operation): string[] {
  return [...(keptLineage(op)?.cursors.keys() ?? [])]
}

export { relationName, opaqueReason } from './lineage-values.ts'
export { LineageAnalyzer } from './lineage-analyzer.ts'
