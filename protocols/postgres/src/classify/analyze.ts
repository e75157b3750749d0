// One statement's class, resources and facts, read off its parse tree. The walk covers the whole tree
// (CTEs, sub-selects, defaults, function arguments), so a modification or a dangerous function hidden
// anywhere raises the class of the statement that holds it.
import type { FactValue, OperationClass, VectorFacts } from '@portcullis/core/types'
import { stricter } from './classes.ts'
import { functionClass } from './functions.ts'
import { constValue, forEachNode, lastName, names, nodeOf, type Body } from './tree.ts'
import { isWhereUnbounded } from './where.ts'
import { settingConcern } from '../settings.ts'
import { embeddingTargets, limitOf, vectorSearchesOf, type Limit, type VectorSearch } from './vector.ts'

/** CTE names visible at a point of the tree, with their bodies (for `SELECT *` through a CTE). */
export interface Scope {
  readonly ctes: Map<string, unknown>
  readonly parent: Scope | undefined
}

export function cteBody(scope: Scope | undefined, name: string): { found: boolean; body?: unknown } {
  for (let s = scope; s; s = s.parent) if (s.ctes.has(name)) return { found: true, body: s.ctes.get(name) }
  return { found: false }
}

export interface Analysis {
  class: OperationClass
  resources: string[]
  facts: Record<string, FactValue>
  functions: string[]
  searches: VectorSearch[]
  export: boolean
  /** EXECUTE name: resolved against the session's prepared statements by the caller */
  execute?: { name: string; params: unknown[] }
  /** PREPARE name AS body: the body's own analysis */
  prepared?: { name: string; body: Analysis }
  /** DECLARE name CURSOR FOR query: the query's own analysis (what a FETCH or an Execute of it runs) */
  declared?: { name: string; body: Analysis }
}

// Statements that act outside the data model: roles, privileges, code, server configuration, files.
const ADMIN_STATEMENTS = new Set([
  'DoStmt', 'CallStmt', 'CreateFunctionStmt', 'AlterFunctionStmt', 'CreateRoleStmt', 'AlterRoleStmt',
  'AlterRoleSetStmt', 'DropRoleStmt', 'GrantStmt', 'GrantRoleStmt', 'AlterDefaultPrivilegesStmt',
  'ReassignOwnedStmt', 'DropOwnedStmt', 'AlterOwnerStmt', 'AlterSystemStmt', 'LoadStmt', 'CheckPointStmt',
  'VacuumStmt', 'ReindexStmt', 'ClusterStmt', 'CreatedbStmt', 'AlterDatabaseStmt', 'AlterDatabaseSetStmt',
  'AlterDatabaseRefreshCollStmt', 'DropdbStmt', 'CreateTableSpaceStmt', 'DropTableSpaceStmt',
  'AlterTableSpaceOptionsStmt', 'AlterTableMoveAllStmt', 'CreateFdwStmt', 'AlterFdwStmt',
  'CreateForeignServerStmt', 'AlterForeignServerStmt', 'CreateUserMappingStmt', 'AlterUserMappingStmt',
  'DropUserMappingStmt', 'CreatePLangStmt', 'CreateEventTrigStmt', 'AlterEventTrigStmt',
  'CreateSubscriptionStmt', 'AlterSubscriptionStmt', 'DropSubscriptionStmt', 'CreatePublicationStmt',
  'AlterPublicationStmt', 'SecLabelStmt', 'CreatePolicyStmt', 'AlterPolicyStmt', 'CreateAmStmt',
  'CreateCastStmt', 'CreateTransformStmt', 'CreateConversionStmt', 'ImportForeignSchemaStmt',
])

