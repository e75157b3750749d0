// Masking inside a record, array or JSON value in its text form: the fields, elements or keys that
// derive from a masked column get its method; the rest stay as they were. A value whose text does
// not parse as the lineage says gets the method as a whole (fail closed).
import type { MaskMethod, MaskPlan } from '@portcullis/core/types'
import type { Value } from './classify/lineage.ts'
import { strictestOf } from './column-lineage.ts'

/** what to mask in one value: `method` for the whole of it, or the parts below */
export interface MaskNode {
  /** the strictest method under this node: the whole value's method when its text will not parse */
  method: MaskMethod
  record?: (MaskNode | undefined)[]
  array?: MaskNode
  json?: { keys: Map<string, MaskNode>; element?: MaskNode; anyKey?: MaskNode }
}

/** undefined when nothing in the value derives from a masked column */
export function maskNodeOf(v: Value, plan: MaskPlan): MaskNode | undefined {
  const method = strictestOf(plan, v.sources)
  if (method === undefined) return undefined
  const p = v.parts
  if (!p || v.opaque) return { method }
  switch (p.kind) {
    case 'record': {
      const fields = p.fields.map(f => maskNodeOf(f, plan))
      return { method, record: fields }
    }
    case 'array': {
      const el = maskNodeOf(p.element, plan)
      return el ? { method, array: el } : { method }
    }
    case 'json': {
      const keys = new Map<string, MaskNode>()
      for (const [k, f] of p.keys) {
        const n = maskNodeOf(f, plan)
        if (n) keys.set(k, n)
      }
      const element = p.element && maskNodeOf(p.element, plan)
      const anyKey = p.anyKey && maskNodeOf(p.anyKey, plan)
      return { method, json: { keys, element, anyKey } }
    }
  }
}

/** the masked text of a value; null for SQL NULL */
export function maskText(node: MaskNode, text: string, plan: MaskPlan): string | null {
  if (node.record) {
    const fields = parseRecord(text)
    if (!fields || fields.length !== node.record.length) return plan.apply(node.method, text)
    for (let i = 0; i < fields.length; i++) {
      const f = fields[i]
      const n = node.record[i]
      if (n && f !== null) fields[i] = maskText(n, f, plan)
    }
    return serializeRecord(fields)
  }
  if (node.array) {
    const arr = parseArray(text)
    if (!arr) return plan.apply(node.method, text)
    return arr.prefix + serializeArray(mapArray(arr.items, s => maskText(node.array!, s, plan)))
  }
  if (node.json) {
    // rewritten in place: the values left alone keep their exact text (a bigint stays exact)
    const out = new JsonMasker(text, plan).document(node)
    return out ?? plan.apply(node.method, text)
  }
  return plan.apply(node.method, text)
}

/**
 * Walks JSON text once, copying what no rule covers as it is and replacing what one does. Every
 * method returns undefined when the text is not JSON or not the shape the lineage says.
 */
class JsonMasker {
  private i = 0

  constructor(
    private readonly s: string,
    private readonly plan: MaskPlan,
  ) {}

  document(node: MaskNode): string | undefined {
    const lead = this.ws()
    const v = this.value(node)
    if (v === undefined) return undefined
    const trail = this.ws()
    return this.i === this.s.length ? lead + v + trail : undefined
  }

  private ws(): string {
    const from = this.i
    while (this.i < this.s.length && ' \t\n\r'.includes(this.s[this.i]!)) this.i++
    return this.s.slice(from, this.i)
  }

  private value(node: MaskNode | undefined): string | undefined {
    const c = this.s[this.i]
    if (node === undefined) return this.passValue()
    if (!node.json) {
      if (node.record || node.array) return undefined
      const raw = this.passValue()
      if (raw === undefined) return undefined
      if (raw === 'null') return raw
      const text = raw[0] === '"' ? (JSON.parse(raw) as string) : raw
      const out = this.plan.apply(node.method, text)
      return out === null ? 'null' : JSON.stringify(out)
    }
    const j = node.json
    if (c === 'n') return this.passValue()
    if (c === '[') {
      if (!j.element) return j.keys.size === 0 && !j.anyKey ? this.passValue() : undefined
      let out = '['
      this.i++
      out += this.ws()
      if (this.s[this.i] === ']') {
        this.i++
        return out + ']'
      }
      for (;;) {
        const v = this.value(j.element)
        if (v === undefined) return undefined
        out += v + this.ws()
        const d = this.s[this.i++]
        if (d === ']') return out + ']'
        if (d !== ',') return undefined
        out += ',' + this.ws()
      }
    }
    if (c === '{') {
      if (j.element && j.keys.size === 0 && !j.anyKey) return undefined
      let out = '{'
      this.i++
      out += this.ws()
      if (this.s[this.i] === '}') {
        this.i++
        return out + '}'
      }
      for (;;) {
        if (this.s[this.i] !== '"') return undefined
        const rawKey = this.passValue()
        if (rawKey === undefined) return undefined
        out += rawKey + this.ws()
        if (this.s[this.i++] !== ':') return undefined
        out += ':' + this.ws()
        const key = JSON.parse(rawKey) as string
        const v = this.value(j.keys.get(key) ?? j.anyKey)
        if (v === undefined) return undefined
        out += v + this.ws()
        const d = this.s[this.i++]
        if (d === '}') return out + '}'
        if (d !== ',') return undefined
        out += ',' + this.ws()
      }
    }
    // a scalar where an object or an array was expected
    return undefined
  }

