// SQL classification for the Postgres codec and `portcullis explain`: text → Operation, through the
// real Postgres grammar (libpg_query). A miss parses (WASM); a hit in the text cache is a Map lookup.
import type { FactValue, Operation, StatementInfo } from '@portcullis/core/types'
import { withAuditFieldsOf } from '@portcullis/core/audit/operation-json'
import { analyzeStatement } from './analyze.ts'
import { stricter } from './classes.ts'
import { buildOperation, deepFreeze, mergeFacts, statementInfo, textFingerprint } from './operation.ts'
import { fingerprint, loadParser, parserLoaded, parseSql, type Node } from './parser.ts'
import { redact, sliceBytes, statementText } from './text.ts'
import { constValue } from './tree.ts'
import { borrowerOf, keepLineage, keepLineageOf, keptLineage, lineageSource, type StatementLineage } from './lineage.ts'
import { scanSkeleton, type Skeleton } from './lexer.ts'
import { everyLiteralIsConstant, instrument, type Reads } from './literal.ts'
import { estimateBytes } from './weight.ts'
import { ClassifierCaches, type SkeletonEntry, type SkeletonLookup } from './cache.ts'

const caches = new ClassifierCaches()

/** Skeleton hits so far, entries held and their estimated heap against the budget (cache.ts). */
export function classifierCacheStats(): ReturnType<ClassifierCaches['stats']> {
  return caches.stats()
}

/**
 * Sets the byte budget of both caches together (estimated heap, weight.ts; default 32 MiB); trims
 * at once. An entry heavier than the whole budget is not kept (classified every time).
 */
export function setClassifierCacheBytes(bytes: number): void {
  caches.setBytes(bytes)
}

/** Sets the cache bound (entries); trims at once. */
export function setClassifierCacheSize(entries: number): void {
  caches.setSize(entries)
}

export function classifierCacheSize(): number {
  return caches.size()
}

/** Empties both caches (tests compare cached answers with fresh ones). */
export function clearClassifierCache(): void {
  caches.clear()
}

export interface ClassifyContext {
  /** SQL-level PREPARE name → Operation of its body, tracked per session by the codec */
  prepared?: Map<string, Operation>
  /**
   * Cursor and portal name → the Operation of its query, tracked per session by the codec (one
   * namespace, like Postgres): an entry appears when the server confirms DECLARE CURSOR (the
   * cursor's query, statementBody of the DECLARE) or BindComplete (the bound statement's
   * Operation), and goes at CLOSE / CloseComplete / DISCARD ALL / the end of its transaction.
   * FETCH and MOVE take the class, resources and facts of the query they read.
   */
  cursors?: ReadonlyMap<string, Operation>
}

/** Loads the libpg_query WASM module once; later calls resolve at once. */
export function loadClassifier(): Promise<void> {
  return loadParser()
}

/** One statement of a compiled text; `execute` when it is an EXECUTE resolved per session. */
interface Part {
  info: StatementInfo
  execute?: { name: string; params: unknown[] }
  /** PREPARE name AS body: the body's Operation */
  prepare?: { name: string; body: Operation }
  /** DEALLOCATE name ('*' for ALL) */
  deallocate?: string
  /** FETCH / MOVE name: resolved against ctx.cursors */
  fetch?: string
  /** DECLARE name CURSOR FOR query: the query's Operation */
  declare?: { name: string; body: Operation }
}

// PREPARE operations → the Operations of their bodies, by name (see preparedStatements); and the
// PREPARE statement's own StatementInfo → its body, for a codec that keeps a copy of the operation
// around that statement
const bodies = new WeakMap<Operation, ReadonlyMap<string, Operation>>()
const bodyOfStatement = new WeakMap<StatementInfo, Operation>()

/**
 * The bodies of the `PREPARE name AS …` statements in an operation, name → Operation of the body:
 * what the codec keeps in ClassifyContext.prepared once the server has accepted the PREPARE.
 */
