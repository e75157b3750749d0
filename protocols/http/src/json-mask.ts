// Masks a parsed JSON value in place: field rules by path (masks.forField), then detectors over the
// remaining string values (masks.scan). Paths are dotted with array indexes ('data.0.email'); a rule
// may also name the path without indexes ('data.email') or the bare key ('email').
import type { MaskMethod, MaskPlan } from '@portcullis/core'

export function maskJson(root: unknown, plan: MaskPlan): { value: unknown; count: number } {
  let count = 0
  const fieldRule = (path: string[], key: string): MaskMethod | undefined => {
    const full = path.join('.')
    let m = plan.forField(full)
    if (m) return m
    const named = path.filter(p => !/^\d+$/.test(p)).join('.')
    if (named !== full) m = plan.forField(named)
    if (!m && named !== key) m = plan.forField(key)
    return m
  }
  const visit = (value: unknown, path: string[], key: string): unknown => {
    if (path.length > 0 && key !== '' && !/^\d+$/.test(key)) {
      const method = fieldRule(path, key)
      if (method && value !== null && value !== undefined) {
        count++
        return plan.apply(method, typeof value === 'string' ? value : JSON.stringify(value))
      }
    }
    if (typeof value === 'string') {
      // a base64 embedding is numbers, not text: a detector hit there would only corrupt the vector
      if (!plan.hasDetectors || key === 'embedding') return value
      const r = plan.scan(value)
      count += r.count
      return r.text
    }
    if (Array.isArray(value)) {
      for (let i = 0; i < value.length; i++) value[i] = visit(value[i], [...path, String(i)], String(i))
      return value
    }
    if (value && typeof value === 'object') {
      const obj = value as Record<string, unknown>
      for (const k of Object.keys(obj)) obj[k] = visit(obj[k], [...path, k], k)
      return obj
    }
    return value
  }
  const value = visit(root, [], '')
  return { value, count }
}

/** masks a JSON text; fails closed (throws) when it is not JSON */
export function maskJsonText(text: string, plan: MaskPlan): { text: string; count: number } {
  const r = maskJson(JSON.parse(text), plan)
  return { text: r.count > 0 ? JSON.stringify(r.value) : text, count: r.count }
}