// Data definition inside the data model.
const SCHEMA_STATEMENTS = new Set([
  'CreateStmt', 'AlterTableStmt', 'IndexStmt', 'ViewStmt', 'CreateSchemaStmt', 'CreateSeqStmt',
  'AlterSeqStmt', 'CreateTableAsStmt', 'CreateTrigStmt', 'RuleStmt', 'CreateDomainStmt', 'AlterDomainStmt',
  'CompositeTypeStmt', 'CreateEnumStmt', 'AlterEnumStmt', 'CreateRangeStmt', 'DefineStmt',
  'CreateForeignTableStmt', 'CreateStatsStmt', 'AlterStatsStmt', 'AlterObjectSchemaStmt',
  'AlterObjectDependsStmt', 'AlterCollationStmt', 'CreateExtensionStmt', 'AlterExtensionStmt',
  'AlterExtensionContentsStmt', 'CommentStmt', 'DropStmt', 'RenameStmt', 'AlterTSDictionaryStmt',
  'AlterTSConfigurationStmt', 'AlterOperatorStmt', 'AlterTypeStmt', 'CreateOpClassStmt',
  'CreateOpFamilyStmt', 'AlterOpFamilyStmt',
])

const SESSION_STATEMENTS = new Set([
  'VariableShowStmt', 'TransactionStmt', 'ListenStmt', 'UnlistenStmt', 'DiscardStmt', 'DeallocateStmt',
  'ClosePortalStmt', 'ConstraintsSetStmt', 'DeclareCursorStmt', 'PrepareStmt', 'ExecuteStmt',
])

// Object kinds whose DROP / RENAME acts outside the data model.
const ADMIN_OBJECTS = new Set([
  'OBJECT_FUNCTION', 'OBJECT_PROCEDURE', 'OBJECT_ROUTINE', 'OBJECT_ROLE', 'OBJECT_DATABASE',
  'OBJECT_TABLESPACE', 'OBJECT_FDW', 'OBJECT_FOREIGN_SERVER', 'OBJECT_USER_MAPPING', 'OBJECT_LANGUAGE',
  'OBJECT_EVENT_TRIGGER', 'OBJECT_PUBLICATION', 'OBJECT_SUBSCRIPTION', 'OBJECT_POLICY', 'OBJECT_ACCESS_METHOD',
  'OBJECT_CAST', 'OBJECT_TRANSFORM',
])

// ALTER TABLE sub-commands that change who may see or do what.
const ADMIN_ALTER_TABLE = new Set(['AT_ChangeOwner', 'AT_DisableRowSecurity', 'AT_NoForceRowSecurity'])

/**
 * SET / RESET, vetted by settings.ts like every other way of changing a setting:
 * standard_conforming_strings off or a client-only encoding would make the server read text we
 * call one string as code; role / session_authorization change who the session runs as. Those are
 * admin; DEFAULT, RESET and FROM CURRENT go back to a value the startup checks already vetted.
 */
function settingClass(b: Body, touched: Set<string>): OperationClass {
  // every setting a statement names is a fact (`settings`), checked per session against a scope
  if (typeof b.name === 'string') touched.add(b.name.toLowerCase())
  if (b.kind === 'VAR_RESET_ALL' || b.kind === 'VAR_SET_MULTI' || typeof b.name !== 'string') return 'session'
  const value = b.kind === 'VAR_SET_VALUE' ? settingValue(b.args) : null
  return settingConcern(b.name, value) ? 'admin' : 'session'
}

/** SET's value list as the server flattens it (`a, b`); undefined when one is not a constant */
function settingValue(args: unknown): string | undefined {
  if (!Array.isArray(args) || args.length === 0) return undefined
  const parts: string[] = []
  for (const a of args) {
    const v = constValue(a)
    if (v === undefined || v === null) return undefined
    parts.push(typeof v === 'boolean' ? (v ? 'on' : 'off') : String(v))
  }
  return parts.join(', ')
}

/**
 * set_config(name, value, is_local) is a SET: vetted the same way. A name that is not a constant
 * could be any setting, and a value that is not one could be any value: fail closed.
 */
function setConfigClass(args: unknown, touched: Set<string>): OperationClass {
  const list = Array.isArray(args) ? args : []
  const name = constValue(list[0])
  // a name that is not a constant could be any setting, a scope's too: '*'
  touched.add(typeof name === 'string' ? name.toLowerCase() : '*')
  if (typeof name !== 'string') return 'admin'
  const v = constValue(list[1])
  const value = typeof v === 'string' ? v : typeof v === 'number' ? String(v) : typeof v === 'boolean' ? (v ? 'on' : 'off') : undefined
  return settingConcern(name, value) ? 'admin' : 'session'
}