export function preparedStatements(op: Operation): ReadonlyMap<string, Operation> {
  return bodies.get(op) ?? EMPTY
}
const EMPTY: ReadonlyMap<string, Operation> = new Map()

// operations resolved against a session's statements and cursors (EXECUTE, FETCH, MOVE)
const perSession = new WeakSet<Operation>()

/**
 * True when the operation was resolved against ClassifyContext (it has an EXECUTE, FETCH or MOVE):
 * a codec that keeps it (a protocol-prepared `EXECUTE p`) classifies the text again when it runs,
 * since what the name holds may have changed in between.
 */
export function dependsOnSession(op: Operation): boolean {
  return perSession.has(op)
}

/**
 * The Operation a statement leaves behind under a name: the body of `PREPARE name AS body`, or the
 * query of `DECLARE name CURSOR FOR query`; undefined for any other statement. One per statement,
 * so `PREPARE s AS DELETE …; PREPARE s AS SELECT 1` keeps each body apart (the server refuses the
 * second: the codec stores the first, when its CommandComplete arrives).
 */
export function statementBody(st: StatementInfo): Operation | undefined {
  return bodyOfStatement.get(st)
}

/** What the cache keeps for one text: the finished Operation, or the parts when it needs the session. */
export interface Compiled {
  op?: Operation
  parts: Part[]
  /** what column lineage needs of the text (classify/lineage.ts), kept on every Operation of it */
  lineage?: StatementLineage
  fingerprint: string
  /** used since it last came round in the eviction order (second-chance LRU) */
  recent: boolean
  /** estimated heap of the entry (weight.ts), its key included: set when cached */
  bytes?: number
}

/**
 * Classifies SQL text (one or several statements). Synchronous: call loadClassifier() first. The
 * result is frozen; the same text gives the same object while it stays in the cache (except for
 * EXECUTE, resolved against `ctx.prepared` each time). A text that differs from a cached one only
 * in constants the analysis never read gets that text's classification too (lexer.ts, literal.ts),
 * as an object of its own whose column lineage is its own text's (see borrowed()); `opts.exact`
 * also parses a text whose PREPARE or DECLARE body keeps a tree.
 */
export function classifySql(sql: string, ctx?: ClassifyContext, opts?: { exact?: boolean }): Operation {
  let compiled = caches.text(sql)
  if (compiled !== undefined) return compiled.op ?? resolve(compiled, ctx)
  if (!parserLoaded()) throw new Error('SQL classifier not loaded: await loadClassifier() first')
  const cacheable = caches.cacheable(sql)
  const { known, skeleton } = cacheable ? caches.findSkeleton(sql) : NOT_FOUND
  if (known) {
    // Column lineage reads the kept tree of a statement later, at its RowDescription
    // (json_build_object keys, among others, are constants), also for a session that had no
    // column rule when it prepared the statement and has one after a reload: the text gets an
    // Operation of its own that borrows the skeleton's tree only while no analysis has read a
    // constant of it, and parses its own text once one has (lineage.ts)
    if (known.op && known.lineage) {
      caches.countSkeletonHit()
      return borrowed(known.op, known.lineage, known.reads!, sql)
    }
    // `exact` (a session whose mask plan has column rules): a text that prepares or declares a
    // body, whose tree the body keeps, is parsed on its own
    if (known.op && opts?.exact !== true) {
      caches.countSkeletonHit()
      return known.op
    }
  }
  // watch the analysis only while the skeleton's fate is open
  const watch = skeleton !== undefined && known === undefined ? skeleton : undefined
  const outcome = compile(sql, watch)
  compiled = outcome.compiled
  if (cacheable) {
    // the key string and the entry: what the Map keeps for this text (weight.ts), and the parse
    // trees a PREPARE or DECLARE body keeps for its lineage (in lineage.ts's WeakMap, not reachable
    // from the entry's properties; a PREPARE's body tree is not in the text's own lineage)
    const c = compiled
    caches.keepText(sql, c, quietly(outcome.reads, () => estimateBytes([sql, c, c.parts.map(p => p.prepare && keptLineage(p.prepare.body)), c.parts.map(p => p.declare && keptLineage(p.declare.body))])))
  }
  if (watch) {
    const lendable = compiled.lineage !== undefined && !compiled.parts.some(p => p.prepare || p.declare)
    const entry: SkeletonEntry = outcome.literalFree
      ? { op: compiled.op!, reads: outcome.reads, recent: false, bytes: 0, key: watch.key, ...(lendable ? { lineage: compiled.lineage } : {}) }
      : { op: null, reads: undefined, recent: false, bytes: 0, key: watch.key }
    // its Operation and lineage counted again although the text's entry holds them too: the text's
    // entry may go first (an over-count, never under). The text's estimate covers them (and its
    // parts and text besides) when it was made: one walk a miss, not two
    const shared = compiled.bytes !== undefined && (entry.lineage === undefined || entry.lineage === compiled.lineage)
    caches.keepSkeleton(watch, entry, entry.op ? (shared ? compiled.bytes! : quietly(outcome.reads, () => estimateBytes([entry.op, entry.lineage]))) : 0)
  }
  caches.trimIfOver()
  return compiled.op ?? resolve(compiled, ctx)
}

