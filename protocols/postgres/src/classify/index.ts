// SQL classification for the Postgres codec and `portcullis explain`: text → Operation, through the
// real Postgres grammar (libpg_query). Parses cost ~70 µs; a hit in the text cache costs a Map lookup.
import type { FactValue, Operation, StatementInfo } from '@portcullis/core/types'
import { analyzeStatement } from './analyze.ts'
import { stricter } from './classes.ts'
import { buildOperation, deepFreeze, mergeFacts, statementInfo, textFingerprint } from './operation.ts'
import { fingerprint, loadParser, parserLoaded, parseSql } from './parser.ts'
import { redact, sliceBytes, statementText } from './text.ts'
import { constValue } from './tree.ts'

export interface ClassifyContext {
  /** SQL-level PREPARE name → Operation of its body, tracked per session by the codec */
  prepared?: Map<string, Operation>
}

/** Loads the libpg_query WASM module once; later calls resolve at once. */
export function loadClassifier(): Promise<void> {
  return loadParser()
}

/** One statement of a compiled text; `execute` when it is an EXECUTE resolved per session. */
interface Part {
  info: StatementInfo
  execute?: { name: string; params: unknown[] }
}

/** What the cache keeps for one text: the finished Operation, or the parts when it needs the session. */
interface Compiled {
  op?: Operation
  parts: Part[]
  fingerprint: string
  /** used since it last came round in the eviction order (second-chance LRU) */
  recent: boolean
}

const DEFAULT_CACHE_ENTRIES = 4096
// texts longer than this are classified every time: the cache's memory stays bounded
const MAX_CACHED_TEXT = 16 * 1024

let cacheMax = DEFAULT_CACHE_ENTRIES
const cache = new Map<string, Compiled>()

/** Sets the cache bound (entries); trims at once. */
export function setClassifierCacheSize(entries: number): void {
  cacheMax = Math.max(0, Math.floor(entries))
  trim()
}

export function classifierCacheSize(): number {
  return cache.size
}

// Second-chance LRU: a hit only sets `recent` (moving a Map key on every hit costs microseconds);
// eviction walks from the oldest insertion, giving recently used entries another round at the end.
function trim(): void {
  for (const [key, entry] of cache) {
    if (cache.size <= cacheMax) break
    cache.delete(key)
    if (entry.recent && cacheMax > 0) {
      entry.recent = false
      cache.set(key, entry)
    }
  }
}

/**
 * Classifies SQL text (one or several statements). Synchronous: call loadClassifier() first. The
 * result is frozen; the same text gives the same object while it stays in the cache (except for
 * EXECUTE, resolved against `ctx.prepared` each time).
 */
export function classifySql(sql: string, ctx?: ClassifyContext): Operation {
  let compiled = cache.get(sql)
  if (compiled !== undefined) {
    compiled.recent = true
  } else {
    if (!parserLoaded()) throw new Error('SQL classifier not loaded: await loadClassifier() first')
    compiled = compile(sql)
    if (sql.length <= MAX_CACHED_TEXT && cacheMax > 0) {
      cache.set(sql, compiled)
      if (cache.size > cacheMax) trim()
    }
  }
  return compiled.op ?? resolve(compiled, ctx)
}

/** Loads the parser, then classifies (for the CLI). */
export async function explainSql(sql: string): Promise<Operation> {
  await loadClassifier()
  return classifySql(sql)
}

/**
 * The operation with a LIMIT $n bound at Bind: statements whose top-k was that parameter get `topK`.
 * The codec calls it with the parameter's integer value when `op.facts.topKParam` is set.
 */
export function withTopK(op: Operation, topK: number): Operation {
  const statements = op.statements.map(s => {
    if (s.facts?.topKParam === undefined || !s.vector?.search || s.vector.topK !== undefined) return s
    return { ...s, vector: { ...s.vector, topK }, facts: { ...s.facts, topK } }
  })
  const rebuilt = buildOperation(statements, op.fingerprint, op.error)
  return rebuilt
}

function compile(sql: string): Compiled {
  if (sql.trim() === '') return { op: buildOperation([], textFingerprint(''), undefined), parts: [], fingerprint: '', recent: false }
  let stmts
  try {
    stmts = parseSql(sql).stmts
  } catch (err) {
    return { op: failed(sql, parserMessage(err)), parts: [], fingerprint: '', recent: false }
  }
  const fp = safeFingerprint(sql)
  const parts: Part[] = []
  for (const raw of stmts) {
    const start = raw.stmt_location ?? 0
    const text = sliceBytes(sql, start, raw.stmt_len ? start + raw.stmt_len : undefined)
    const analysis = analyzeStatement(raw)
    const part: Part = { info: deepFreeze(statementInfo(analysis, safeStatementText(text))) }
    if (analysis.execute) part.execute = analysis.execute
    parts.push(part)
  }
  const compiled: Compiled = { parts, fingerprint: fp, recent: false }
  if (!parts.some(p => p.execute)) compiled.op = buildOperation(parts.map(p => p.info), fp)
  return compiled
}

/** EXECUTE name takes the class, resources and facts of the session's prepared body. */
function resolve(compiled: Compiled, ctx: ClassifyContext | undefined): Operation {
  const infos: StatementInfo[] = []
  let error: string | undefined
  for (const part of compiled.parts) {
    if (!part.execute) {
      infos.push(part.info)
      continue
    }
    const { name, params } = part.execute
    const prepared = ctx?.prepared?.get(name)
    if (!prepared) {
      // fail closed: a body we never saw could be anything
      error ??= `prepared statement "${name}" does not exist`
      infos.push(part.info)
      continue
    }
    infos.push(executedInfo(part.info, name, params, prepared))
    if (prepared.error !== undefined) error ??= prepared.error
  }
  return buildOperation(infos, compiled.fingerprint, error)
}

function executedInfo(own: StatementInfo, name: string, params: unknown[], prepared: Operation): StatementInfo {
  const facts: Record<string, FactValue> = {}
  mergeFacts(facts, prepared.facts)
  // admin functions in the EXECUTE arguments themselves
  mergeFacts(facts, own.facts)
  facts.execute = name
  const info: StatementInfo = {
    class: stricter(own.class, prepared.class),
    resources: [...prepared.resources],
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

// `at or near "<token>"`: the token is shown when it is a word, not when it is a value
const NEAR = /at or near "((?:[^"]|"")*)"/
const LITERAL_START = /^(?:[bBxXeEnN]?'|[uU]&'|\$|[0-9.])/

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
