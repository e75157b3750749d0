// Blast radius of a Postgres statement: the planner's estimate of the rows it touches and the
// tables it reads or writes, from EXPLAIN (FORMAT JSON, VERBOSE) on the gateway's own upstream
// connection (the catalog's), never on the client's and never with ANALYZE.
//
// Think of the client as the attacker. What goes upstream is
//   BEGIN READ ONLY; SET LOCAL statement_timeout = …; SET LOCAL lock_timeout = …   (our text)
//   Parse 'EXPLAIN (FORMAT JSON, VERBOSE) ' + the client's statement, its parameter types
//   Bind  the client's parameter values and formats, as they came (never spliced into the text)
//   Execute, Sync, then ROLLBACK
// and only for a statement that parses, by itself, as exactly one SELECT (without INTO), INSERT,
// UPDATE, DELETE or MERGE; the text with the prefix is parsed again and must be exactly one EXPLAIN
// of the same kind of statement with our options and no others (ANALYZE can never be slipped in).
// Everything else (several statements, DO, CALL, CREATE TABLE AS, SELECT INTO, EXPLAIN ANALYZE,
// EXECUTE, COPY…) is not estimated: its facts stay unknown. Names resolve on our connection, not
// the client's (its search_path may differ): a plan whose tables have same-named twins in another
// schema is not trusted either (hasTwins). EXPLAIN does not run the statement;
// the planner may still evaluate IMMUTABLE functions on constants while planning — the read-only
// transaction and the statement timeout are what bound that.
import type { Socket } from 'node:net'
import type { BlastRadius, Estimator } from '@portcullis/core/types'
import { parseSync } from '@libpg-query/parser'
import { BufferReader } from './buffer-reader.ts'
import { BufferWriter } from './buffer-writer.ts'
import { Framer } from './framer.ts'
import { parseDataRow, parseNoticeFields } from './backend.ts'
import { serializeQuery } from './frontend.ts'
import type { Catalog } from './catalog.ts'

/** what the estimate can tell rules */
export const POSTGRES_ESTIMATE_FACTS = ['estimatedRows'] as const

const PREFIX = 'EXPLAIN (FORMAT JSON, VERBOSE) '
const DML = new Set(['SelectStmt', 'InsertStmt', 'UpdateStmt', 'DeleteStmt', 'MergeStmt'])
/** the plan is one JSON document; anything bigger is not a plan we want to read */
const MAX_PLAN_BYTES = 4 << 20

export interface BoundParameters {
  /** the Parse's parameter type OIDs (0: the server infers) */
  types: number[]
  /** the Bind's format codes and values, as the client sent them */
  formats: number[]
  values: (Buffer | null)[]
}

function onlyStatement(sql: string): { kind: string; body: Record<string, unknown> } | undefined {
  let tree: { stmts?: { stmt?: Record<string, unknown> }[] }
  try {
    tree = parseSync(sql) as typeof tree
  } catch {
    return undefined
  }
  if (!tree.stmts || tree.stmts.length !== 1) return undefined
  const node = tree.stmts[0]!.stmt
  if (!node) return undefined
  const kinds = Object.keys(node)
  if (kinds.length !== 1) return undefined
  return { kind: kinds[0]!, body: node[kinds[0]!] as Record<string, unknown> }
}

/** the kind of DML statement `sql` is, when it is exactly one that EXPLAIN may plan safely */
export function explainableKind(sql: string): string | undefined {
  const s = onlyStatement(sql)
  if (!s || !DML.has(s.kind)) return undefined
  // SELECT … INTO creates a table: not a read, and not ours to plan
  if (s.kind === 'SelectStmt' && s.body.intoClause) return undefined
  // the text as it will go upstream: one EXPLAIN, of that statement, with our options only
  const e = onlyStatement(PREFIX + sql)
  if (!e || e.kind !== 'ExplainStmt') return undefined
  const query = e.body.query as Record<string, unknown> | undefined
  if (!query || Object.keys(query).length !== 1 || Object.keys(query)[0] !== s.kind) return undefined
  const options = (e.body.options as { DefElem?: { defname?: string } }[] | undefined) ?? []
  const names = options.map(o => o.DefElem?.defname).sort()
  if (names.length !== 2 || names[0] !== 'format' || names[1] !== 'verbose') return undefined
  return s.kind
}

