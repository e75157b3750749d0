// compileMaskPlan: from config rules and one principal on one target to the MaskPlan the codecs use.
// Everything is decided here, once per session; the plan's methods are lookups.
import { createSecretKey, type KeyObject, randomBytes } from 'node:crypto'
import RE2 from 're2'
import { PortcullisError } from '../errors.ts'
import type { MaskMethod, MaskPlan } from '../types.ts'
import { BUILTIN, type Detector, expandDetector, DETECTORS } from './detectors.ts'
import { ColumnRules, FieldRules, KeyRules, matchesAny } from './lookup.ts'
import { MASK_METHODS, maskValue, stricter } from './methods.ts'
import { type DetectorEntry, type PatternEntry, type ScanResult, Scanner, type StreamScan } from './scanner.ts'

export interface MaskingRuleConfig {
  id: string
  when?: { targets?: string[]; groups?: string[]; subjects?: string[] }
  /** 'schema.table.column', 'table.column' or 'column' */
  columns?: string[]
  /** JSON paths ('data.*.email') or bare field names; also Redis hash fields */
  fields?: string[]
  /** Redis key globs */
  keys?: string[]
  /** names from DETECTORS */
  detectors?: string[]
  /** user regexes, RE2 syntax (no lookaround, no backreferences) */
  patterns?: { name: string; regex: string }[]
  method: MaskMethod
}

export interface MaskContext {
  target: string
  subject: string
  groups: string[]
}

/** One problem in a masking config, with the key path under `masking` (e.g. '[0].patterns[1].regex'). */
export interface MaskingConfigProblem {
  path: string
  message: string
}

function compilePattern(rule: string, name: string, regex: string): RE2 {
  try {
    return new RE2(regex, 'g')
  } catch (err) {
    throw new PortcullisError(
      'CONFIG_INVALID',
      `masking rule "${rule}": pattern "${name}" is not a valid RE2 regular expression: ${(err as Error).message} ` +
        '(RE2 runs in linear time and has no lookaround or backreferences)',
      { rule, pattern: name },
    )
  }
}

/**
 * Every problem in a list of masking rules, without compiling a plan: unknown detectors and methods,
 * invalid or empty patterns, malformed column rules, duplicate ids. For check-config.
 */
export function checkMaskingRules(rules: MaskingRuleConfig[]): MaskingConfigProblem[] {
  const problems: MaskingConfigProblem[] = []
  const ids = new Set<string>()
  rules.forEach((r, i) => {
    if (typeof r.id !== 'string' || r.id === '') problems.push({ path: `[${i}].id`, message: 'a masking rule needs an id' })
    else if (ids.has(r.id)) problems.push({ path: `[${i}].id`, message: `duplicate masking rule id "${r.id}"` })
    else ids.add(r.id)
    if (!MASK_METHODS.includes(r.method)) {
      problems.push({ path: `[${i}].method`, message: `unknown method "${String(r.method)}" (one of ${MASK_METHODS.join(', ')})` })
    }
    r.detectors?.forEach((d, j) => {
      if (expandDetector(d) === undefined) {
        problems.push({ path: `[${i}].detectors[${j}]`, message: `unknown detector "${d}" (one of ${DETECTORS.join(', ')})` })
      }
    })
    r.patterns?.forEach((p, j) => {
      if (typeof p.name !== 'string' || p.name === '') problems.push({ path: `[${i}].patterns[${j}].name`, message: 'a pattern needs a name' })
      try {
        compilePattern(r.id, p.name, p.regex)
      } catch (err) {
        problems.push({ path: `[${i}].patterns[${j}].regex`, message: (err as Error).message })
      }
    })
    r.columns?.forEach((c, j) => {
      try {
        new ColumnRules().add(c, 'redact')
      } catch (err) {
        problems.push({ path: `[${i}].columns[${j}]`, message: (err as Error).message })
      }
    })
    r.fields?.forEach((f, j) => {
      try {
        new FieldRules().add(f, 'redact')
      } catch (err) {
        problems.push({ path: `[${i}].fields[${j}]`, message: (err as Error).message })
      }
    })
  })
  return problems
}

function applies(rule: MaskingRuleConfig, ctx: MaskContext): boolean {
  const w = rule.when
  if (w === undefined) return true
  if (w.targets !== undefined && !matchesAny(w.targets, ctx.target)) return false
  if (w.subjects !== undefined && !matchesAny(w.subjects, ctx.subject)) return false
  if (w.groups !== undefined && !w.groups.some(g => ctx.groups.includes(g))) return false
  return true
}

class CompiledMaskPlan implements MaskPlan {
  readonly empty: boolean
  readonly hasDetectors: boolean
  readonly hasColumnRules: boolean
  readonly detectorMethod: MaskMethod
  readonly maxMatchLength: number
  readonly plainReplacements: boolean
  readonly hasFieldRules: boolean
  readonly hasKeyRules: boolean

