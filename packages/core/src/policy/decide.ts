// Pure policy: the same rules, principal, target and operation always give the same answer.
import RE2 from 're2'
import type { Action, FactValue, Operation, Principal } from '../types.ts'
import type { FactCondition, RuleConfig } from '../config/types.ts'
import { matchName, matchResource } from './glob.ts'
import { expandRule, ruleHasTemplates } from './rule-templates.ts'

export interface PolicyDecision {
  action: Action
  rule: string | null
  reason: string
  approvers?: string[]
  /** ms */
  window?: number
  /** ms */
  timeoutMs?: number
  /** distinct approvers needed */
  minApprovals?: number
  /**
   * set when a rule's fact condition named a fact that is still unknown (an estimate not had yet,
   * or not to be had) and the rule, counted or not, decides the answer: the answer may change once
   * the fact is known. The answer given is the stricter reading (see decide()).
   */
  unknown?: { rule: string; facts: string[] }
}

export const DEFAULT_DENY_REASON = 'no rule allows this (default deny)'

const STRICTNESS: Record<Action, number> = { allow: 0, approve: 1, block: 2 }

const patterns = new Map<string, { test(s: string): boolean }>()
function pattern(src: string) {
  let re = patterns.get(src)
  if (!re) {
    re = new RE2(src)
    // rules with claim templates make one pattern per tenant: bounded like the glob cache
    if (patterns.size > 10_000) patterns.clear()
    patterns.set(src, re)
  }
  return re
}

/** Facts a rule can name: the operation's own, plus vector facts summed up over its statements. */
function fact(op: Operation, name: string): FactValue | undefined {
  const own = op.facts[name]
  if (own !== undefined) return own
  switch (name) {
    case 'vectorSearch':
      return op.statements.some(s => s.vector?.search === true)
    case 'embeddingExport':
      return op.statements.some(s => s.vector?.export === true)
    case 'topK': {
      let max: number | undefined
      for (const s of op.statements) {
        if (!s.vector?.search) continue
        // an unbounded search is the largest top-k there is
        const k = s.vector.topK ?? Infinity
        max = max === undefined ? k : Math.max(max, k)
      }
      return max
    }
    default:
      for (const s of op.statements) if (s.facts?.[name] !== undefined) return s.facts[name]
      return undefined
  }
}

function factMatches(cond: FactCondition, value: FactValue | undefined): boolean {
  if (value === undefined) return false
  if (typeof cond === 'string') return typeof value === 'string' && matchName(cond, value)
  if (typeof cond === 'number' || typeof cond === 'boolean') return value === cond
  if (cond.eq !== undefined && value !== cond.eq) return false
  const numeric = cond.gt !== undefined || cond.gte !== undefined || cond.lt !== undefined || cond.lte !== undefined
  if (!numeric) return true
  if (typeof value !== 'number') return false
  if (cond.gt !== undefined && !(value > cond.gt)) return false
  if (cond.gte !== undefined && !(value >= cond.gte)) return false
  if (cond.lt !== undefined && !(value < cond.lt)) return false
  if (cond.lte !== undefined && !(value <= cond.lte)) return false
  return true
}

type Match = 'yes' | 'no' | 'unknown'

function ruleMatch(rule: RuleConfig, principal: Principal, target: string, op: Operation, unknown?: readonly string[], missing?: string[]): Match {
  const w = rule.when
  if (w.groups && !w.groups.some(g => principal.groups.includes(g))) return 'no'
  if (w.subjects && !w.subjects.some(s => matchName(s, principal.subject))) return 'no'
  if (w.targets && !w.targets.some(t => matchName(t, target))) return 'no'
  if (w.class && !w.class.includes(op.class)) return 'no'
  if (w.resources && !w.resources.some(g => op.resources.some(r => matchResource(g, r)))) return 'no'
  if (w.statement !== undefined) {
    const re = pattern(w.statement)
    if (!re.test(op.statement) && !op.statements.some(s => re.test(s.statement))) return 'no'
  }
  if (w.operations) {
    const name = op.facts.operation ?? op.facts.command
    if (typeof name !== 'string' || !w.operations.some(o => matchName(o.toLowerCase(), name.toLowerCase()))) return 'no'
  }
  let result: Match = 'yes'
  if (w.facts) {
    for (const [name, cond] of Object.entries(w.facts)) {
      const value = fact(op, name)
      // a fact the codec could estimate but has not (or could not): neither yes nor no
      if (value === undefined && unknown?.includes(name)) {
        result = 'unknown'
        missing?.push(name)
        continue
      }
      if (!factMatches(cond, value)) return 'no'
    }
  }
  return result
}