/**
 * A write to a system catalog: pg_settings' update rule is set_config (`UPDATE pg_settings SET
 * setting = 'off' WHERE name = 'standard_conforming_strings'`), and with a superuser upstream a
 * write to pg_authid or pg_db_role_setting changes roles and their defaults. Any relation named
 * pg_* is taken for one (an unqualified pg_* name finds pg_catalog first), and so is anything in
 * pg_catalog; a user table named pg_something is refused with them, fail closed.
 */
function isCatalogTarget(rv: Body | undefined): boolean {
  if (!rv || typeof rv.relname !== 'string') return false
  return rv.relname.toLowerCase().startsWith('pg_') || String(rv.schemaname ?? '').toLowerCase() === 'pg_catalog'
}

// What every tenant behind the gateway's one upstream role shares, RLS or not: notifications, large
// objects, other sessions' statements. A fact (`shared`) a scope refuses (protocols/postgres/src/scope.ts).
const SHARED_FUNCTIONS = new Set([
  'pg_notify', 'lo_get', 'lo_open', 'loread', 'lo_put', 'lo_from_bytea', 'lo_create', 'lo_creat', 'lo_unlink', 'lowrite',
  'lo_truncate', 'lo_truncate64', 'lo_lseek', 'lo_lseek64', 'lo_tell', 'lo_tell64', 'lo_close', 'lo_export', 'lo_import',
  'pg_stat_get_activity', 'pg_stat_get_backend_activity', 'pg_stat_get_backend_pid', 'pg_blocking_pids', 'pg_stat_statements',
])
const SHARED_RELATIONS = new Set(['pg_stat_activity', 'pg_stat_statements', 'pg_stat_statements_info', 'pg_largeobject', 'pg_largeobject_metadata', 'pg_locks', 'pg_prepared_xacts'])

function isSettingsView(rv: Body | undefined): boolean {
  return typeof rv?.relname === 'string' && rv.relname.toLowerCase() === 'pg_settings'
}

function relationName(rv: Body): string {
  return [rv.catalogname, rv.schemaname, rv.relname].filter(Boolean).join('.')
}

class Analyzer {
  cls: OperationClass = 'session'
  readonly resources = new Set<string>()
  readonly facts: Record<string, FactValue> = {}
  readonly functions = new Set<string>()
  readonly searches: VectorSearch[] = []
  /** settings the statement changes (SET, RESET, set_config, … SET clauses); '*' for any */
  readonly settings = new Set<string>()
  exported = false
  execute: Analysis['execute']
  prepared: Analysis['prepared']
  declared: Analysis['declared']

  raise(c: OperationClass): void {
    this.cls = stricter(this.cls, c)
  }

  /** Walks any part of the tree with the CTE names visible there. */
  walk(value: unknown, scope: Scope | undefined, limit: Limit | undefined): void {
    forEachNode(value, (type, body) => this.node(type, body, scope, limit))
  }

