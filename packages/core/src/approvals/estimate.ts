// Blast radius: how much a statement would touch, estimated before anyone decides on it. The
// codec knows how to ask its upstream (EXPLAIN, EXISTS, FT.INFO, /points/count,
// describe_index_stats) and hands the session an Estimator; this module decides when to run it,
// bounds its time, and turns its answer into facts rules can match.
//
// When it runs: only when a rule names one of the estimator's facts and the answer depends on it,
// or when the operation is about to be held (the approver sees the estimate). Never otherwise:
// the allow/block path of every other operation costs nothing more than before.
import type { BlastRadius, Estimator, FactValue, Operation, OperationClass } from '../types.ts'
import type { RuleConfig } from '../config/types.ts'
import { factsNamed } from '../policy/decide.ts'

/** the numeric facts an estimate gives rules (`facts: { estimatedRows: { gt: 1000 } }`) */
export const ESTIMATE_FACTS = ['estimatedRows', 'keys', 'documents', 'points', 'vectors'] as const

/** ms an estimate may take unless approvals.estimate.timeout says otherwise */
export const DEFAULT_ESTIMATE_TIMEOUT_MS = 2000

/** facts an estimate sets; `tables` is for the approver, not a number to compare */
export function estimateFacts(e: BlastRadius): Record<string, FactValue> {
  const out: Record<string, FactValue> = {}
  for (const name of ESTIMATE_FACTS) {
    const v = e[name]
    if (typeof v === 'number' && Number.isFinite(v)) out[name] = v
  }
  return out
}

/**
 * The operation with the estimate's facts. A copy: operations are shared (classification caches)
 * and one execution's estimate must not leak into another's. An estimate never overrides a fact
 * the classifier had exactly (Qdrant delete by ids: `points` is the id count).
 */
export function withEstimate(op: Operation, e: BlastRadius): Operation {
  const facts = estimateFacts(e)
  for (const k of Object.keys(facts)) if (op.facts[k] !== undefined) delete facts[k]
  return { ...op, facts: { ...facts, ...op.facts } }
}

/** the estimator's facts that are still unknown after it gave `e` (all of them for null) */
export function unknownFacts(est: Estimator, e: BlastRadius | null | undefined): string[] {
  if (!e) return [...est.facts]
  return est.facts.filter(f => typeof (e as unknown as Record<string, unknown>)[f] !== 'number')
}

const namedCache = new WeakMap<RuleConfig[], Set<string>>()
const holdsCache = new WeakMap<RuleConfig[], Map<string, boolean>>()

/** true when some approve rule may hold an operation of this class (its approver then sees the estimate) */
export function rulesHold(rules: RuleConfig[], cls: OperationClass): boolean {
  let byClass = holdsCache.get(rules)
  if (!byClass) holdsCache.set(rules, (byClass = new Map()))
  let h = byClass.get(cls)
  if (h === undefined) {
    h = rules.some(r => r.action === 'approve' && (!r.when.class || r.when.class.includes(cls)))
    byClass.set(cls, h)
  }
  return h
}

/** true when some rule names one of these facts (cached per rules array: per config generation) */
export function rulesName(rules: RuleConfig[], facts: readonly string[]): boolean {
  let named = namedCache.get(rules)
  if (!named) {
    named = factsNamed(rules)
    namedCache.set(rules, named)
  }
  for (const f of facts) if (named.has(f)) return true
  return false
}

/**
 * Runs an estimator once, within `timeoutMs`; whatever goes wrong (a timeout, an upstream error,
 * the client leaving) is null: the facts stay unknown and the rules read them the stricter way.
 */
export async function runEstimate(est: Estimator, timeoutMs: number, signal?: AbortSignal): Promise<BlastRadius | null> {
  const controller = new AbortController()
  const timer = setTimeout(() => controller.abort(new Error('estimate timed out')), timeoutMs)
  const onAbort = () => controller.abort(signal?.reason)
  signal?.addEventListener('abort', onAbort, { once: true })
  try {
    if (signal?.aborted) return null
    const aborted = new Promise<null>(resolve => controller.signal.addEventListener('abort', () => resolve(null), { once: true }))
    const r = await Promise.race([est.run(controller.signal).catch(() => null), aborted])
    return r && typeof r.source === 'string' ? r : null
  } finally {
    clearTimeout(timer)
    signal?.removeEventListener('abort', onAbort)
    // the estimator's own work (a socket, a request) ends with the signal
    if (!controller.signal.aborted) controller.abort(new Error('estimate done'))
  }
}
