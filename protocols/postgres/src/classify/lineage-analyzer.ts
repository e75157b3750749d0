// The lineage analysis proper: a walk of a parse tree that says, for each output column of a
// statement, what it is made of (see classify/lineage.ts for the words and what is kept per text).
import type { Node } from './parser.ts'
import { bodyOf, forEachNode, lastName, names, nodeOf, selectBody, str, type Body } from './tree.ts'
import type { RelationColumns, ResultLineage, Value, Write } from './lineage.ts'
import { array, asJson, derived, either, mergeSources, NONE, opaque, record, relationName, strip } from './lineage-values.ts'

const MAX_DEPTH = 500

interface OutCol {
  name: string
  value: Value
}

interface FromItem {
  /** the name a qualified reference uses (alias, or the relation's own name) */
  refname?: string
  /** undefined: the columns are unknown */
  columns: OutCol[] | undefined
  /** any column name resolves to this value (a known set-returning function's column list) */
  anyColumn?: Value
  /** for a join: the items under it, reachable by their own refnames */
  children?: FromItem[]
  /** why the columns are unknown */
  unknown?: string
}

interface Scope {
  items: FromItem[]
  parent?: Scope
  ctes: Map<string, OutCol[] | undefined>
}

// Functions whose result keeps the parts of their argument in a known shape
const TO_JSON = new Set(['row_to_json', 'to_json', 'to_jsonb'])
const JSON_AGG = new Set(['json_agg', 'jsonb_agg', 'json_agg_strict', 'jsonb_agg_strict'])
const JSON_OBJECT = new Set(['json_build_object', 'jsonb_build_object'])
const JSON_ARRAY = new Set(['json_build_array', 'jsonb_build_array'])
const JSON_OBJECT_AGG = new Set(['json_object_agg', 'jsonb_object_agg', 'json_object_agg_strict', 'jsonb_object_agg_strict', 'json_object_agg_unique', 'jsonb_object_agg_unique'])
const ARRAY_AGG = new Set(['array_agg'])
// Built-in functions that take a row and give a value computed from all of it (a whole)
const ROW_TO_WHOLE = new Set(['concat', 'concat_ws', 'format', 'textcat', 'md5', 'sha256', 'sha512', 'sha224', 'sha384', 'hashtext', 'string_agg', 'coalesce', 'greatest', 'least', 'nullif', 'min', 'max'])
// count(x) says how many rows, not what is in them
const NO_LINEAGE = new Set(['count'])
// built-in set-returning functions in FROM: every column they return derives from their arguments
const KNOWN_SRF = new Set([
  'generate_series', 'unnest', 'generate_subscripts', 'regexp_matches', 'regexp_split_to_table', 'string_to_table',
  'json_array_elements', 'jsonb_array_elements', 'json_array_elements_text', 'jsonb_array_elements_text',
  'json_each', 'jsonb_each', 'json_each_text', 'jsonb_each_text', 'json_object_keys', 'jsonb_object_keys',
  'json_to_record', 'jsonb_to_record', 'json_to_recordset', 'jsonb_to_recordset', 'json_populate_record',
  'jsonb_populate_record', 'json_populate_recordset', 'jsonb_populate_recordset', 'jsonb_path_query',
])
const SRF_COLUMNS: Record<string, string[]> = {
  json_each: ['key', 'value'], jsonb_each: ['key', 'value'], json_each_text: ['key', 'value'], jsonb_each_text: ['key', 'value'],
}
// their columns are a record type's or a column definition list's
const RECORD_SRF = /^(json|jsonb)_(to|populate)_record(set)?$/
// casts to these keep the text form, so the parts stay where they were
const TEXT_TYPES = new Set(['text', 'varchar', 'bpchar', 'char', 'name', 'json', 'jsonb'])

export class LineageAnalyzer {
  private depth = 0
  /** what the statements analysed so far write, and where */
  readonly writes: Write[] = []

  constructor(private readonly columnsOf: RelationColumns) {}

  /** the output columns of one row-returning statement */
  result(tree: Node): ResultLineage {
    try {
      const cols = this.statement(tree, { items: [], ctes: new Map() })
      return { columns: cols?.map(c => c.value), unknown: cols ? undefined : 'the columns of its result cannot be listed' }
    } catch (err) {
      if (err instanceof Unknown) return { columns: undefined, unknown: err.message }
      throw err
    }
  }

  /** a statement that writes and returns no rows: only its writes are of interest */
  writesOf(tree: Node): string | undefined {
    try {
      const n = nodeOf(tree)
      if (n?.[0] === 'CreateTableAsStmt') {
        const cols = this.statement(n[1].query, { items: [], ctes: new Map() })
        if (!cols) return 'the columns of CREATE TABLE AS cannot be listed'
        this.into(n[1].into, cols)
        return undefined
      }
      this.statement(tree, { items: [], ctes: new Map() })
      return undefined
    } catch (err) {
      if (err instanceof Unknown) return err.message
      throw err
    }
  }

