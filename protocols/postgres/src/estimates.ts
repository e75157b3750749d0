// What the proxy keeps so that a statement can be EXPLAINed exactly as it will run: the text of
// each Parse (with its parameter types) and the values of each Bind, tied to the very objects the
// session model holds (explain.ts does the EXPLAIN).
//
// Tied to objects, not names: a Parse of a name that fails upstream leaves the old statement under
// that name, and two Parses whose text differs only in literals classify to one shared Operation.
// So each Parse's Operation is a fresh (frozen) copy carrying its own text, and each Bind's values
// belong to the Portal object the model made for it: what is estimated is what the model says runs.
import type { Estimator, Operation, OperationClass, Session } from '@portcullis/core/types'
import { BufferReader } from './buffer-reader.ts'
import { parseBindMessage } from './frontend.ts'
import type { Catalog } from './catalog.ts'
import type { Portal } from './session-state.ts'
import { POSTGRES_ESTIMATE_FACTS, postgresEstimator, unknownEstimator, type BoundParameters } from './explain.ts'

/** statement_timeout of the EXPLAIN unless target.options.explainTimeout (ms) says otherwise */
const DEFAULT_EXPLAIN_TIMEOUT_MS = 1000

interface Parsed {
  sql: string
  types: number[]
}

export class StatementTexts {
  private readonly texts = new WeakMap<Operation, Parsed>()
  private readonly binds = new WeakMap<Portal, BoundParameters>()

  constructor(
    private readonly session: Session,
    private readonly catalog: Catalog,
  ) {}

  /** whether a rule names the estimate, or (with `cls`) may hold such an operation (cached per config generation) */
  private wanted(cls?: OperationClass): boolean {
    return this.session.estimates?.(POSTGRES_ESTIMATE_FACTS, cls) ?? false
  }

  /** at Parse: the statement's own Operation, carrying its text */
  parsed(op: Operation, sql: string, types: number[]): Operation {
    if (op.class === 'session' || op.error !== undefined || !this.wanted(op.class)) return op
    const own = Object.freeze({ ...op })
    this.texts.set(own, { sql, types })
    return own
  }

  /** at Bind: `derived` (a top-k bound from a value) runs the text of `op` */
  derived(derived: Operation, op: Operation): void {
    const t = this.texts.get(op)
    if (t && derived !== op) this.texts.set(derived, t)
  }

  /** at Bind: the values the portal runs with (read only for statements whose text is kept) */
  bound(portal: Portal, raw: Buffer): void {
    if (!this.texts.has(portal.op)) return
    const b = parseBindMessage(new BufferReader(raw, 5))
    const types = this.texts.get(portal.op)!.types
    this.binds.set(portal, { types, formats: b.paramFormats, values: b.params.map(v => (v === null ? null : Buffer.from(v))) })
  }

  /**
   * The estimator for one decision: a simple Query's text, or an Execute's portal. `always`: for
   * decide() (an approval may follow); otherwise only when a rule names the facts (decideNow, the
   * hot path, builds nothing for a config that does not).
   */
  estimator(kind: 'Q' | 'E', op: Operation, sql: string | undefined, portal: Portal | undefined, always: boolean): Estimator | undefined {
    if (op.class === 'session') return undefined
    if (!always && !this.wanted()) return undefined
    const timeout = typeof this.session.target.options.explainTimeout === 'number' ? this.session.target.options.explainTimeout : DEFAULT_EXPLAIN_TIMEOUT_MS
    if (kind === 'Q') return sql === undefined ? unknownEstimator(POSTGRES_ESTIMATE_FACTS) : postgresEstimator(this.catalog, sql, undefined, timeout)
    const text = portal && portal.op === op ? this.texts.get(op) : undefined
    const params = portal && this.binds.get(portal)
    // EXECUTE / FETCH by SQL, a statement PREPAREd by SQL, a Bind we did not read: nothing to estimate from
    if (!text || !params) return unknownEstimator(POSTGRES_ESTIMATE_FACTS)
    return postgresEstimator(this.catalog, text.sql, params, timeout)
  }
}