interface PlanNode {
  'Node Type'?: string
  'Plan Rows'?: number
  'Relation Name'?: string
  Schema?: string
  Plans?: PlanNode[]
}

/**
 * Rows: for a statement that changes rows, what its ModifyTable nodes are fed (Postgres shows
 * rows=0 for a ModifyTable without RETURNING); for a read, the top node's rows. Tables: every
 * relation a node scans or modifies, schema-qualified.
 */
export function readPlan(json: string): { estimatedRows: number; tables: string[] } | undefined {
  let doc: unknown
  try {
    doc = JSON.parse(json)
  } catch {
    return undefined
  }
  const top = Array.isArray(doc) ? (doc[0] as { Plan?: PlanNode } | undefined)?.Plan : undefined
  if (!top || typeof top !== 'object') return undefined
  const tables: string[] = []
  let modified = 0
  let modifies = false
  const walk = (n: PlanNode, depth: number) => {
    if (depth > 200) return
    if (typeof n['Relation Name'] === 'string') {
      const name = n.Schema ? `${n.Schema}.${n['Relation Name']}` : n['Relation Name']
      if (!tables.includes(name)) tables.push(name)
    }
    if (n['Node Type'] === 'ModifyTable') {
      modifies = true
      const fed = n.Plans?.[0]?.['Plan Rows']
      if (typeof fed === 'number') modified += fed
    }
    for (const c of n.Plans ?? []) walk(c, depth + 1)
  }
  walk(top, 0)
  const rows = modifies ? modified : top['Plan Rows']
  if (typeof rows !== 'number' || !Number.isFinite(rows)) return undefined
  return { estimatedRows: Math.round(rows), tables }
}

function serializeParseTyped(query: string, types: number[]): Buffer {
  const w = new BufferWriter().cstring('').cstring(query).int16(types.length)
  for (const t of types) w.int32(t)
  return w.message('P')
}

function serializeBind(formats: number[], values: (Buffer | null)[]): Buffer {
  const w = new BufferWriter().cstring('').cstring('').int16(formats.length)
  for (const f of formats) w.int16(f)
  w.int16(values.length)
  for (const v of values) {
    if (v === null) w.int32(-1)
    else w.int32(v.length).bytes(v)
  }
  // the plan comes back as text
  return w.int16(1).int16(0).message('B')
}

const EXECUTE_SYNC = Buffer.concat([new BufferWriter().cstring('').int32(0).message('E'), new BufferWriter().message('S')])

/** one exchange: what was sent is answered up to its ReadyForQuery */
function exchange(socket: Socket, bytes: Buffer, signal: AbortSignal): Promise<{ rows: (string | null)[][]; error?: string; status: string }> {
  return new Promise((resolve, reject) => {
    const framer = new Framer(MAX_PLAN_BYTES)
    const rows: (string | null)[][] = []
    let error: string | undefined
    const cleanup = () => {
      socket.off('data', onData)
      socket.off('close', onClose)
      signal.removeEventListener('abort', onAbort)
    }
    const onData = (chunk: Buffer) => {
      try {
        for (const f of framer.push(chunk)) {
          const r = new BufferReader(f.raw, f.bodyOffset)
          if (f.code === 0x44) rows.push(parseDataRow(r).map(v => (v === null ? null : v.toString('utf8'))))
          else if (f.code === 0x45) error ??= parseNoticeFields(r).M ?? 'error'
          else if (f.code === 0x5a) {
            cleanup()
            resolve({ rows, ...(error !== undefined ? { error } : {}), status: String.fromCharCode(f.raw[f.bodyOffset]!) })
            return
          }
        }
      } catch (err) {
        cleanup()
        reject(err)
      }
    }
    const onClose = () => {
      cleanup()
      reject(new Error('catalog connection closed'))
    }
    // mid-transaction and cut short: the connection is not reusable; the server rolls back
    const onAbort = () => {
      cleanup()
      socket.destroy()
      reject(new Error('estimate aborted'))
    }
    if (signal.aborted) return onAbort()
    socket.on('data', onData)
    socket.on('close', onClose)
    signal.addEventListener('abort', onAbort, { once: true })
    socket.write(bytes)
  })
}

