// The payload of a `decision` record (recording/FORMAT.md): one operation's, or a round trip's as
// `runs`, one per stretch of operations that got the same answer (action, rule, reason, approval),
// with the operations' own fields in columns. A pipeline of allowed commands is then one map and
// four arrays, not a map of seven fields per command. A single decision may hold the request it
// answers (`request`): one record per round trip instead of two. `scope`: the summary of the scope a scoped
// session ran under (replay and audit show it).
import type { Decision, Operation, OperationClass } from '../types.ts'

/** decisions of one round trip that got the same answer, in order */
interface DecisionRun {
  action: Decision['action']
  rule: string | null
  reason: string
  approvalId?: string
  scope?: string
  statements: string[]
  classes: OperationClass[]
  fingerprints: string[]
  resources: string[][]
}

/**
 * one operation's decision record; `request`: the request it answers (Session.holdRequest), which
 * this record then holds in place of a 'request' record of its own
 */
export function decisionPayload(op: Operation, decision: Decision, scope: string | undefined, request?: Record<string, unknown>): Record<string, unknown> {
  if (request !== undefined && scope === undefined && !decision.approvalId) {
    return { request, action: decision.action, rule: decision.rule, reason: decision.reason, statement: op.statement, class: op.class, fingerprint: op.fingerprint, resources: op.resources }
  }
  if (request !== undefined) return { request, ...decisionPayload(op, decision, scope) }
  // one object literal per shape, not a spread per operation
  return scope !== undefined
    ? {
        action: decision.action, rule: decision.rule, reason: decision.reason, statement: op.statement, class: op.class, fingerprint: op.fingerprint, resources: op.resources,
        scope, ...(decision.approvalId ? { approvalId: decision.approvalId } : {}),
      }
    : decision.approvalId
      ? { action: decision.action, rule: decision.rule, reason: decision.reason, approvalId: decision.approvalId, statement: op.statement, class: op.class, fingerprint: op.fingerprint, resources: op.resources }
      : { action: decision.action, rule: decision.rule, reason: decision.reason, statement: op.statement, class: op.class, fingerprint: op.fingerprint, resources: op.resources }
}

/** several operations' decisions (ops[i] got decs[i]) as one record of runs */
export function decisionRuns(ops: readonly Operation[], decs: readonly Decision[], scope: string | undefined): { runs: DecisionRun[] } {
  const runs: DecisionRun[] = []
  let run: DecisionRun | undefined
  let last: Decision | undefined
  for (let i = 0; i < ops.length; i++) {
    const op = ops[i]!
    const d = decs[i]!
    if (run === undefined || (d !== last && (d.action !== last!.action || d.rule !== last!.rule || d.reason !== last!.reason || d.approvalId !== last!.approvalId))) {
      // one literal per shape, as decisionPayload
      run = scope !== undefined
        ? { action: d.action, rule: d.rule, reason: d.reason, scope, statements: [], classes: [], fingerprints: [], resources: [] }
        : { action: d.action, rule: d.rule, reason: d.reason, statements: [], classes: [], fingerprints: [], resources: [] }
      if (d.approvalId) run.approvalId = d.approvalId
      runs.push(run)
    }
    last = d
    run.statements.push(op.statement)
    run.classes.push(op.class)
    run.fingerprints.push(op.fingerprint)
    run.resources.push(op.resources)
  }
  return { runs }
}
