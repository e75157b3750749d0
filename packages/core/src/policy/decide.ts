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

export function ruleMatches(rule: RuleConfig, principal: Principal, target: string, op: Operation): boolean {
  const w = rule.when
  if (w.groups && !w.groups.some(g => principal.groups.includes(g))) return false
  if (w.subjects && !w.subjects.some(s => matchName(s, principal.subject))) return false
  if (w.targets && !w.targets.some(t => matchName(t, target))) return false
  if (w.class && !w.class.includes(op.class)) return false
  if (w.resources && !w.resources.some(g => op.resources.some(r => matchResource(g, r)))) return false
  if (w.statement !== undefined) {
    const re = pattern(w.statement)
    if (!re.test(op.statement) && !op.statements.some(s => re.test(s.statement))) return false
  }
  if (w.operations) {
    const name = op.facts.operation ?? op.facts.command
    if (typeof name !== 'string' || !w.operations.some(o => matchName(o.toLowerCase(), name.toLowerCase()))) return false
  }
  if (w.facts) {
    for (const [name, cond] of Object.entries(w.facts)) if (!factMatches(cond, fact(op, name))) return false
  }
  return true
}

function appliesTo(rule: RuleConfig, principal: Principal, target: string): boolean {
  const w = rule.when
  if (w.groups && !w.groups.some(g => principal.groups.includes(g))) return false
  if (w.targets && !w.targets.some(t => matchName(t, target))) return false
  return true
}

export function decide(rules: RuleConfig[], principal: Principal, target: string, op: Operation): PolicyDecision {
  if (op.error !== undefined) return { action: 'block', rule: null, reason: op.error }
  let winner: RuleConfig | undefined
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
    if (!ruleMatches(rule, principal, target, op)) continue
    if (!winner || STRICTNESS[rule.action] > STRICTNESS[winner.action]) winner = rule
    if (winner.action === 'block') break
  }
  if (!winner) return { action: 'block', rule: null, reason: DEFAULT_DENY_REASON }
  const verb = winner.action === 'allow' ? 'allowed' : winner.action === 'block' ? 'blocked' : 'needs approval'
  const out: PolicyDecision = { action: winner.action, rule: winner.id, reason: winner.reason ?? `${verb} by rule ${winner.id}` }
  if (winner.action === 'approve') {
    out.approvers = winner.approvers ?? []
    if (winner.window !== undefined) out.window = winner.window
    if (winner.timeout !== undefined) out.timeoutMs = winner.timeout
  }
  return out
}