const NOT_FOUND: SkeletonLookup = Object.freeze({ known: undefined, skeleton: undefined })

/**
 * Runs an estimate (weight.ts) without it counting as the analysis reading a constant: the walk
 * reads no instrumented node through its traps (it skips Proxies and getters), and `reads` is put
 * back as it was in case anything does — the skeleton's fate is the analysis's alone.
 */
function quietly(reads: Reads | undefined, estimate: () => number): number {
  const was = reads?.value
  try {
    return estimate()
  } finally {
    if (reads !== undefined) reads.value = was!
  }
}

/**
 * The skeleton's Operation as this text's own object (the same facts: the analysis read none of the
 * constants), whose lineage is borrowed from the skeleton's first text until a read of a constant
 * says this text's own parse is needed.
 */
function borrowed(op: Operation, lineage: StatementLineage, reads: Reads, sql: string): Operation {
  // the same class, resources, fingerprint and statement: one serialization for the audit lines.
  // Both links are properties of the copy, not WeakMap entries (lineage.ts borrowerOf)
  return Object.freeze(withAuditFieldsOf(borrowerOf({ ...op }, lineage, reads, () => compile(sql).compiled.lineage), op))
}

/** Loads the parser, then classifies (for the CLI). */
export async function explainSql(sql: string): Promise<Operation> {
  await loadClassifier()
  return classifySql(sql)
}

/**
 * The operation with a LIMIT $n bound at Bind: statements whose top-k was that parameter get `topK`.
 * The codec calls it when `op.facts.topKParam` is set, with that parameter's value as an integer
 * (a NULL parameter means no limit: leave the operation as it is). Anything but a finite number ≥ 0
 * leaves it unbounded.
 */
export function withTopK(op: Operation, topK: number): Operation {
  if (!Number.isFinite(topK) || topK < 0 || op.facts.topKParam === undefined) return op
  const statements = op.statements.map(s => {
    if (s.facts?.topKParam === undefined || !s.vector?.search || s.vector.topK !== undefined) return s
    return { ...s, vector: { ...s.vector, topK }, facts: { ...s.facts, topK } }
  })
  const bound = buildOperation(statements, op.fingerprint, op.error)
  keepLineageOf(bound, op)
  return bound
}

/**
 * `literalFree`: with a skeleton to watch, whether the Operation holds for every text of that
 * skeleton — it parsed, every replaced constant is an A_Const, the analysis read none of them (nor
 * any location), and it needs no session (EXECUTE arguments are read at resolve time).
 */