  /** CREATE TABLE AS / SELECT INTO: the new table's columns get the query's values */
  private into(clause: Body | undefined, cols: OutCol[]): void {
    const rel = clause?.rel as Body | undefined
    if (!rel) return
    const rename = names(clause!.colNames)
    cols.forEach((c, i) => this.writes.push({ target: { table: String(rel.relname), column: rename[i] ?? c.name }, value: c.value }))
  }

  private enter(): void {
    if (++this.depth > MAX_DEPTH) throw new Unknown('the statement is nested too deeply')
  }

  /** undefined: the column list cannot be told */
  private statement(node: unknown, outer: Scope): OutCol[] | undefined {
    this.enter()
    try {
      const s = selectBody(node)
      if (s) return this.select(s, outer)
      const n = nodeOf(node)
      if (!n) throw new Unknown('a statement the analysis does not know')
      const [type, b] = n
      switch (type) {
        case 'InsertStmt':
        case 'UpdateStmt':
        case 'DeleteStmt':
        case 'MergeStmt':
          return this.modify(type, b, outer)
        default:
          throw new Unknown(`${type} is not a query the analysis knows`)
      }
    } finally {
      this.depth--
    }
  }

  private withCtes(withClause: Body | undefined, outer: Scope): Scope {
    if (!withClause || !Array.isArray(withClause.ctes)) return outer
    const scope: Scope = { items: [], parent: outer, ctes: new Map() }
    for (const c of withClause.ctes) {
      const cte = bodyOf(c, 'CommonTableExpr')
      if (!cte) continue
      const name = String(cte.ctename)
      const rename = names(cte.aliascolnames)
      let cols: OutCol[] | undefined
      const q = selectBody(cte.ctequery)
      if (withClause.recursive && q && q.op !== 'SETOP_NONE' && q.larg) {
        // the recursive term reads the CTE itself: start from the other term, widen until stable
        cols = this.select(q.larg, scope)
        for (let round = 0; cols && round < 8; round++) {
          scope.ctes.set(name, renamed(cols, rename))
          const next = this.select(q.rarg, scope)
          if (!next || next.length !== cols.length) {
            cols = undefined
            break
          }
          const merged = cols.map((c, i) => ({ name: c.name, value: either([c.value, next[i]!.value]) }))
          const grew = merged.some((m, i) => m.value.sources.length !== cols![i]!.value.sources.length || !!m.value.opaque !== !!cols![i]!.value.opaque)
          cols = merged
          if (!grew) break
        }
        // what came of the recursion is one whole per column
        cols = cols?.map(c => ({ name: c.name, value: strip(derived([c.value])) }))
      } else {
        cols = this.statement(cte.ctequery, scope)
      }
      scope.ctes.set(name, cols && renamed(cols, rename))
    }
    return scope
  }

  private select(s: Body, outer: Scope): OutCol[] | undefined {
    this.enter()
    try {
      const scope0 = this.withCtes(s.withClause, outer)
      if (s.op && s.op !== 'SETOP_NONE') {
        const l = this.select(selectBody(s.larg)!, scope0)
        const r = this.select(selectBody(s.rarg)!, scope0)
        if (!l || !r) return undefined
        if (l.length !== r.length) throw new Unknown('the arms of a set operation differ in width')
        return l.map((c, i) => ({ name: c.name, value: either([c.value, r[i]!.value]) }))
      }
      if (Array.isArray(s.valuesLists) && s.valuesLists.length > 0) {
        const rows = s.valuesLists.map((l: unknown) => (bodyOf(l, 'List')?.items as unknown[]) ?? [])
        const width = rows[0].length
        const scope: Scope = { items: [], parent: scope0, ctes: new Map() }
        const out: OutCol[] = []
        for (let i = 0; i < width; i++) {
          out.push({ name: `column${i + 1}`, value: either(rows.map((r: unknown[]) => this.expr(r[i], scope))) })
        }
        return out
      }
      const scope: Scope = { items: [], parent: scope0, ctes: new Map() }
      for (const f of (s.fromClause as unknown[]) ?? []) scope.items.push(this.fromItem(f, scope))
      const out = this.targets(s.targetList ?? [], scope)
      if (s.intoClause) {
        if (!out) throw new Unknown('the columns of SELECT INTO cannot be listed')
        this.into(s.intoClause, out)
      }
      return out
    } finally {
      this.depth--
    }
  }

