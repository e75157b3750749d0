// From a parse to the Operation the policy sees: one StatementInfo per statement, then the request's
// class (strictest), resources (union), normalized text and merged facts.
import { createHash } from 'node:crypto'
import type { FactValue, Operation, StatementInfo, VectorFacts } from '@portcullis/core/types'
import { stricter } from './classes.ts'
import type { Analysis } from './analyze.ts'

/** Merge rule for facts: numbers take the max, booleans or, strings a comma list of distinct values. */
export function mergeFacts(into: Record<string, FactValue>, from: Record<string, FactValue> | undefined): void {
  if (!from) return
  for (const key in from) {
    const v = from[key]!
    const have = into[key]
    if (have === undefined) into[key] = v
    else if (typeof v === 'number' && typeof have === 'number') into[key] = Math.max(have, v)
    else if (typeof v === 'boolean' && typeof have === 'boolean') into[key] = have || v
    else {
      const list = String(have).split(',')
      for (const part of String(v).split(',')) if (!list.includes(part)) list.push(part)
      into[key] = list.join(',')
    }
  }
}

/** The StatementInfo of one analysed statement. */
export function statementInfo(a: Analysis, text: string): StatementInfo {
  const facts: Record<string, FactValue> = { ...a.facts }
  if (a.functions.length > 0) facts.functions = a.functions.join(',')
  const info: StatementInfo = { class: a.class, resources: a.resources, statement: text }
  if (a.searches.length > 0 || a.export) {
    const vector: VectorFacts = {}
    if (a.searches.length > 0) {
      vector.search = true
      vector.operator = a.searches[0]!.operator
      facts.vectorSearch = true
      // one unbounded search makes the statement's top-k unbounded
      if (a.searches.every(s => s.topK !== undefined)) {
        vector.topK = Math.max(...a.searches.map(s => s.topK!))
        facts.topK = vector.topK
      }
      const param = a.searches.find(s => s.topKParam !== undefined)?.topKParam
      if (param !== undefined) facts.topKParam = param
    }
    if (a.export) {
      vector.export = true
      facts.embeddingExport = true
    }
    info.vector = vector
  }
  if (Object.keys(facts).length > 0) info.facts = facts
  return info
}

export function buildOperation(statements: StatementInfo[], fingerprint: string, error?: string): Operation {
  let cls: Operation['class'] = 'session'
  const resources: string[] = []
  const facts: Record<string, FactValue> = {}
  for (const s of statements) {
    cls = stricter(cls, s.class)
    for (const r of s.resources) if (!resources.includes(r)) resources.push(r)
    mergeFacts(facts, s.facts)
  }
  // the max of the bounded searches says nothing when another search has no bound
  if (statements.some(s => s.vector?.search && s.vector.topK === undefined)) delete facts.topK
  const op: Operation = {
    protocol: 'postgres',
    class: error === undefined ? cls : 'admin',
    resources,
    statement: statements.map(s => s.statement).join('; '),
    fingerprint,
    statements,
    facts,
  }
  if (error !== undefined) op.error = error
  return deepFreeze(op)
}

/** A stand-in fingerprint for text libpg_query cannot fingerprint (it did not parse). */
export function textFingerprint(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 16)
}

export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === 'object' && !Object.isFrozen(value)) {
    Object.freeze(value)
    for (const key in value) deepFreeze((value as Record<string, unknown>)[key])
  }
  return value
}