function compile(sql: string, skeleton?: Skeleton): { compiled: Compiled; literalFree: boolean; reads?: Reads } {
  const done = (compiled: Compiled, literalFree = false, reads?: Reads) => ({ compiled, literalFree, reads })
  if (sql.trim() === '') return done({ op: buildOperation([], textFingerprint(''), undefined), parts: [], fingerprint: '', recent: false })
  // the parser reads a C string: a NUL would hide everything after it from us, not from the server
  if (sql.includes('\0')) return done({ op: failed(sql.replaceAll('\0', ' '), 'SQL text contains a NUL byte'), parts: [], fingerprint: '', recent: false })
  let stmts
  try {
    stmts = parseSql(sql).stmts
  } catch (err) {
    return done({ op: failed(sql, parserMessage(err)), parts: [], fingerprint: '', recent: false })
  }
  const fp = safeFingerprint(sql)
  const parts: Part[] = []
  const lineage: StatementLineage = { results: [], relations: [], cursors: new Map(), writes: [] }
  const reads: Reads = { value: false }
  let literalFree = skeleton !== undefined
  const constants: number[] = []
  for (const raw of stmts) {
    const start = raw.stmt_location ?? 0
    const original = sliceBytes(sql, start, raw.stmt_len ? start + raw.stmt_len : undefined)
    const text = safeStatementText(original)
    if (literalFree) {
      const found = instrument(raw.stmt, reads)
      if (found) constants.push(...found)
      else literalFree = false
    }
    let analysis
    try {
      analysis = analyzeStatement(raw)
    } catch {
      // a tree too deep to walk: nothing we cannot see through goes through
      return done({ op: failed(sql, 'SQL statement too complex to classify'), parts: [], fingerprint: '', recent: false })
    }
    // what column lineage needs (classify/lineage.ts); the tree was walkable: analyzeStatement saw it all
    const source = lineageSource(raw.stmt)
    if (source.result) lineage.results.push('execute' in source.result ? { ...source.result, at: parts.length } : source.result)
    for (const r of source.relations) if (!lineage.relations.includes(r)) lineage.relations.push(r)
    if (source.cursor !== undefined) lineage.cursors.set(source.cursor.name, source.cursor.tree)
    if (source.write) lineage.writes.push(source.write)
    const part: Part = { info: deepFreeze(statementInfo(analysis, text)) }
    if (analysis.execute) part.execute = analysis.execute
    if (analysis.prepared) {
      // its own fingerprint: EXECUTEs of different bodies must not share one (approval windows)
      const body = buildOperation([statementInfo(analysis.prepared.body, text)], safeFingerprint(original))
      part.prepare = { name: analysis.prepared.name, body }
      ;(lineage.prepares ??= []).push({ name: analysis.prepared.name, at: parts.length, body })
      bodyOfStatement.set(part.info, body)
      const query = (raw.stmt as { PrepareStmt?: { query?: Node } } | undefined)?.PrepareStmt?.query
      const bodySource = lineageSource(query)
      keepLineage(body, { results: bodySource.result ? [bodySource.result] : [], relations: bodySource.relations, cursors: new Map(), writes: bodySource.write ? [bodySource.write] : [] })
    }
    if (typeof analysis.facts.deallocate === 'string') part.deallocate = analysis.facts.deallocate
    if (analysis.declared) {
      const body = buildOperation([statementInfo(analysis.declared.body, text)], safeFingerprint(original))
      part.declare = { name: analysis.declared.name, body }
      bodyOfStatement.set(part.info, body)
      // the session keeps the body as the cursor's Operation: FETCH and Execute of it mask by its lineage
      const bodySource = lineageSource(source.cursor?.tree)
      keepLineage(body, { results: bodySource.result ? [bodySource.result] : [], relations: bodySource.relations, cursors: new Map(), writes: bodySource.write ? [bodySource.write] : [] })
    }
    if (typeof analysis.facts.fetch === 'string') part.fetch = analysis.facts.fetch
    parts.push(part)
  }
  const compiled: Compiled = { parts, fingerprint: fp, recent: false, lineage }
  if (!parts.some(p => p.execute || p.fetch !== undefined)) {
    compiled.op = withBodies(buildOperation(parts.map(p => p.info), fp), parts)
    keepLineage(compiled.op, lineage)
  }
  literalFree &&=
    compiled.op !== undefined &&
    !reads.value &&
    everyLiteralIsConstant(sql, skeleton!.literals, skeleton!.minus, constants) &&
    // normalize replaces the constants it knows of, not all (a COPY … WHERE keeps its own): a
    // statement text with a constant left in it is this text's, not the skeleton's
    parts.every(p => scanSkeleton(p.info.statement)?.literalCount === 0)
  return done(compiled, literalFree, reads)
}