/** EXPLAIN on the catalog's connection, inside a read-only transaction that is always rolled back */
export async function explainEstimate(catalog: Catalog, sql: string, params: BoundParameters | undefined, statementTimeoutMs: number, signal: AbortSignal): Promise<BlastRadius | null> {
  if (!explainableKind(sql)) return null
  const ms = Math.max(1, Math.floor(statementTimeoutMs))
  return catalog.exclusive(async socket => {
    const begin = await exchange(socket, serializeQuery(`BEGIN READ ONLY; SET LOCAL statement_timeout = '${ms}ms'; SET LOCAL lock_timeout = '${ms}ms'`), signal)
    // never EXPLAIN outside the read-only transaction we opened
    if (begin.error !== undefined || begin.status !== 'T') {
      if (begin.status !== 'I') await exchange(socket, serializeQuery('ROLLBACK'), signal)
      return null
    }
    let plan: (string | null)[][] = []
    let failed = false
    try {
      const p = params ?? { types: [], formats: [], values: [] }
      const r = await exchange(socket, Buffer.concat([serializeParseTyped(PREFIX + sql, p.types), serializeBind(p.formats, p.values), EXECUTE_SYNC]), signal)
      plan = r.rows
      failed = r.error !== undefined
    } finally {
      if (!signal.aborted && !socket.destroyed) await exchange(socket, serializeQuery('ROLLBACK'), signal)
    }
    if (failed) return null
    const text = plan.map(row => row[0] ?? '').join('\n')
    const read = readPlan(text)
    return read ? { estimatedRows: read.estimatedRows, tables: read.tables, source: 'explain' } : null
  }).then(async e => (e && (await hasTwins(catalog, e.tables ?? [], signal)) ? null : e))
}

/** E'' literals read the same whatever standard_conforming_strings says */
const literal = (v: string) => `E'${v.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`

/**
 * Whether a table of the plan has a same-named twin in another schema. The plan's tables are what
 * the names resolve to on the gateway's connection; the client's session may resolve them
 * otherwise (search_path set in SQL, at startup, by a function it calls; "$user" after SET ROLE).
 * With no twin there is nothing else they could resolve to; with one, the estimate may be of the
 * wrong table: unknown. (A temporary table of the session shadows too, but what it deletes from
 * there is its own.)
 */
async function hasTwins(catalog: Catalog, tables: string[], signal: AbortSignal): Promise<boolean> {
  const names = [...new Set(tables.map(t => t.slice(t.lastIndexOf('.') + 1)))]
  if (names.length === 0) return false
  return catalog.exclusive(async socket => {
    const r = await exchange(
      socket,
      serializeQuery(
        `SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace ` +
          `WHERE c.relname = ANY(ARRAY[${names.map(literal).join(',')}]::text[]) AND c.relkind IN ('r', 'p', 'v', 'm', 'f') ` +
          `AND n.nspname NOT LIKE 'pg\\_temp\\_%' ESCAPE '\\' AND n.nspname NOT LIKE 'pg\\_toast%' ESCAPE '\\' GROUP BY c.relname HAVING count(*) > 1`,
      ),
      signal,
    )
    return r.error !== undefined || r.rows.length > 0
  })
}

export function postgresEstimator(catalog: Catalog, sql: string, params: BoundParameters | undefined, statementTimeoutMs: number): Estimator {
  return {
    facts: POSTGRES_ESTIMATE_FACTS,
    run: signal => explainEstimate(catalog, sql, params, statementTimeoutMs, signal).catch(() => null),
  }
}

/** an estimator that knows there is nothing to be had: its facts are unknown (stricter reading) */
export function unknownEstimator(facts: readonly string[]): Estimator {
  return { facts, run: async () => null }
}
