// The algebra of column lineage values (classify/lineage.ts): what a value computed from others is
// made of. Pure functions over Value; no tree, no catalog.
import type { Body } from './tree.ts'
import type { Column, Parts, Value } from './lineage.ts'

export function relationName(rv: Body): string {
  const parts = [rv.catalogname, rv.schemaname, rv.relname].filter((s): s is string => typeof s === 'string' && s !== '')
  return parts.map(quoteIdent).join('.')
}

function quoteIdent(s: string): string {
  return /^[a-z_][a-z0-9_$]*$/.test(s) ? s : `"${s.replace(/"/g, '""')}"`
}

export const NONE: Value = Object.freeze({ sources: [] }) as Value

export function opaque(reason: string, from: Value[] = []): Value {
  return { sources: mergeSources(from), opaque: from.find(v => v.opaque)?.opaque ?? reason }
}

export function keyOf(c: Column): string {
  return `${c.schema}.${c.table}.${c.column}`
}

export function mergeSources(values: Value[]): Column[] {
  if (values.length === 1) return values[0]!.sources
  const seen = new Map<string, Column>()
  for (const v of values) for (const c of v.sources) seen.set(keyOf(c), c)
  return [...seen.values()]
}

/** a value computed from these (an operator, a function, a cast): one whole */
export function derived(values: Value[]): Value {
  const o = values.find(v => v.opaque)
  const sources = mergeSources(values)
  if (o) return { sources, opaque: o.opaque }
  return sources.length === 0 ? NONE : { sources }
}

/** one of these, by row (UNION arms, CASE results, COALESCE): parts kept when all agree in shape */
export function either(values: Value[]): Value {
  if (values.length === 1) return values[0]!
  const d = derived(values)
  if (d.opaque || d.sources.length === 0) return d
  const withParts = values.filter(v => v.sources.length > 0)
  const first = withParts[0]!.parts
  if (first && withParts.every(v => v.parts?.kind === first.kind)) {
    if (first.kind === 'array') return { sources: d.sources, parts: { kind: 'array', element: either(withParts.map(v => (v.parts as { element: Value }).element)) } }
    if (first.kind === 'record') {
      const all = withParts.map(v => v.parts as Extract<Parts, { kind: 'record' }>)
      if (all.every(p => p.fields.length === first.fields.length)) {
        return { sources: d.sources, parts: { kind: 'record', fields: first.fields.map((_, i) => either(all.map(p => p.fields[i]!))), names: first.names } }
      }
    }
  }
  return d
}

/** the JSON form of a value (row_to_json, to_jsonb, json_agg): a record becomes an object by names */
export function asJson(v: Value): Value {
  if (v.opaque || v.sources.length === 0 || !v.parts) return v.direct ? { sources: v.sources } : v
  const p = v.parts
  if (p.kind === 'json') return v
  if (p.kind === 'array') return { sources: v.sources, parts: { kind: 'json', keys: new Map(), element: asJson(p.element) } }
  const keys = new Map<string, Value>()
  p.fields.forEach((f, i) => {
    const name = p.names[i] ?? `f${i + 1}`
    const had = keys.get(name)
    keys.set(name, had ? either([had, asJson(f)]) : asJson(f))
  })
  return { sources: v.sources, parts: { kind: 'json', keys } }
}

export function record(fields: Value[], fieldNames: string[]): Value {
  const d = derived(fields)
  if (d.opaque || d.sources.length === 0) return d
  return { sources: d.sources, parts: { kind: 'record', fields, names: fieldNames } }
}

export function array(element: Value): Value {
  if (element.opaque || element.sources.length === 0) return element.direct ? { sources: element.sources } : element
  return { sources: element.sources, parts: { kind: 'array', element } }
}

/** a value without its identity as a column (it went through an expression) */
export function strip(v: Value): Value {
  return v.direct ? { sources: v.sources, parts: v.parts } : v
}

export function opaqueReason(v: Value): string | undefined {
  if (v.opaque) return v.opaque
  const p = v.parts
  if (!p) return undefined
  if (p.kind === 'record') for (const f of p.fields) {
    const r = opaqueReason(f)
    if (r) return r
  }
  if (p.kind === 'array') return opaqueReason(p.element)
  if (p.kind === 'json') {
    for (const k of p.keys.values()) {
      const r = opaqueReason(k)
      if (r) return r
    }
    if (p.element) return opaqueReason(p.element)
    if (p.anyKey) return opaqueReason(p.anyKey)
  }
  return undefined
}