function withBodies(op: Operation, parts: Part[]): Operation {
  const prepares = parts.filter(p => p.prepare)
  if (prepares.length > 0) bodies.set(op, new Map(prepares.map(p => [p.prepare!.name, p.prepare!.body])))
  return op
}

/** EXECUTE name takes the class, resources and facts of the session's prepared body. */
function resolve(compiled: Compiled, ctx: ClassifyContext | undefined): Operation {
  const infos: StatementInfo[] = []
  let error: string | undefined
  // PREPARE and DEALLOCATE earlier in the same text (`PREPARE p AS …; EXECUTE p`); null: deallocated
  const local = new Map<string, Operation | null>()
  let all = false
  const executed: string[] = []
  const lookup = (name: string): Operation | undefined => {
    const here = local.get(name)
    if (here !== undefined) return here ?? undefined
    if (all) return undefined
    const stored = ctx?.prepared?.get(name)
    return stored && storedBody(stored, name)
  }
  // DECLARE and CLOSE earlier in the same text; null: closed
  const localCursors = new Map<string, Operation | null>()
  let allCursors = false
  const cursor = (name: string): Operation | undefined => {
    const here = localCursors.get(name)
    if (here !== undefined) return here ?? undefined
    return allCursors ? undefined : ctx?.cursors?.get(name)
  }
  for (const part of compiled.parts) {
    if (part.declare) localCursors.set(part.declare.name, part.declare.body)
    const closed = part.info.facts?.closeCursor
    if (closed === '*' || part.info.facts?.discard === 'all') {
      localCursors.clear()
      allCursors = true
    } else if (typeof closed === 'string') localCursors.set(closed, null)
    if (part.fetch !== undefined) {
      const query = cursor(part.fetch)
      // a cursor the session does not know: the server answers 34000 (nothing runs)
      infos.push(query ? fetchedInfo(part.info, part.fetch, query) : part.info)
      continue
    }
    if (part.prepare) local.set(part.prepare.name, part.prepare.body)
    if (part.deallocate === '*') {
      local.clear()
      all = true
    } else if (part.deallocate !== undefined) local.set(part.deallocate, null)
    if (!part.execute) {
      infos.push(part.info)
      continue
    }
    const { name, params } = part.execute
    const prepared = lookup(name)
    if (!prepared) {
      // fail closed: a body we never saw could be anything
      error ??= `prepared statement "${name}" does not exist`
      infos.push(part.info)
      continue
    }
    infos.push(executedInfo(part.info, name, params, prepared))
    executed.push(prepared.fingerprint)
    if (prepared.error !== undefined) error ??= prepared.error
  }
  // `EXECUTE p` is as many shapes as p has bodies: the fingerprint covers the bodies run
  const fp = executed.length > 0 ? textFingerprint([compiled.fingerprint, ...executed].join('|')) : compiled.fingerprint
  const op = withBodies(buildOperation(infos, fp, error), compiled.parts)
  perSession.add(op)
  if (compiled.lineage) keepLineage(op, compiled.lineage)
  return op
}

