// Masks a parsed JSON value in place: field rules by path (masks.forField), then detectors over the
// remaining string values (masks.scan). Paths are dotted with array indexes ('data.0.email'); a rule
// may also name the path without indexes ('data.email') or the bare key ('email').
import type { MaskMethod, MaskPlan } from '@portcullis/core'

// Responses of one API have the same shape request after request: the rule a path resolves to is
// kept per plan (a plan lives for one principal and config generation), bounded because array
// indexes make paths unbounded. null: no rule for that path. Only paths whose keys hold no '.' are
// kept: there the dotted path alone tells the segments, hence the index-free path and the key.
const MAX_CACHED_PATHS = 4096
const ruleCache = new WeakMap<MaskPlan, Map<string, MaskMethod | null>>()

function isIndex(key: string): boolean {
  const c = key.charCodeAt(0)
  return c >= 48 && c <= 57 && /^\d+$/.test(key)
}

/** one walk's state: module-level functions over it, no closures per call */
interface Walk {
  plan: MaskPlan
  rules: Map<string, MaskMethod | null>
  detectors: boolean
  count: number
}

export function maskJson(root: unknown, plan: MaskPlan): { value: unknown; count: number } {
  let rules = ruleCache.get(plan)
  if (!rules) ruleCache.set(plan, (rules = new Map()))
  const w: Walk = { plan, rules, detectors: plan.hasDetectors, count: 0 }
  const value = visit(w, root, 0, '', '', 0, '', false, true)
  return { value, count: w.count }
}

function fieldRule(w: Walk, full: string, named: string, key: string, plain: boolean): MaskMethod | undefined {
  const hit = plain ? w.rules.get(full) : undefined
  if (hit !== undefined) return hit ?? undefined
  const { plan } = w
  let m = plan.forField(full)
  if (!m && named !== full) m = plan.forField(named)
  if (!m && named !== key) m = plan.forField(key)
  if (plain && w.rules.size < MAX_CACHED_PATHS) w.rules.set(full, m ?? null)
  return m
}

// full: the dotted path with indexes; named: the same without index segments (namedDepth of them);
// plain: no key on the path holds a '.'
function visit(w: Walk, value: unknown, depth: number, full: string, named: string, namedDepth: number, key: string, index: boolean, plain: boolean): unknown {
  if (depth > 0 && key !== '' && !index) {
    const method = fieldRule(w, full, named, key, plain)
    if (method && value !== null && value !== undefined) {
      w.count++
      return w.plan.apply(method, typeof value === 'string' ? value : JSON.stringify(value))
    }
  }
  if (typeof value === 'string') {
    // a base64 embedding is numbers, not text: a detector hit there would only corrupt the vector
    if (!w.detectors || key === 'embedding') return value
    const r = w.plan.scan(value)
    w.count += r.count
    return r.text
  }
  if (value === null || typeof value !== 'object') return value
  const prefix = depth === 0 ? '' : full + '.'
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const k = String(i)
      const v = visit(w, value[i], depth + 1, prefix + k, named, namedDepth, k, true, plain)
      if (v !== value[i]) value[i] = v
    }
    return value
  }
  const obj = value as Record<string, unknown>
  for (const k of Object.keys(obj)) {
    const idx = isIndex(k)
    const childNamed = idx ? named : namedDepth === 0 ? k : named + '.' + k
    const v = visit(w, obj[k], depth + 1, prefix + k, childNamed, idx ? namedDepth : namedDepth + 1, k, idx, plain && !k.includes('.'))
    if (v !== obj[k]) obj[k] = v
  }
  return obj
}

/** masks a JSON text; fails closed (throws) when it is not JSON */
export function maskJsonText(text: string, plan: MaskPlan): { text: string; count: number } {
  const r = maskJson(JSON.parse(text), plan)
  return { text: r.count > 0 ? JSON.stringify(r.value) : text, count: r.count }
}
