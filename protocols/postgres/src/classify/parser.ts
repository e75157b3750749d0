// The libpg_query WASM module (the real Postgres 17 grammar). Loaded once; every call after that is
// synchronous. We use the full build (@libpg-query/parser): the slim `libpg-query` package ships parse
// only, and classification also needs normalize, fingerprint and scan.
import { loadModule, parseSync, normalizeSync, fingerprintSync, scanSync } from '@libpg-query/parser'

let loaded = false
let loading: Promise<void> | undefined

export function loadParser(): Promise<void> {
  if (loaded) return Promise.resolve()
  loading ??= loadModule().then(() => {
    loaded = true
  })
  return loading
}

export function parserLoaded(): boolean {
  return loaded
}

/** A parse-tree node as libpg_query's JSON gives it: `{ TypeName: { …fields } }`. */
export type Node = Record<string, unknown>

export interface RawStmt {
  stmt?: Node
  /** byte offset of the statement in the query text */
  stmt_location?: number
  /** byte length; 0 or absent means "to the end" */
  stmt_len?: number
}

export interface ParseOutcome {
  stmts: RawStmt[]
}

export function parseSql(sql: string): ParseOutcome {
  const tree = parseSync(sql) as unknown as { stmts?: RawStmt[] }
  return { stmts: tree.stmts ?? [] }
}

export const normalize = (sql: string): string => normalizeSync(sql)
export const fingerprint = (sql: string): string => fingerprintSync(sql)

export interface Token {
  name: string
  start: number
  end: number
  text: string
}

export function scan(sql: string): Token[] {
  return scanSync(sql).tokens.map(t => ({ name: t.tokenName, start: t.start, end: t.end, text: t.text }))
}