  /** INSERT / UPDATE / DELETE / MERGE … RETURNING */
  private modify(type: string, b: Body, outer: Scope): OutCol[] | undefined {
    const scope0 = this.withCtes(b.withClause, outer)
    const scope: Scope = { items: [], parent: scope0, ctes: new Map() }
    const target = this.rangeVar(b.relation, scope0)
    // what is written into a column is what RETURNING gives back
    if (target.columns) {
      const cols = target.columns.map(c => ({ ...c }))
      target.columns = cols
      const origin = new Map(cols.map(c => [c.name, c.value.direct]))
      const into = (name: string, v: Value) => {
        const c = cols.find(x => x.name === name)
        if (!c) return
        const d = origin.get(name)
        if (d) this.writes.push({ target: d, value: v })
        c.value = either([c.value, strip(v)])
      }
      if (type === 'InsertStmt' && b.selectStmt) {
        const written = this.statement(b.selectStmt, scope0)
        const named = Array.isArray(b.cols) ? b.cols.map((c: unknown) => String(bodyOf(c, 'ResTarget')?.name ?? '')) : cols.map(c => c.name)
        if (!written) for (const c of cols) c.value = opaque('the inserted rows cannot be analysed', [c.value])
        else written.forEach((w, i) => named[i] !== undefined && into(named[i]!, w.value))
      }
      if (type === 'UpdateStmt' || type === 'MergeStmt') {
        for (const f of (b.fromClause as unknown[]) ?? []) scope.items.push(this.fromItem(f, scope))
        if (b.sourceRelation) scope.items.push(this.fromItem(b.sourceRelation, scope))
      }
      if (type === 'DeleteStmt') for (const f of (b.usingClause as unknown[]) ?? []) scope.items.push(this.fromItem(f, scope))
      scope.items.unshift(target)
      const conflict = b.onConflictClause as Body | undefined
      if (type === 'InsertStmt' && Array.isArray(conflict?.targetList)) {
        // ON CONFLICT DO UPDATE SET c = excluded.x / the existing row / anything else
        const excluded: FromItem = { refname: 'excluded', columns: target.columns.map(c => ({ ...c })) }
        const s2: Scope = { items: [target, excluded], parent: scope0, ctes: new Map() }
        for (const t of conflict!.targetList as unknown[]) {
          const rt = bodyOf(t, 'ResTarget')
          if (rt?.name) into(String(rt.name), this.expr(rt.val, s2))
        }
      }
      if (type === 'UpdateStmt') {
        for (const t of (b.targetList as unknown[]) ?? []) {
          const rt = bodyOf(t, 'ResTarget')
          if (rt?.name) into(String(rt.name), this.expr(rt.val, scope))
        }
      }
      if (type === 'MergeStmt') {
        // every WHEN clause may write any of its target columns
        for (const w of (b.mergeWhenClauses as unknown[]) ?? []) {
          const wc = bodyOf(w, 'MergeWhenClause')
          const tl = (wc?.targetList as unknown[]) ?? []
          const vals = (wc?.values as unknown[]) ?? []
          tl.forEach((t, i) => {
            const rt = bodyOf(t, 'ResTarget')
            const v = rt?.val ?? vals[i]
            if (rt?.name && v) into(String(rt.name), this.expr(v, scope))
          })
          if (!tl.length && vals.length) vals.forEach((v, i) => cols[i] && into(cols[i]!.name, this.expr(v, scope)))
        }
      }
    } else scope.items.unshift(target)
    return this.targets(b.returningList ?? [], scope)
  }

  private targets(list: unknown[], scope: Scope): OutCol[] | undefined {
    const out: OutCol[] = []
    for (const t of list) {
      const rt = bodyOf(t, 'ResTarget')
      if (!rt) continue
      const ref = bodyOf(rt.val, 'ColumnRef')
      const fields = (ref?.fields as unknown[]) ?? []
      if (ref && bodyOf(fields[fields.length - 1], 'A_Star') !== undefined) {
        const expanded = this.star(fields.slice(0, -1), scope)
        if (!expanded) return undefined
        out.push(...expanded)
        continue
      }
      const ind = bodyOf(rt.val, 'A_Indirection')
      if (ind && bodyOf((ind.indirection as unknown[]).at(-1), 'A_Star') !== undefined) {
        // (c).*, (row(a, b)).*: one output column per field of the record
        const rec = this.expr({ A_Indirection: { ...ind, indirection: (ind.indirection as unknown[]).slice(0, -1) } }, scope)
        if (rec.parts?.kind !== 'record') return undefined
        const p = rec.parts
        out.push(...p.fields.map((v, i) => ({ name: p.names[i] ?? `f${i + 1}`, value: v })))
        continue
      }
      out.push({ name: rt.name ?? defaultName(rt.val), value: this.expr(rt.val, scope) })
    }
    return out
  }

