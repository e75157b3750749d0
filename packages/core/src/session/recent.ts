// The last statements a session decided: a fixed ring, written on every decision without allocating,
// read only when an approval request or the live-session registry shows them.
import type { Decision, Operation, RecentStatement } from '../types.ts'

/** statements an approval request shows of the session before the held one (a bounded ring) */
export const RECENT_STATEMENTS = 10
const RECENT_TEXT_MAX = 500
/** how many of the ring's statements the live-session registry (and the web console) shows */
const LIVE_RECENT_STATEMENTS = 5

export class RecentStatements {
  #ops: (Operation | undefined)[] = new Array(RECENT_STATEMENTS)
  #at: number[] = new Array(RECENT_STATEMENTS).fill(0)
  #action: RecentStatement['action'][] = new Array(RECENT_STATEMENTS).fill('allow')
  #next = 0

  add(op: Operation, decision: Decision, at: number): void {
    const slot = this.#next % RECENT_STATEMENTS
    this.#ops[slot] = op
    this.#at[slot] = at
    this.#action[slot] = decision.deferred ? 'approve' : decision.action
    this.#next++
  }

  /** the ring, oldest first, as an approval request shows it */
  list(): RecentStatement[] {
    const out: RecentStatement[] = []
    const n = Math.min(this.#next, RECENT_STATEMENTS)
    for (let i = this.#next - n; i < this.#next; i++) {
      const slot = i % RECENT_STATEMENTS
      const op = this.#ops[slot]!
      const text = op.statement.length > RECENT_TEXT_MAX ? op.statement.slice(0, RECENT_TEXT_MAX) + '…' : op.statement
      out.push({ at: this.#at[slot]!, statement: text, class: op.class, action: this.#action[slot]! })
    }
    return out
  }

  /** the last few statements' texts, oldest first, for the live-session registry */
  live(): string[] {
    return this.list()
      .slice(-LIVE_RECENT_STATEMENTS)
      .map((r) => r.statement)
  }
}
