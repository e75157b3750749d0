// The libpg_query WASM module (the real Postgres 17 grammar). Loaded once; every call after that is
// synchronous. We use the full build (@libpg-query/parser): the slim `libpg-query` package ships parse
// only, and classification also needs normalize, fingerprint and scan.
import { loadModule, parseSync, normalizeSync, fingerprintSync, scanSync } from '@libpg-query/parser'

let loaded = false
let loading: Promise<void> | undefined

export function loadParser(): Promise<void> {
  if (loaded) return Promise.resolve()
  loading ??= loadModule().then(() => {
    warmUp()
    loaded = true
  })
  return loading
}

// The module's functions are compiled on their first call: the first fingerprint costs ~1 s of
// CPU, the first parse ~0.2 s. Paid here, while the first client is still connecting, rather than
// by its first statement (the other clients' statements wait behind it).
const WARM_UP = [
  'SELECT a, b FROM s.t WHERE c = $1 AND d IN (1, 2) ORDER BY a LIMIT 10',
  "INSERT INTO t (a, b) VALUES ($1, 'x') RETURNING a",
  'UPDATE t SET a = a + 1 WHERE b = 2',
  'DELETE FROM t WHERE a = 1',
  'BEGIN; COMMIT',
]

function warmUp(): void {
  for (const sql of WARM_UP) {
    try {
      parseSync(sql)
      fingerprintSync(sql)
      normalizeSync(sql)
      scanSync(sql)
    } catch {
      // a warm-up only: the statement's own call will say what is wrong
    }
  }
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

// scanSync's JSON leaves control characters other than \t \n \r unescaped (a \f in a string
// literal made JSON.parse throw out of classifySql). Each becomes a space — one byte for one, so
// offsets hold — which is what they are outside a literal, and inside one the scan only needs the
// token's bounds.
const UNESCAPED = /[\x00-\x08\x0b\x0c\x0e-\x1f]/g

export function scan(sql: string): Token[] {
  return scanSync(sql.replace(UNESCAPED, ' ')).tokens.map(t => ({ name: t.tokenName, start: t.start, end: t.end, text: t.text }))
}