  /** `*` or `x.*`: undefined when a relation's columns are unknown */
  private star(qualifier: unknown[], scope: Scope): OutCol[] | undefined {
    if (qualifier.length === 0) {
      const out: OutCol[] = []
      for (const item of scope.items) {
        if (!item.columns) throw new Unknown(`\`*\` over ${item.unknown ?? 'a FROM item whose columns are unknown'}`)
        out.push(...item.columns)
      }
      return out
    }
    const item = this.qualified(names(qualifier), scope)
    if (item && !item.columns) throw new Unknown(`\`${names(qualifier).join('.')}.*\` over ${item.unknown ?? 'a FROM item whose columns are unknown'}`)
    return item?.columns
  }

  private fromItem(node: unknown, scope: Scope): FromItem {
    this.enter()
    try {
      const n = nodeOf(node)
      if (!n) return { columns: undefined, unknown: 'a FROM item the analysis does not know' }
      const [type, b] = n
      switch (type) {
        case 'RangeVar':
          return this.rangeVar(b, scope)
        case 'RangeSubselect': {
          const cols = this.statement(b.subquery, scope)
          return aliased({ refname: b.alias?.aliasname, columns: cols, unknown: cols ? undefined : 'a subquery whose columns cannot be listed' }, b.alias)
        }
        case 'JoinExpr':
          return this.join(b, scope)
        case 'RangeFunction':
          return this.rangeFunction(b, scope)
        default:
          return { refname: b.alias?.aliasname, columns: undefined, unknown: `${type} in FROM is not supported by the analysis` }
      }
    } finally {
      this.depth--
    }
  }

  private rangeVar(b: Body, scope: Scope): FromItem {
    const name = String(b.relname)
    if (!b.schemaname) {
      for (let s: Scope | undefined = scope; s; s = s.parent) {
        if (s.ctes.has(name)) {
          const cols = s.ctes.get(name)
          return aliased({ refname: name, columns: cols, unknown: cols ? undefined : `the columns of "${name}" cannot be listed` }, b.alias)
        }
      }
    }
    const rel = this.columnsOf(relationName(b))
    if (!rel) return aliased({ refname: name, columns: undefined, unknown: `relation ${relationName(b)} is not known to the catalog` }, b.alias)
    const twins = (col: string) => (rel.others ?? []).flatMap(o => o.filter(c => c.column === col))
    // (ONLY t reads none of them; it is treated like t: masked as strictly)
    const kids = rel.descendants ?? []
    let columns: OutCol[] = rel.columns.map(c => {
      const more = twins(c.column)
      const under = kids.filter(k => k.column === c.column)
      // a parent's column holds its children's values under the parent's name: not `direct`
      if (under.length) return { name: c.column, value: { sources: [c, ...more, ...under] } }
      // still `direct` with twins: for a plain column the RowDescription says which of them it is
      return { name: c.column, value: { sources: more.length ? [c, ...more] : [c], direct: c } }
    })
    if (rel.view) {
      // a view's column is its own and what the view's query makes it of; not `direct`: the
      // RowDescription names the view column, whose base the catalog only guesses by name
      let inner: OutCol[] | undefined
      try {
        inner = this.statement(rel.view, { items: [], ctes: new Map() })
      } catch (err) {
        if (!(err instanceof Unknown)) throw err
      }
      if (!inner || inner.length !== columns.length) {
        columns = columns.map(c => ({ name: c.name, value: opaque(`the query of view ${relationName(b)} cannot be analysed`) }))
      } else columns = columns.map((c, i) => ({ name: c.name, value: { sources: mergeSources([c.value, inner[i]!.value]), parts: inner[i]!.value.parts, opaque: inner[i]!.value.opaque } }))
    }
    return aliased({ refname: name, columns }, b.alias)
  }

  private join(b: Body, scope: Scope): FromItem {
    const l = this.fromItem(b.larg, scope)
    const r = this.fromItem(b.rarg, scope)
    const item: FromItem = { columns: undefined, children: [l, r] }
    if (l.columns && r.columns) {
      let using = names(b.usingClause)
      if (b.isNatural) using = l.columns.map(c => c.name).filter(n => r.columns!.some(c => c.name === n))
      const merged: OutCol[] = using.map(u => ({
        name: u,
        value: either([...l.columns!.filter(c => c.name === u), ...r.columns!.filter(c => c.name === u)].map(c => c.value)),
      }))
      item.columns = [...merged, ...l.columns.filter(c => !using.includes(c.name)), ...r.columns.filter(c => !using.includes(c.name))]
    } else item.unknown = l.unknown ?? r.unknown
    if (b.alias) {
      item.refname = b.alias.aliasname
      if (item.columns) item.columns = renamed(item.columns, names(b.alias.colnames))
      // a join with an alias hides the names of its parts (SQL standard; Postgres follows it)
      item.children = undefined
    }
    return item
  }

