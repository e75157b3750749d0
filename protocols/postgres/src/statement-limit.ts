// The longest SQL text the classifier parses. libpg_query runs as WebAssembly with a linear memory
// that grows to its largest parse and is never given back (emscripten's malloc keeps every page it
// touched, and a WASM memory cannot shrink), so one long statement would raise the gateway's RSS for
// the rest of its life — and the parse itself runs on the event loop. Measured with classifySql
// (README "Statement length"): a select list of `a,` repeated costs ~2.1 MiB of WASM memory per KiB
// of text (libpg_query's normalize), so 1 MiB of it held 992 MiB and 34 s of CPU; a nesting of
// `1+1+…` 255 MiB per MiB. Longer texts are refused before any parse, whatever the rules say
// (fail closed: what the gateway did not classify does not go through), with Postgres's own
// program_limit_exceeded, and the session goes on as after any error.
import type { Operation } from '@portcullis/core/types'

/**
 * Default bound, bytes: at 32 KiB the worst shape measured holds ~68 MiB of WASM memory, inside the
 * module's initial 128 MiB, so the memory never grows (limits.maxStatementBytes raises it).
 */
export const MAX_STATEMENT_BYTES = 32 * 1024

/** Postgres's program_limit_exceeded */
export const STATEMENT_TOO_LONG = '54000'

const tooLong = new WeakSet<Operation>()

/**
 * The Operation standing for SQL the gateway did not classify (a parse error, a text over the
 * bound): class admin with no text kept, so only a rule that allows admin lets it through (fail closed).
 */
export function unclassified(error: string): Operation {
  return { protocol: 'postgres', class: 'admin', resources: [], statement: '', fingerprint: '', statements: [], facts: {}, error }
}

/** the Operation standing for a text over the bound (no text of it kept: it may be anything) */
export function overLimit(sql: string, max: number): Operation | undefined {
  // UTF-8 is at most 3 bytes per UTF-16 unit: most texts are decided on their length alone
  if (sql.length * 3 <= max) return undefined
  const bytes = Buffer.byteLength(sql, 'utf8')
  if (bytes <= max) return undefined
  const op = unclassified(`statement too long to classify: ${bytes} bytes of SQL text, this gateway classifies at most ${max} (limits.maxStatementBytes)`)
  tooLong.add(op)
  return op
}

export function isOverLimit(op: Operation): boolean {
  return tooLong.has(op)
}