  /** Returns false when it has walked the node's children itself. */
  node(type: string, b: Body, scope: Scope | undefined, limit: Limit | undefined): boolean | void {
    switch (type) {
      case 'RangeVar':
        this.rangeVar(b, scope)
        return false
      case 'FuncCall': {
        const name = lastName(b.funcname)
        if (name !== undefined && name.toLowerCase() === 'set_config') {
          const c = setConfigClass(b.args, this.settings)
          this.raise(c)
          if (c === 'admin') this.functions.add('set_config')
          return
        }
        if (name !== undefined && SHARED_FUNCTIONS.has(name.toLowerCase())) this.shared(name.toLowerCase())
        const fc = name === undefined ? undefined : functionClass(name)
        if (fc) {
          this.raise(fc)
          if (fc === 'admin') this.functions.add(name!.toLowerCase())
        }
        return
      }
      case 'SelectStmt':
        return this.select(b, scope, limit)
      case 'InsertStmt':
        if (isSettingsView(b.relation)) this.settings.add('*')
        this.raise(isCatalogTarget(b.relation) ? 'admin' : 'write')
        return this.withScope(b, scope, limit)
      case 'UpdateStmt':
        // pg_settings' update rule is set_config with the row's name
        if (isSettingsView(b.relation)) this.settings.add('*')
        this.raise(isCatalogTarget(b.relation) ? 'admin' : 'write')
        if (isWhereUnbounded(b.whereClause)) this.facts.unbounded = true
        return this.withScope(b, scope, limit)
      case 'DeleteStmt':
        if (isCatalogTarget(b.relation)) this.raise('admin')
        if (isWhereUnbounded(b.whereClause)) {
          this.raise('bulk-delete')
          this.facts.unbounded = true
        } else this.raise('delete')
        return this.withScope(b, scope, limit)
      case 'MergeStmt': {
        // a MERGE that can delete rows is a delete, whatever else it does
        const deletes = (b.mergeWhenClauses ?? []).some((w: unknown) => nodeOf(w)?.[1].commandType === 'CMD_DELETE')
        this.raise(isCatalogTarget(b.relation) ? 'admin' : deletes ? 'delete' : 'write')
        return this.withScope(b, scope, limit)
      }
      case 'TruncateStmt':
        this.raise('bulk-delete')
        return
      case 'CopyStmt':
        return this.copy(b, scope)
      case 'ExplainStmt':
        return this.explain(b, scope)
      case 'VariableSetStmt':
        this.raise(settingClass(b, this.settings))
        return
      case 'AlterRoleSetStmt':
      case 'AlterDatabaseSetStmt':
      case 'AlterSystemStmt':
        // the grammar gives these their SET without a node wrapper (`setstmt`)
        if (typeof b.setstmt?.name === 'string') this.settings.add(b.setstmt.name.toLowerCase())
        else this.settings.add('*')
        break
      case 'DoStmt':
      case 'CreateFunctionStmt':
      case 'AlterFunctionStmt':
      case 'CreatePLangStmt':
        // code the gateway cannot read (a body that may call set_config with any name): a fact a
        // scope refuses unless it allows code (protocols/postgres/src/scope.ts)
        this.facts.code = true
        break
      case 'ListenStmt':
        this.shared('listen')
        break
      case 'NotifyStmt':
        this.shared('notify')
        this.raise('write')
        return
      case 'LockStmt':
        this.raise('write')
        return
      case 'FetchStmt':
        // rows of a cursor whose query was classified at DECLARE (resolved by name: ctx.cursors)
        this.raise(b.ismove ? 'session' : 'read')
        this.facts.fetch = String(b.portalname ?? '')
        return
      case 'RefreshMatViewStmt':
        this.raise('write')
        return
      case 'DropStmt':
      case 'RenameStmt':
        this.raise(ADMIN_OBJECTS.has(b.removeType ?? b.renameType) ? 'admin' : 'schema-change')
        if ((b.removeType ?? b.renameType) === 'OBJECT_POLICY') this.facts.rowSecurity = true
        if (type === 'DropStmt') this.dropped(b)
        return
      case 'AlterTableCmd':
        if (ADMIN_ALTER_TABLE.has(b.subtype)) {
          this.raise('admin')
          // switching RLS off or changing the owner undoes what a scope relies on
          this.facts.rowSecurity = true
        }
        return
      case 'CreatePolicyStmt':
      case 'AlterPolicyStmt':
        this.facts.rowSecurity = true
        break
      case 'PrepareStmt':
        return this.prepare(b)
      case 'ExecuteStmt':
        this.execute = { name: String(b.name ?? ''), params: b.params ?? [] }
        return
      case 'DeallocateStmt':
        this.facts.deallocate = b.isall ? '*' : String(b.name ?? '')
        this.raise('session')
        return
      case 'DiscardStmt':
        // DISCARD ALL deallocates every prepared statement too
        if (b.target === 'DISCARD_ALL') {
          this.facts.deallocate = '*'
          // and closes every cursor and portal
          this.facts.discard = 'all'
        }
        this.raise('session')
        return
      case 'DeclareCursorStmt':
        // the walk goes on into the query: DECLARE takes its class; the codec keeps its own
        // analysis under the cursor's name once the server has confirmed DECLARE CURSOR
        this.raise('session')
        this.facts.declare = String(b.portalname ?? '')
        // CURSOR_OPT_HOLD: the cursor outlives its transaction
        if ((Number(b.options ?? 0) & 0x20) !== 0) this.facts.declareHold = true
        this.declared = { name: String(b.portalname ?? ''), body: analyzeStatement({ stmt: b.query }) }
        return
      case 'ClosePortalStmt':
        // CLOSE ALL has no name
        this.raise('session')
        this.facts.closeCursor = b.portalname ? String(b.portalname) : '*'
        return
      case 'DefineStmt':
        // CREATE OPERATOR / AGGREGATE name their functions as words: `PROCEDURE = pg_read_file`
        this.raise('schema-change')
        forEachNode(b, (t, n) => {
          if (t === 'String' && typeof n.sval === 'string' && functionClass(n.sval) === 'admin') {
            this.raise('admin')
            this.functions.add(n.sval.toLowerCase())
          }
        })
        return
    }
    if (type.endsWith('Stmt')) {
      if (ADMIN_STATEMENTS.has(type)) this.raise('admin')
      else if (SCHEMA_STATEMENTS.has(type)) this.raise('schema-change')
      else if (SESSION_STATEMENTS.has(type)) this.raise('session')
      // a statement kind this table does not know: fail closed
      else this.raise('admin')
    }
  }