  private rangeFunction(b: Body, scope: Scope): FromItem {
    const calls: unknown[] = []
    for (const f of (b.functions as unknown[]) ?? []) {
      const items = (bodyOf(f, 'List')?.items as unknown[]) ?? []
      if (items[0]) calls.push(items[0])
    }
    const values: Value[] = []
    let known = true
    let fname = ''
    for (const c of calls) {
      const fc = bodyOf(c, 'FuncCall')
      fname ||= fc ? (lastName(fc.funcname) ?? '') : ''
      if (!fc || !KNOWN_SRF.has(lastName(fc.funcname) ?? '') || names(fc.funcname).length > 2) known = false
      values.push(fc ? derived(((fc.args as unknown[]) ?? []).map(a => strip(this.expr(a, scope)))) : this.expr(c, scope))
    }
    const refname = b.alias?.aliasname ?? fname
    if (!known) {
      // a function's body is out of sight: it may read any table and return any of its columns
      const args = derived(values)
      return { refname, columns: undefined, unknown: `function ${fname || 'call'} in FROM returns rows the gateway cannot see into`, anyColumn: opaque(`function ${fname} in FROM`, [args]) }
    }
    const v = strip(derived(values))
    const colnames = names(b.alias?.colnames)
    const defs = ((b.coldeflist as unknown[]) ?? []).map(d => String(bodyOf(d, 'ColumnDef')?.colname ?? ''))
    const own = SRF_COLUMNS[fname]
    // unnest(a, b): one column per array; the populate/to_record family: the columns of a type
    const width = fname === 'unnest' ? calls.length === 1 ? (((bodyOf(calls[0], 'FuncCall')?.args as unknown[]) ?? []).length || 1) : 0 : own?.length ?? (RECORD_SRF.test(fname) ? 0 : 1)
    let listed = defs.length ? defs : own ? [...own] : Array.from({ length: width }, (_, i) => (i === 0 ? refname : `${refname}${i + 1}`))
    if (calls.length > 1 || listed.length === 0) {
      // ROWS FROM (…), a record type's columns: how many is not known here
      return { refname, columns: undefined, unknown: `the columns of ${fname} in FROM are not known`, anyColumn: v }
    }
    if (colnames.length) listed = listed.map((n, i) => colnames[i] ?? n)
    if (b.ordinality) listed.push(colnames[listed.length] ?? 'ordinality')
    return { refname, columns: listed.map(n => ({ name: n, value: v })) }
  }

  /** an item by qualified name (`c`, `public.customers`) */
  private qualified(q: string[], scope: Scope): FromItem | undefined {
    const name = q[q.length - 1]
    for (let s: Scope | undefined = scope; s; s = s.parent) {
      const hit = findItem(s.items, name)
      if (hit) return hit
    }
    return undefined
  }

  private columnRef(fields: unknown[], scope: Scope): Value {
    const parts = fields.map(f => str(f))
    if (parts.some(p => p === undefined)) throw new Unknown('a column reference the analysis does not know')
    const ps = parts as string[]
    if (ps.length === 1) {
      const name = ps[0]!
      for (let s: Scope | undefined = scope; s; s = s.parent) {
        const hits: Value[] = []
        let unsure: FromItem | undefined
        for (const item of s.items) {
          const c = item.columns?.filter(x => x.name === name)
          if (c && c.length) hits.push(...c.map(x => x.value))
          else if (item.anyColumn) hits.push(item.anyColumn)
          else if (!item.columns) unsure = item
        }
        if (unsure) return opaque(`column "${name}" may come from ${unsure.unknown ?? 'a relation whose columns are unknown'}`)
        if (hits.length) return hits.length === 1 ? hits[0]! : either(hits)
        // a bare relation name: the whole row
        const whole = findItem(s.items, name)
        if (whole) return this.wholeRow(whole)
      }
      return opaque(`column "${name}" cannot be resolved`)
    }
    // rel.col, schema.rel.col, db.schema.rel.col
    const column = ps[ps.length - 1]!
    const item = this.qualified(ps.slice(0, -1), scope)
    if (!item) {
      // (composite).field written as rel.field where rel is a column: resolved like the column itself
      const v = this.columnRef(fields.slice(0, 1), scope)
      return v.opaque ? opaque(`column "${ps.join('.')}" cannot be resolved`) : this.field(v, column)
    }
    if (!item.columns) return item.anyColumn ?? opaque(`column "${ps.join('.')}": ${item.unknown ?? 'unknown columns'}`)
    const hit = item.columns.filter(c => c.name === column)
    if (hit.length) return either(hit.map(c => c.value))
    if (item.anyColumn) return item.anyColumn
    return opaque(`column "${ps.join('.')}" cannot be resolved`)
  }