  constructor(
    private readonly columns: ColumnRules,
    private readonly fields: FieldRules,
    private readonly keys: KeyRules,
    private readonly scanner: Scanner,
    private readonly hashKey: KeyObject,
  ) {
    this.hasDetectors = !scanner.empty
    this.hasColumnRules = columns.size > 0
    this.empty = columns.size === 0 && fields.size === 0 && keys.size === 0 && scanner.empty
    let m: MaskMethod | undefined
    for (const e of scanner.entries) m = stricter(m, e.method)
    for (const p of scanner.patterns) m = stricter(m, p.method)
    this.detectorMethod = m ?? 'redact'
    this.maxMatchLength = scanner.maxMatchLength
    this.plainReplacements = scanner.plainReplacements
    this.hasFieldRules = fields.size > 0
    this.hasKeyRules = keys.size > 0
  }

  forColumn(schema: string | undefined, table: string | undefined, column: string): MaskMethod | undefined {
    return this.columns.lookup(schema, table, column)
  }

  forField(path: string): MaskMethod | undefined {
    return this.fields.lookup(path)
  }

  forKey(key: string): MaskMethod | undefined {
    return this.keys.lookup(key)
  }

  apply(method: MaskMethod, value: string): string | null {
    return maskValue(method, value, this.hashKey)
  }

  scan(text: string): ScanResult {
    return this.scanner.scan(text)
  }

  scanStream(text: string, from: number, final: boolean): StreamScan {
    return this.scanner.scanStream(text, from, final)
  }

  scansFreshAfter(code: number): boolean {
    return this.scanner.freshAfter(code)
  }
}

/**
 * The mask plan for one principal on one target. Throws PortcullisError('CONFIG_INVALID') for an
 * unknown detector or method, or a pattern RE2 rejects (the message names rule and pattern).
 * `hashKey` keys the 'hash' method: keep it stable across restarts so hashes stay joinable.
 */
export function compileMaskPlan(rules: MaskingRuleConfig[], ctx: MaskContext, opts: { hashKey: Buffer }): MaskPlan {
  const columns = new ColumnRules()
  const fields = new FieldRules()
  const keys = new KeyRules()
  const detectors = new Map<Detector, { label: string; method: MaskMethod }>()
  const patterns: PatternEntry[] = []
  for (const rule of rules) {
    if (!MASK_METHODS.includes(rule.method)) {
      throw new PortcullisError('CONFIG_INVALID', `masking rule "${rule.id}": unknown method "${String(rule.method)}"`, { rule: rule.id })
    }
    // validate every rule, applicable or not, so a bad rule fails at load and not at someone's first query
    const expanded = (rule.detectors ?? []).map(name => {
      const ds = expandDetector(name)
      if (ds === undefined) {
        throw new PortcullisError('CONFIG_INVALID', `masking rule "${rule.id}": unknown detector "${name}" (one of ${DETECTORS.join(', ')})`, {
          rule: rule.id,
        })
      }
      return { name, ds }
    })
    const compiled = (rule.patterns ?? []).map(p => ({ name: p.name, re: compilePattern(rule.id, p.name, p.regex) }))
    if (!applies(rule, ctx)) continue
    const method = rule.method
    try {
      for (const c of rule.columns ?? []) columns.add(c, method)
      for (const f of rule.fields ?? []) fields.add(f, method)
    } catch (err) {
      throw new PortcullisError('CONFIG_INVALID', `masking rule "${rule.id}": ${(err as Error).message}`, { rule: rule.id })
    }
    for (const k of rule.keys ?? []) keys.add(k, method)
    for (const { name, ds } of expanded) {
      for (const d of ds) {
        const prev = detectors.get(d)
        detectors.set(d, { label: prev?.label ?? name, method: stricter(prev?.method, method) })
      }
    }
    for (const p of compiled) patterns.push({ name: p.name, re: p.re, method })
  }
  // keep the built-in order: it is the alternation's priority (specific kinds before loose ones)
  const entries: DetectorEntry[] = []
  for (const [detector, { label, method }] of [...detectors].sort((a, b) => order(a[0]) - order(b[0]))) {
    entries.push({ detector, label, method })
  }
  const key = createSecretKey(opts.hashKey)
  return new CompiledMaskPlan(columns, fields, keys, new Scanner(entries, patterns, key), key)
}

const order = (d: Detector): number => BUILTIN.indexOf(d)

/** The plan that masks nothing (before authentication, or when no rule applies). */
export const EMPTY_MASK_PLAN: MaskPlan = Object.freeze(
  new CompiledMaskPlan(new ColumnRules(), new FieldRules(), new KeyRules(), new Scanner([], [], createSecretKey(randomBytes(32))), createSecretKey(randomBytes(32))),
)