/**
 * What the session stored under a name: the body's Operation (preparedStatements), or the PREPARE
 * operation itself, or a copy around its PREPARE statement. The last two resolve to the body, never
 * to the PREPARE's own class ('session').
 */
function storedBody(stored: Operation, name: string): Operation {
  const direct = bodies.get(stored)?.get(name)
  if (direct) return direct
  for (const st of stored.statements) {
    if (st.facts?.prepare !== name) continue
    const body = bodyOfStatement.get(st)
    if (body) return body
    // a PREPARE we did not classify: its recorded body class, or the strictest when there is none
    const cls = st.facts.preparedClass
    return { ...stored, class: typeof cls === 'string' ? (cls as Operation['class']) : 'admin' }
  }
  return stored
}

/** FETCH / MOVE name: the cursor's query (its resources and facts); FETCH reads, MOVE reads nothing */
function fetchedInfo(own: StatementInfo, name: string, query: Operation): StatementInfo {
  const facts: Record<string, FactValue> = {}
  mergeFacts(facts, query.facts)
  mergeFacts(facts, own.facts)
  facts.fetch = name
  return {
    class: stricter(own.class, own.class === 'session' ? 'session' : query.class),
    resources: [...new Set([...own.resources, ...query.resources])],
    statement: own.statement,
    facts,
  }
}

function executedInfo(own: StatementInfo, name: string, params: unknown[], prepared: Operation): StatementInfo {
  const facts: Record<string, FactValue> = {}
  mergeFacts(facts, prepared.facts)
  // admin functions in the EXECUTE arguments themselves
  mergeFacts(facts, own.facts)
  facts.execute = name
  const info: StatementInfo = {
    class: stricter(own.class, prepared.class),
    // CREATE TABLE x AS EXECUTE p names x as well
    resources: [...new Set([...own.resources, ...prepared.resources])],
    statement: own.statement,
    facts,
  }
  const vector = prepared.statements.find(s => s.vector)?.vector
  if (vector) {
    info.vector = { ...vector }
    // LIMIT $n of the body, given as a constant argument here
    const n = prepared.facts.topKParam
    if (typeof n === 'number' && vector.search && vector.topK === undefined) {
      const v = constValue(params[n - 1])
      const k = typeof v === 'number' ? v : typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : undefined
      if (k !== undefined) {
        info.vector.topK = k
        facts.topK = k
      }
    }
  }
  return info
}

function failed(sql: string, message: string): Operation {
  let text = ''
  try {
    text = redact(sql, true)
  } catch {
    // not even tokens: show nothing of it
  }
  return buildOperation([{ class: 'admin', resources: [], statement: text }], textFingerprint(text), message)
}

// `at or near "<token>"`: the token is shown when it is a word, not when it is a value or quoted
// (the token is not escaped: a quoted name shows as ""name"", so take everything to the last quote)
const NEAR = /at or near "(.*)"/s
const LITERAL_START = /^(?:[bBxXeEnN]?'|[uU]&['"]|\$|"|[0-9.])/

/** The parser's message, minus the text of a literal it may quote (possible PII or a secret). */
function parserMessage(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err)
  const near = NEAR.exec(message)
  if (!near || !LITERAL_START.test(near[1]!)) return message
  const position = (err as { sqlDetails?: { cursorPosition?: number } }).sqlDetails?.cursorPosition
  return message.replace(NEAR, position === undefined ? 'at or near a literal' : `at a literal at position ${position + 1}`)
}

function safeFingerprint(sql: string): string {
  try {
    return fingerprint(sql)
  } catch {
    return textFingerprint(sql)
  }
}

function safeStatementText(text: string): string {
  try {
    return statementText(text)
  } catch {
    return redact(text, true)
  }
}
