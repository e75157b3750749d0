// Records written later than they happened, held until the decision that ends them: a round trip's
// decisions as one 'decision' record (holdDecisions, a Redis pipeline read in one chunk), and the
// request a decision answers inside that decision's record (holdRequest, FORMAT.md `request`). Any
// other record writes what is held first (writeAll), so the recording keeps the order things
// happened in, and a request waiting for an answer (decide()) is never held back.
import type { Decision, Operation, RecordType } from '../types.ts'
import { decisionPayload, decisionRuns } from './decision-record.ts'

/** decisions held for one record at most (a record stays far below the recorder's size bound) */
const MAX_HELD_DECISIONS = 256

type Write = (type: RecordType, payload: Record<string, unknown>) => void

export class HeldRecords {
  readonly #write: Write
  readonly #scope: () => string | undefined
  // held decisions (holdDecisions): the operations and their answers, in order; undefined when not holding
  #ops: Operation[] | undefined
  #decs: Decision[] = []
  #request: Record<string, unknown> | undefined

  /** `write` records at once; `scope` is the session's scope summary when a record is built */
  constructor(write: Write, scope: () => string | undefined) {
    this.#write = write
    this.#scope = scope
  }

  /** from now until releaseDecisions(), the decisions taken are recorded together, one record per round trip */
  holdDecisions(): void {
    this.#ops ??= []
  }

  releaseDecisions(): void {
    this.#writeDecisions()
    this.#ops = undefined
  }

  /** the request the next decision answers; a request already held is written first */
  holdRequest(payload: Record<string, unknown>): void {
    this.writeRequest()
    this.#request = payload
  }

  /** the held request, if any, as a 'request' record now */
  writeRequest(): void {
    const request = this.#request
    if (request === undefined) return
    this.#request = undefined
    this.#write('request', request)
  }

  /** everything held, in the order it happened: before any other record is written */
  writeAll(): void {
    if (this.#request !== undefined) this.writeRequest()
    if (this.#ops !== undefined && this.#ops.length > 0) this.#writeDecisions()
  }

  /** a decision taken: held with its round trip's, or recorded now (with the request it answers, if held) */
  decided(op: Operation, decision: Decision): void {
    const held = this.#ops
    if (held !== undefined) {
      // held by reference: the round trip's record is built once, when it is written
      held.push(op)
      this.#decs.push(decision)
      if (held.length >= MAX_HELD_DECISIONS) this.#writeDecisions()
      return
    }
    const request = this.#request
    this.#request = undefined
    this.#write('decision', decisionPayload(op, decision, this.#scope(), request))
  }

  /** the held decisions as one record: a single one as decide() records it, several as runs (decision-record.ts) */
  #writeDecisions(): void {
    const ops = this.#ops
    if (ops === undefined || ops.length === 0) return
    const decs = this.#decs
    this.#ops = []
    this.#decs = []
    if (ops.length === 1) {
      // a round trip of one operation: the request it answers (held, if it was) goes in its record
      const request = this.#request
      this.#request = undefined
      return this.#write('decision', decisionPayload(ops[0]!, decs[0]!, this.#scope(), request))
    }
    this.writeRequest()
    this.#write('decision', decisionRuns(ops, decs, this.#scope()))
  }
}