  shared(what: string): void {
    const have = this.facts.shared
    this.facts.shared = have === undefined ? what : String(have).split(',').includes(what) ? have : `${have},${what}`
  }

  rangeVar(rv: Body, scope: Scope | undefined): void {
    // an unqualified name that a visible CTE defines is that CTE, not a table
    if (!rv.schemaname && !rv.catalogname && cteBody(scope, rv.relname).found) return
    if (typeof rv.relname === 'string' && SHARED_RELATIONS.has(rv.relname.toLowerCase())) this.shared(rv.relname.toLowerCase())
    this.resources.add(relationName(rv))
  }

  dropped(b: Body): void {
    if (!['OBJECT_TABLE', 'OBJECT_VIEW', 'OBJECT_MATVIEW', 'OBJECT_FOREIGN_TABLE', 'OBJECT_INDEX', 'OBJECT_SEQUENCE'].includes(b.removeType)) return
    for (const obj of b.objects ?? []) {
      const parts = names(nodeOf(obj)?.[1]?.items)
      if (parts.length > 0) this.resources.add(parts.join('.'))
    }
  }

  /**
   * Statements with a WITH clause: a non-recursive CTE sees the CTEs before it; a recursive one sees
   * all of them; the statement body sees all. So `WITH customers AS (SELECT * FROM customers) …` still
   * names the real table inside the CTE.
   */
  withScope(b: Body, scope: Scope | undefined, limit: Limit | undefined): false {
    const w = b.withClause as Body | undefined
    let inner = scope
    if (w) {
      const ctes = (w.ctes ?? []).map((c: unknown) => nodeOf(c)?.[1]).filter(Boolean) as Body[]
      const own: Scope = { ctes: new Map(), parent: scope }
      if (w.recursive) for (const c of ctes) own.ctes.set(c.ctename, c.ctequery)
      for (const c of ctes) {
        if (!w.recursive) {
          // visible to itself only from the next CTE on
          this.walk(c.ctequery, { ctes: new Map(own.ctes), parent: scope }, limit)
          own.ctes.set(c.ctename, c.ctequery)
        } else this.walk(c.ctequery, own, limit)
      }
      inner = own
    }
    for (const key in b) if (key !== 'withClause' && key !== 'location') this.walk(b[key], inner, limit)
    return false
  }

  select(b: Body, scope: Scope | undefined, outer: Limit | undefined): false {
    this.raise('read')
    // SELECT … INTO creates a table
    if (b.intoClause) this.raise('schema-change')
    // FOR UPDATE / SHARE take row locks that block writers: a write
    if (Array.isArray(b.lockingClause) && b.lockingClause.length > 0) this.raise('write')
    const limit = limitOf(b) ?? outer
    for (const s of vectorSearchesOf(b, limit)) this.searches.push(s)
    return this.withScope(b, scope, limit)
  }

