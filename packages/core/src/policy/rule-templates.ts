// Claim templates in rule conditions: `resources: ['tenant_${claims.tenant}.*']`. A rule with
// templates is expanded once per principal (the principal object of a session's authentication)
// and the expansion is cached beside it; each value is quoted for the condition it lands in (glob
// for resources and fact patterns, RE2 for `statement`), so a claim value is always literal text.
import type { Principal } from '../types.ts'
import type { RuleConfig, RuleWhen } from '../config/types.ts'
import { expandAll, globQuote, hasTemplate, regexQuote, TemplateError } from '../identity/templates.ts'

const templated = new WeakMap<RuleConfig, boolean>()

export function ruleHasTemplates(rule: RuleConfig): boolean {
  let t = templated.get(rule)
  if (t === undefined) {
    const w = rule.when
    t =
      (w.resources ?? []).some(hasTemplate) ||
      (w.subjects ?? []).some(hasTemplate) ||
      (w.statement !== undefined && hasTemplate(w.statement)) ||
      Object.values(w.facts ?? {}).some(c => typeof c === 'string' && hasTemplate(c))
    templated.set(rule, t)
  }
  return t
}

const expanded = new WeakMap<Principal, Map<RuleConfig, RuleConfig | TemplateError>>()

/** The rule with its templates expanded for this principal, or the TemplateError that refuses it. */
export function expandRule(rule: RuleConfig, principal: Principal): RuleConfig | TemplateError {
  let forPrincipal = expanded.get(principal)
  if (!forPrincipal) expanded.set(principal, (forPrincipal = new Map()))
  let out = forPrincipal.get(rule)
  if (out) return out
  try {
    const w = rule.when
    const when: RuleWhen = { ...w }
    if (w.resources) when.resources = w.resources.flatMap(r => expandAll(r, principal, globQuote))
    if (w.subjects) when.subjects = w.subjects.flatMap(s => expandAll(s, principal, globQuote))
    // several expansions (one per group) of a pattern are alternatives
    if (w.statement !== undefined && hasTemplate(w.statement))
      when.statement = expandAll(w.statement, principal, regexQuote).map(s => `(?:${s})`).join('|')
    if (w.facts) {
      when.facts = {}
      for (const [k, c] of Object.entries(w.facts)) {
        if (typeof c !== 'string' || !hasTemplate(c)) when.facts[k] = c
        else {
          const values = expandAll(c, principal, globQuote)
          // a fact condition is one pattern: more than one expansion cannot be said in it
          if (values.length !== 1) throw new TemplateError(`rule ${rule.id}: facts.${k} needs exactly one value (\${groups} with ${values.length} groups)`)
          when.facts[k] = values[0]!
        }
      }
    }
    out = { ...rule, when }
  } catch (err) {
    out = err instanceof TemplateError ? err : new TemplateError(`rule ${rule.id}: ${(err as Error).message}`)
  }
  forPrincipal.set(rule, out)
  return out
}