  /** the raw text of one JSON value, checked */
  private passValue(): string | undefined {
    const from = this.i
    const s = this.s
    const c = s[this.i]
    if (c === '"') {
      this.i++
      while (this.i < s.length && s[this.i] !== '"') this.i += s[this.i] === '\\' ? 2 : 1
      if (this.i >= s.length) return undefined
      this.i++
    } else if (c === '{' || c === '[') {
      let depth = 0
      while (this.i < s.length) {
        const d = s[this.i]!
        if (d === '"') {
          if (this.passValue() === undefined) return undefined
          continue
        }
        this.i++
        if (d === '{' || d === '[') depth++
        else if (d === '}' || d === ']') {
          if (--depth === 0) break
        }
      }
      if (depth !== 0) return undefined
    } else {
      while (this.i < s.length && !',]} \t\n\r'.includes(s[this.i]!)) this.i++
      if (this.i === from) return undefined
    }
    const raw = s.slice(from, this.i)
    try {
      JSON.parse(raw)
    } catch {
      return undefined
    }
    return raw
  }
}

// ---- record text: (1,"a b",,x) --------------------------------------------------------------

export function parseRecord(s: string): (string | null)[] | undefined {
  if (s.length < 2 || s[0] !== '(' || s[s.length - 1] !== ')') return undefined
  const out: (string | null)[] = []
  let i = 1
  const end = s.length - 1
  for (;;) {
    let field = ''
    let quoted = false
    while (i < end && s[i] !== ',') {
      const c = s[i]!
      if (c === '"') {
        quoted = true
        i++
        for (;;) {
          if (i >= end) return undefined
          const d = s[i]!
          if (d === '\\') {
            field += s[i + 1] ?? ''
            i += 2
          } else if (d === '"') {
            if (s[i + 1] === '"') {
              field += '"'
              i += 2
            } else {
              i++
              break
            }
          } else {
            field += d
            i++
          }
        }
      } else if (c === '\\') {
        field += s[i + 1] ?? ''
        i += 2
      } else {
        field += c
        i++
      }
    }
    out.push(field === '' && !quoted ? null : field)
    if (i >= end) break
    i++ // the comma
  }
  return out
}

export function serializeRecord(fields: (string | null)[]): string {
  return (
    '(' +
    fields.map(f => (f === null ? '' : f === '' || /[()",\\\s]/.test(f) ? '"' + f.replace(/["\\]/g, c => c + c) + '"' : f)).join(',') +
    ')'
  )
}

// ---- array text: {a,"b c",NULL,{d}} ---------------------------------------------------------

type Items = (string | null | Items)[]

export function parseArray(s: string): { prefix: string; items: Items } | undefined {
  let i = 0
  let prefix = ''
  if (s[0] === '[') {
    // [1:2]={…}: dimensions decoration
    const eq = s.indexOf('=')
    if (eq < 0) return undefined
    prefix = s.slice(0, eq + 1)
    i = eq + 1
  }
  const r = parseItems(s, i)
  if (!r || r.end !== s.length) return undefined
  return { prefix, items: r.items }
}

function parseItems(s: string, start: number): { items: Items; end: number } | undefined {
  if (s[start] !== '{') return undefined
  let i = start + 1
  const items: Items = []
  if (s[i] === '}') return { items, end: i + 1 }
  for (;;) {
    if (s[i] === '{') {
      const r = parseItems(s, i)
      if (!r) return undefined
      items.push(r.items)
      i = r.end
    } else if (s[i] === '"') {
      let v = ''
      i++
      for (;;) {
        if (i >= s.length) return undefined
        const c = s[i]!
        if (c === '\\') {
          v += s[i + 1] ?? ''
          i += 2
        } else if (c === '"') {
          i++
          break
        } else {
          v += c
          i++
        }
      }
      items.push(v)
    } else {
      let v = ''
      while (i < s.length && s[i] !== ',' && s[i] !== '}') {
        if (s[i] === '\\') {
          v += s[i + 1] ?? ''
          i += 2
        } else v += s[i++]
      }
      items.push(/^null$/i.test(v) ? null : v)
    }
    if (s[i] === ',') {
      i++
      continue
    }
    if (s[i] === '}') return { items, end: i + 1 }
    return undefined
  }
}

function mapArray(items: Items, f: (s: string) => string | null): Items {
  return items.map(x => (Array.isArray(x) ? mapArray(x, f) : x === null ? null : f(x)))
}

export function serializeArray(items: Items): string {
  return (
    '{' +
    items
      .map(x => (Array.isArray(x) ? serializeArray(x) : x === null ? 'NULL' : x === '' || /^null$/i.test(x) || /[{},"\\\s]/.test(x) ? '"' + x.replace(/["\\]/g, '\\$&') + '"' : x))
      .join(',') +
    '}'
  )
}