export function ruleMatches(rule: RuleConfig, principal: Principal, target: string, op: Operation): boolean {
  return ruleMatch(rule, principal, target, op) === 'yes'
}

/** fact names any rule's `facts` condition names (for a codec: is an estimate worth having?) */
export function factsNamed(rules: RuleConfig[]): Set<string> {
  const out = new Set<string>()
  for (const r of rules) for (const name of Object.keys(r.when.facts ?? {})) out.add(name)
  return out
}

function appliesTo(rule: RuleConfig, principal: Principal, target: string): boolean {
  const w = rule.when
  if (w.groups && !w.groups.some(g => principal.groups.includes(g))) return false
  if (w.targets && !w.targets.some(t => matchName(t, target))) return false
  return true
}

/**
 * Strictest matching rule wins (block > approve > allow); none: block. `unknown` names facts the
 * operation may still learn (an estimate): a rule whose only open conditions are on those facts is
 * read the stricter way — counted as matching when its action is stricter than what the rules
 * that do match say, not counted when it is as loose or looser. So an unknown estimate never lets
 * more through than a known one could: `allow when estimatedRows < 10` does not allow, `approve
 * when estimatedRows > 1000` holds. A rule with claim templates is matched as expanded for the
 * principal; a claim it needs that is missing refuses the request (fail closed).
 */
export function decide(rules: RuleConfig[], principal: Principal, target: string, op: Operation, unknown?: readonly string[]): PolicyDecision {
  if (op.error !== undefined) return { action: 'block', rule: null, reason: op.error }
  let winner: RuleConfig | undefined
  let open: { rule: RuleConfig; facts: string[] } | undefined
  let opens = false
  for (let rule of rules) {
    if (ruleHasTemplates(rule)) {
      const r = expandRule(rule, principal)
      if (r instanceof Error) {
        // a claim the rule needs is missing: whatever the rule would have said, the request is
        // refused when the rule is about this caller and target (fail closed)
        if (appliesTo(rule, principal, target)) return { action: 'block', rule: rule.id, reason: r.message }
        continue
      }
      rule = r
    }
    const missing: string[] | undefined = unknown ? [] : undefined
    const m = ruleMatch(rule, principal, target, op, unknown, missing)
    if (m === 'no') continue
    if (m === 'unknown') {
      opens = true
      if (!open || STRICTNESS[rule.action] > STRICTNESS[open.rule.action]) open = { rule, facts: missing! }
      continue
    }
    if (!winner || STRICTNESS[rule.action] > STRICTNESS[winner.action]) winner = rule
    if (winner.action === 'block' && !unknown) break
  }
  // the unknown rule counts when it is stricter than the known answer (default deny is block)
  const known = winner ? STRICTNESS[winner.action] : STRICTNESS.block
  let counted = false
  if (open && STRICTNESS[open.rule.action] > known) {
    winner = open.rule
    counted = true
  }
  if (!winner) {
    const out: PolicyDecision = { action: 'block', rule: null, reason: DEFAULT_DENY_REASON }
    // no rule matches for sure: one that might (an allow on a small estimate) could change that
    if (opens && open) out.unknown = { rule: open.rule.id, facts: open.facts }
    return out
  }
  const verb = winner.action === 'allow' ? 'allowed' : winner.action === 'block' ? 'blocked' : 'needs approval'
  const why = winner.reason ?? `${verb} by rule ${winner.id}`
  const out: PolicyDecision = {
    action: winner.action,
    rule: winner.id,
    reason: counted ? `${why} (${open!.facts.join(', ')} unknown: read the stricter way)` : why,
  }
  if (counted) out.unknown = { rule: open!.rule.id, facts: open!.facts }
  if (winner.action === 'approve') {
    out.approvers = winner.approvers ?? []
    if (winner.window !== undefined) out.window = winner.window
    if (winner.timeout !== undefined) out.timeoutMs = winner.timeout
    if (winner.minApprovals !== undefined) out.minApprovals = winner.minApprovals
  }
  return out
}