  private wholeRow(item: FromItem): Value {
    if (!item.columns) return opaque(`a whole row of ${item.refname ?? 'a FROM item'} whose columns are unknown`)
    return record(item.columns.map(c => c.value), item.columns.map(c => c.name))
  }

  /** (v).name of a record value */
  private field(v: Value, name: string): Value {
    if (v.parts?.kind === 'record') {
      const i = v.parts.names.indexOf(name)
      if (i >= 0) return v.parts.fields[i]!
    }
    return strip(derived([v]))
  }

  expr(node: unknown, scope: Scope): Value {
    if (node === undefined || node === null) return NONE
    this.enter()
    try {
      return this.exprInner(node, scope)
    } finally {
      this.depth--
    }
  }

  private exprInner(node: unknown, scope: Scope): Value {
    const n = nodeOf(node)
    if (!n) {
      if (Array.isArray(node)) return derived(node.map(x => this.expr(x, scope)))
      return NONE
    }
    const [type, b] = n
    switch (type) {
      case 'A_Const':
      case 'ParamRef':
      case 'SQLValueFunction':
      case 'SetToDefault':
        return NONE
      case 'ColumnRef': {
        const fields = (b.fields as unknown[]) ?? []
        if (bodyOf(fields[fields.length - 1], 'A_Star') !== undefined) {
          // c.* inside an expression (ROW(c.*), f(c.*)): the record of those columns
          const cols = this.star(fields.slice(0, -1), scope)
          return cols ? record(cols.map(c => c.value), cols.map(c => c.name)) : opaque('`*` over columns the analysis cannot list')
        }
        return this.columnRef(fields, scope)
      }
      case 'TypeCast': {
        const v = this.expr(b.arg, scope)
        const t = lastName(b.typeName?.names) ?? ''
        // a cast to text keeps the text form (and the parts in it); any other cast is a new whole
        if (TEXT_TYPES.has(t) && !b.typeName?.arrayBounds) return v.parts ? { sources: v.sources, parts: v.parts } : strip(v)
        return strip(derived([v]))
      }
      case 'CollateClause':
        return strip(this.expr(b.arg, scope))
      case 'A_Expr':
        return strip(derived([this.expr(b.lexpr, scope), this.expr(b.rexpr, scope)]))
      case 'BoolExpr':
      case 'MinMaxExpr':
        return strip(derived(((b.args as unknown[]) ?? []).map(a => this.expr(a, scope))))
      case 'NullTest':
      case 'BooleanTest':
        return strip(derived([this.expr(b.arg, scope)]))
      case 'CoalesceExpr':
        return strip(either(((b.args as unknown[]) ?? []).map(a => this.expr(a, scope))))
      case 'CaseExpr': {
        const results: Value[] = []
        const conds: Value[] = [this.expr(b.arg, scope)]
        for (const w of (b.args as unknown[]) ?? []) {
          const cw = bodyOf(w, 'CaseWhen')
          if (!cw) continue
          conds.push(this.expr(cw.expr, scope))
          results.push(this.expr(cw.result, scope))
        }
        results.push(this.expr(b.defresult, scope))
        // the branch taken says something of the condition: its sources join the result's
        const r = strip(either(results))
        const c = derived(conds)
        return c.sources.length || c.opaque ? strip(derived([r, c])) : r
      }
      case 'RowExpr': {
        const args = ((b.args as unknown[]) ?? []).map(a => this.expr(a, scope))
        const colnames = names(b.colnames)
        return record(args, args.map((_, i) => colnames[i] ?? `f${i + 1}`))
      }
      case 'A_ArrayExpr':
        return array(either(((b.elements as unknown[]) ?? []).map(a => this.expr(a, scope))))
      case 'A_Indirection': {
        let v = this.expr(b.arg, scope)
        for (const ind of (b.indirection as unknown[]) ?? []) {
          const f = str(ind)
          if (f !== undefined) v = this.field(v, f)
          else if (bodyOf(ind, 'A_Indices')) {
            const idx = bodyOf(ind, 'A_Indices')!
            const bounds = derived([this.expr(idx.lidx, scope), this.expr(idx.uidx, scope)])
            const el = v.parts?.kind === 'array' && !idx.is_slice ? v.parts.element : strip(v)
            v = bounds.sources.length ? strip(derived([el, bounds])) : el
          } else if (bodyOf(ind, 'A_Star')) v = strip(derived([v]))
          else v = strip(derived([v]))
        }
        return v
      }
      case 'SubLink':
        return this.subLink(b, scope)
      case 'FuncCall':
        return this.funcCall(b, scope)
      case 'GroupingFunc':
        return NONE
      case 'List':
        // IN (a, b), BETWEEN x AND y
        return strip(derived(((b.items as unknown[]) ?? []).map(a => this.expr(a, scope))))
      case 'NamedArgExpr':
        return this.expr(b.arg, scope)
      case 'JsonIsPredicate':
        return strip(derived([this.expr(b.expr, scope)]))
      case 'MultiAssignRef':
        // UPDATE t SET (a, b) = (SELECT …): each column gets one of the source's
        return strip(this.expr(b.source, scope))
      case 'JsonObjectConstructor':
      case 'JsonArrayConstructor':
      case 'JsonArrayQueryConstructor':
      case 'JsonObjectAgg':
      case 'JsonArrayAgg':
      case 'JsonFuncExpr':
      case 'JsonParseExpr':
      case 'JsonScalarExpr':
      case 'JsonSerializeExpr':
      case 'XmlExpr':
      case 'XmlSerialize': {
        // SQL/JSON and XML constructors: a whole of everything under them; a whole row inside is opaque
        const vals: Value[] = []
        forEachNode(b, (t, body) => {
          if (t === 'ColumnRef' || t === 'SubLink' || t === 'FuncCall' || t === 'RowExpr') {
            vals.push(this.expr({ [t]: body }, scope))
            return false
          }
          return true
        })
        const wholeRow = vals.find(v => v.parts?.kind === 'record')
        if (wholeRow) return opaque(`${type} over a whole row`, [wholeRow])
        return strip(derived(vals))
      }
      default:
        throw new Unknown(`${type} is an expression the analysis does not know`)
    }
  }