  copy(b: Body, scope: Scope | undefined): void {
    // COPY … (ENCODING 'SJIS'): rows in a client-only encoding, whose second bytes can be the
    // backslash or tab the gateway reads COPY text by — the same concern as client_encoding
    for (const o of b.options ?? []) {
      const d = nodeOf(o)?.[1]
      if (d?.defname !== 'encoding') continue
      const v = constValue(d.arg)
      if (typeof v !== 'string' || settingConcern('client_encoding', v)) this.raise('admin')
    }
    if (b.filename !== undefined || b.is_program) {
      // the server's files or a shell command
      this.raise('admin')
      this.facts.copy = (b.is_from ? 'from-' : 'to-') + (b.is_program ? 'program' : 'file')
    } else if (b.is_from) {
      this.raise('write')
      this.facts.copy = 'from-stdin'
    } else {
      this.raise('read')
      this.facts.copy = 'to-stdout'
      if (b.query && embeddingTargets(b.query, scope)) this.exported = true
    }
    // the walk goes on into the relation, the query and a COPY FROM … WHERE
  }

  explain(b: Body, scope: Scope | undefined): false {
    const analyze = (b.options ?? []).some((o: unknown) => {
      const d = nodeOf(o)?.[1]
      if (!d || d.defname !== 'analyze') return false
      if (d.arg === undefined) return true
      const v = constValue(d.arg)
      return !(v === false || v === 0 || (typeof v === 'string' && ['false', 'off', 'no', '0', 'f', 'n'].includes(v.toLowerCase())))
    })
    const inner = analyzeInner(b.query, scope)
    for (const r of inner.resources) this.resources.add(r)
    for (const f of inner.functions) if (analyze) this.functions.add(f)
    // EXPLAIN ANALYZE EXECUTE p runs p: resolved like EXECUTE
    if (analyze && inner.execute) this.execute = inner.execute
    // EXPLAIN plans without running; EXPLAIN ANALYZE runs the statement (but returns only the plan)
    this.raise(analyze ? inner.cls : 'read')
    for (const s of inner.settings) this.settings.add(s)
    if (inner.facts.code) this.facts.code = true
    if (inner.facts.shared !== undefined) for (const w of String(inner.facts.shared).split(',')) this.shared(w)
    if (analyze && inner.facts.unbounded) this.facts.unbounded = true
    this.facts.explain = analyze ? 'analyze' : 'plan'
    return false
  }

  prepare(b: Body): false {
    this.raise('session')
    const body = analyzeStatement({ stmt: b.query })
    for (const r of body.resources) this.resources.add(r)
    this.facts.prepare = String(b.name ?? '')
    this.facts.preparedClass = body.class
    // what EXECUTE would change is refused at PREPARE already
    if (body.facts.settings !== undefined) for (const s of String(body.facts.settings).split(',')) this.settings.add(s)
    if (body.facts.code) this.facts.code = true
    if (body.facts.shared !== undefined) for (const w of String(body.facts.shared).split(',')) this.shared(w)
    this.prepared = { name: String(b.name ?? ''), body }
    return false
  }

  result(): Analysis {
    if (this.settings.size > 0) this.facts.settings = [...this.settings].join(',')
    const out: Analysis = {
      class: this.cls,
      resources: [...this.resources],
      facts: this.facts,
      functions: [...this.functions],
      searches: this.searches,
      export: this.exported,
    }
    if (this.execute) out.execute = this.execute
    if (this.prepared) out.prepared = this.prepared
    if (this.declared) out.declared = this.declared
    return out
  }
}

function analyzeInner(query: unknown, scope: Scope | undefined): Analyzer {
  const a = new Analyzer()
  a.walk(query, scope, undefined)
  return a
}

/** Class, resources and facts of one statement of a parse. */
export function analyzeStatement(raw: { stmt?: unknown }): Analysis {
  const a = new Analyzer()
  a.walk(raw.stmt, undefined, undefined)
  // what a top-level SELECT returns: embedding columns without a LIMIT leave the store
  const top = nodeOf(raw.stmt)
  if (top && top[0] === 'SelectStmt' && !top[1].intoClause) {
    const limit = limitOf(top[1])
    if (limit?.count === undefined && limit?.param === undefined && embeddingTargets(raw.stmt, undefined)) a.exported = true
  }
  return a.result()
}

export type { VectorFacts }
