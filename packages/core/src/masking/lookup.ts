// Rule tables for whole values: columns, JSON/hash fields, Redis keys. Built once per plan; the
// lookups allocate nothing on a hit or a miss except where noted. Several rules on one value: the
// strictest method wins (fail closed), like policy decisions.
import type { MaskMethod } from '../types.ts'
import { stricter } from './methods.ts'

function globToRegExp(glob: string, segmentChar?: string): RegExp {
  let src = ''
  for (const ch of glob) {
    if (ch === '*') src += segmentChar === undefined ? '.*' : `[^${segmentChar}]*`
    else if (ch === '?') src += segmentChar === undefined ? '.' : `[^${segmentChar}]`
    else src += ch.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')
  }
  return new RegExp(`^${src}$`, 's')
}

function put(map: Map<string, MaskMethod>, key: string, method: MaskMethod): void {
  map.set(key, stricter(map.get(key), method))
}

/**
 * Column rules: 'schema.table.column', 'table.column' or a bare 'column' (which also covers computed
 * columns without a table). Identifiers compare case-insensitively; '*' globs within one part.
 * A schema-qualified rule also matches when the codec could not tell the schema (fail closed).
 */
export class ColumnRules {
  private readonly bare = new Map<string, MaskMethod>()
  private readonly byTable = new Map<string, Map<string, MaskMethod>>()
  private readonly bySchema = new Map<string, Map<string, Map<string, MaskMethod>>>()
  private readonly globs: { parts: (RegExp | undefined)[]; method: MaskMethod }[] = []
  size = 0

  add(rule: string, method: MaskMethod): void {
    const parts = rule.toLowerCase().split('.')
    if (parts.length > 3 || parts.some(p => p.length === 0)) throw new Error(`column rule "${rule}" is not schema.table.column, table.column or column`)
    this.size++
    if (rule.includes('*') || rule.includes('?')) {
      const full: (RegExp | undefined)[] = [undefined, undefined, undefined]
      parts.forEach((p, i) => (full[3 - parts.length + i] = globToRegExp(p)))
      this.globs.push({ parts: full, method })
      return
    }
    if (parts.length === 1) return put(this.bare, parts[0], method)
    if (parts.length === 2) {
      let cols = this.byTable.get(parts[0])
      if (!cols) this.byTable.set(parts[0], (cols = new Map()))
      return put(cols, parts[1], method)
    }
    let tables = this.bySchema.get(parts[0])
    if (!tables) this.bySchema.set(parts[0], (tables = new Map()))
    let cols = tables.get(parts[1])
    if (!cols) tables.set(parts[1], (cols = new Map()))
    put(cols, parts[2], method)
  }

  lookup(schema: string | undefined, table: string | undefined, column: string): MaskMethod | undefined {
    if (this.size === 0) return undefined
    const c = column.toLowerCase()
    const t = table?.toLowerCase()
    const s = schema?.toLowerCase()
    let m = this.bare.get(c)
    if (t !== undefined) {
      const byT = this.byTable.get(t)?.get(c)
      if (byT !== undefined) m = stricter(m, byT)
      if (s !== undefined) {
        const byS = this.bySchema.get(s)?.get(t)?.get(c)
        if (byS !== undefined) m = stricter(m, byS)
      } else {
        for (const tables of this.bySchema.values()) {
          const any = tables.get(t)?.get(c)
          if (any !== undefined) m = stricter(m, any)
        }
      }
    }
    for (const g of this.globs) {
      const [ps, pt, pc] = g.parts
      if (!pc!.test(c)) continue
      if (pt !== undefined && (t === undefined || !pt.test(t))) continue
      if (ps !== undefined && s !== undefined && !ps.test(s)) continue
      m = stricter(m, g.method)
    }
    return m
  }
}

/** '*' is one segment, '**' any number of segments (none included) */
function segmentsMatch(rule: string[], i: number, path: string[], j: number): boolean {
  for (; i < rule.length; i++, j++) {
    if (rule[i] === '**') {
      for (let k = j; k <= path.length; k++) if (segmentsMatch(rule, i + 1, path, k)) return true
      return false
    }
    if (j >= path.length || (rule[i] !== '*' && rule[i] !== path[j])) return false
  }
  return j === path.length
}

/**
 * Field rules: dotted paths ('data.*.email': '*' is one segment, '**' any number) or a bare name that
 * matches the last segment anywhere ('email'). Case-insensitive. Results are cached per path: JSON
 * shapes repeat.
 */
export class FieldRules {
  private readonly bare = new Map<string, MaskMethod>()
  private readonly paths: { segs: string[]; method: MaskMethod }[] = []
  private readonly cache = new Map<string, MaskMethod | null>()
  size = 0

  add(rule: string, method: MaskMethod): void {
    const segs = rule.toLowerCase().split('.')
    if (segs.some(s => s.length === 0)) throw new Error(`field rule "${rule}" has an empty segment`)
    this.size++
    if (segs.length === 1 && segs[0] !== '*') put(this.bare, segs[0], method)
    else this.paths.push({ segs, method })
  }

  lookup(path: string): MaskMethod | undefined {
    if (this.size === 0) return undefined
    const hit = this.cache.get(path)
    if (hit !== undefined) return hit ?? undefined
    const segs = path.toLowerCase().split('.')
    let m = this.bare.get(segs[segs.length - 1])
    for (const r of this.paths) if (segmentsMatch(r.segs, 0, segs, 0)) m = stricter(m, r.method)
    if (this.cache.size >= 10_000) this.cache.clear()
    this.cache.set(path, m ?? null)
    return m
  }
}

/** Redis key rules: exact keys or globs ('*' any run, '?' one character); case-sensitive like Redis. */
export class KeyRules {
  private readonly exact = new Map<string, MaskMethod>()
  private readonly globs: { re: RegExp; method: MaskMethod }[] = []
  size = 0
  // the last key asked of and its answer: a Redis command asks of its key three or four times (may
  // it run, may its reply pass untouched, how to mask it), mostly as new strings of the same text
  private lastKey: string | undefined
  private lastMethod: MaskMethod | undefined

  add(rule: string, method: MaskMethod): void {
    this.size++
    this.lastKey = undefined
    if (rule.includes('*') || rule.includes('?')) this.globs.push({ re: globToRegExp(rule), method })
    else put(this.exact, rule, method)
  }

  lookup(key: string): MaskMethod | undefined {
    if (this.size === 0) return undefined
    if (key === this.lastKey) return this.lastMethod
    let m = this.exact.get(key)
    for (const g of this.globs) if (g.re.test(key)) m = stricter(m, g.method)
    this.lastKey = key
    this.lastMethod = m
    return m
  }
}

/** For `when.targets` / `when.subjects`: exact names or '*' globs. */
export function matchesAny(patterns: string[], value: string): boolean {
  for (const p of patterns) {
    if (p === value || p === '*') return true
    if (p.includes('*') && globToRegExp(p).test(value)) return true
  }
  return false
}