  private subLink(b: Body, scope: Scope): Value {
    const inner: Scope = { items: [], parent: scope, ctes: new Map() }
    const test = this.expr(b.testexpr, scope)
    switch (b.subLinkType) {
      case 'EXISTS_SUBLINK':
        // a condition, like WHERE: no value of the rows comes out (an oracle; see README)
        return NONE
      case 'EXPR_SUBLINK':
      case 'ARRAY_SUBLINK': {
        const cols = this.statement(b.subselect, inner)
        if (!cols) return opaque('a subquery whose columns cannot be listed')
        const v = cols.length === 1 ? cols[0]!.value : record(cols.map(c => c.value), cols.map(c => c.name))
        return b.subLinkType === 'ARRAY_SUBLINK' ? array(v) : strip(v)
      }
      default: {
        // x IN (SELECT …), x = ANY (…), ROWCOMPARE: a boolean computed from both
        const cols = this.statement(b.subselect, inner)
        if (!cols) return opaque('a subquery whose columns cannot be listed')
        return strip(derived([test, ...cols.map(c => c.value)]))
      }
    }
  }

  private funcCall(b: Body, scope: Scope): Value {
    const fq = names(b.funcname)
    const name = fq[fq.length - 1]!.toLowerCase()
    // pg_catalog.f and f are the built-in; any other schema is somebody's function
    const builtin = fq.length === 1 || (fq.length === 2 && fq[0] === 'pg_catalog')
    const args = ((b.args as unknown[]) ?? []).map(a => this.expr(a, scope))
    // ORDER BY / FILTER / OVER of an aggregate or window: which row comes first tells of them
    const extra: Value[] = []
    for (const s of (b.agg_order as unknown[]) ?? []) extra.push(this.expr(bodyOf(s, 'SortBy')?.node, scope))
    if (b.agg_filter) extra.push(this.expr(b.agg_filter, scope))
    const ctx = extra.length ? strip(derived(extra)) : NONE
    const plus = (v: Value) => (ctx.sources.length || ctx.opaque ? strip(derived([v, ctx])) : v)
    if (b.agg_star || (builtin && NO_LINEAGE.has(name))) return NONE
    if (builtin) {
      // row_to_json(c, pretty): the second argument only says how the text is laid out
      if (TO_JSON.has(name) && (args.length === 1 || (name === 'row_to_json' && args.length === 2 && args[1]!.sources.length === 0))) return plus(asJson(args[0]!))
      if (JSON_AGG.has(name) && args.length === 1) {
        const el = asJson(args[0]!)
        return plus(el.sources.length && !el.opaque ? { sources: el.sources, parts: { kind: 'json', keys: new Map(), element: el } } : strip(el))
      }
      if (ARRAY_AGG.has(name) && args.length === 1) return plus(array(args[0]!))
      if (JSON_OBJECT.has(name) && !b.func_variadic) {
        const keys = new Map<string, Value>()
        const vals: Value[] = []
        const argNodes = (b.args as unknown[]) ?? []
        let constKeys = args.length % 2 === 0
        for (let i = 0; i + 1 < args.length; i += 2) {
          const k = bodyOf(argNodes[i], 'A_Const')?.sval?.sval
          if (typeof k !== 'string' || args[i]!.sources.length) constKeys = false
          else keys.set(k, keys.has(k) ? either([keys.get(k)!, asJson(args[i + 1]!)]) : asJson(args[i + 1]!))
          vals.push(args[i]!, args[i + 1]!)
        }
        const d = derived(args)
        if (d.opaque || d.sources.length === 0) return d
        if (!constKeys) return wholeOf(args, name)
        return { sources: d.sources, parts: { kind: 'json', keys } }
      }
      if (JSON_ARRAY.has(name) && !b.func_variadic) {
        const el = either(args.map(asJson))
        const d = derived(args)
        if (d.opaque || d.sources.length === 0) return d
        return { sources: d.sources, parts: { kind: 'json', keys: new Map(), element: el } }
      }
      if (JSON_OBJECT_AGG.has(name) && args.length === 2) {
        const v = asJson(args[1]!)
        const d = derived(args)
        if (d.opaque || d.sources.length === 0 || args[0]!.sources.length) return plus(wholeOf(args, name))
        // the keys are data: any key may hold the value
        return plus({ sources: d.sources, parts: { kind: 'json', keys: new Map(), anyKey: v } })
      }
    }
    // a whole row into a function: only built-ins that make one whole of it are known; any other
    // function may return one field of the row, or anything else
    const wholeRow = args.find(a => a.parts?.kind === 'record' && a.sources.length > 0)
    if (wholeRow && !(builtin && ROW_TO_WHOLE.has(name))) return opaque(`function ${fq.join('.')} over a whole row`, [wholeRow])
    const over = bodyOf(b.over, 'WindowDef') ?? b.over
    if (over && typeof over === 'object') {
      for (const p of (over.partitionClause as unknown[]) ?? []) extra.push(this.expr(p, scope))
      for (const s of (over.orderClause as unknown[]) ?? []) extra.push(this.expr(bodyOf(s, 'SortBy')?.node, scope))
    }
    // row_number() over (order by email) ranks by the email: an ordering is a derivation too
    return strip(derived([...args, ...extra]))
  }
}

/** a JSON value whose structure does not follow from the tree: one whole */
function wholeOf(args: Value[], _name: string): Value {
  return strip(derived(args))
}

class Unknown extends Error {}

function findItem(items: FromItem[], name: string): FromItem | undefined {
  for (const item of items) {
    if (item.refname === name) return item
    if (item.children) {
      const hit = findItem(item.children, name)
      if (hit) return hit
    }
  }
  return undefined
}

function aliased(item: FromItem, alias: Body | undefined): FromItem {
  if (!alias) return item
  item.refname = alias.aliasname
  if (item.columns) item.columns = renamed(item.columns, names(alias.colnames))
  return item
}

function renamed(cols: OutCol[], rename: string[]): OutCol[] {
  if (rename.length === 0) return cols
  return cols.map((c, i) => (i < rename.length ? { name: rename[i]!, value: c.value } : c))
}

/** the column name Postgres gives an unnamed target: what a later `row_to_json(s)` keys by */
function defaultName(val: unknown): string {
  const n = nodeOf(val)
  if (!n) return '?column?'
  const [type, b] = n
  if (type === 'ColumnRef') return str((b.fields as unknown[]).at(-1)) ?? '?column?'
  if (type === 'FuncCall') return lastName(b.funcname) ?? '?column?'
  if (type === 'TypeCast') return defaultName(b.arg) === '?column?' ? (lastName(b.typeName?.names) ?? '?column?') : defaultName(b.arg)
  if (type === 'A_Indirection') {
    const last = (b.indirection as unknown[]).at(-1)
    return str(last) ?? defaultName(b.arg)
  }
  if (type === 'CaseExpr') return 'case'
  if (type === 'CoalesceExpr') return 'coalesce'
  if (type === 'RowExpr') return 'row'
  if (type === 'A_ArrayExpr') return 'array'
  if (type === 'SubLink') return b.subLinkType === 'ARRAY_SUBLINK' ? 'array' : b.subLinkType === 'EXISTS_SUBLINK' ? 'exists' : '?column?'
  return '?column?'
}

/** the first opaque value under v (parts included): why it cannot be told */