// When may one text's classification stand for every text of its skeleton (lexer.ts)? When the
// grammar put each replaced constant into an A_Const of its own (nowhere else: not a COPY file name,
// a DO body, a float(p) precision it turned into a type) and the analysis never looked at any of
// them. The second is watched, not listed: before the analysis runs, every A_Const body of the tree
// becomes a proxy that notes any access, and every `location` (which moves with the constants'
// lengths) a getter that does. Whatever a later analysis reads — LIMIT, SET values, set_config
// arguments, a constant-true WHERE, a value some new rule cares about — marks the text as literal-
// dependent, and it is then cached by its exact text only. What the analysis does not read cannot
// change its result.

/** Set by any read of a constant's value or of a location during one analysis. */
export interface Reads {
  value: boolean
}

/** Depth beyond which we do not instrument (the analysis has its own bound): no skeleton then. */
const MAX_DEPTH = 1000

/**
 * Instruments a statement's tree in place for `reads`; returns the byte locations of its A_Const
 * nodes, or undefined when the tree was too deep to instrument whole.
 */
export function instrument(stmt: unknown, reads: Reads): number[] | undefined {
  const constants: number[] = []
  const handler: ProxyHandler<Record<string, unknown>> = {
    get(target, key) {
      reads.value = true
      return Reflect.get(target, key)
    },
    has(target, key) {
      reads.value = true
      return Reflect.has(target, key)
    },
    ownKeys(target) {
      reads.value = true
      return Reflect.ownKeys(target)
    },
    getOwnPropertyDescriptor(target, key) {
      reads.value = true
      return Reflect.getOwnPropertyDescriptor(target, key)
    },
  }
  const visit = (value: unknown, depth: number): boolean => {
    if (value === null || typeof value !== 'object') return true
    if (depth > MAX_DEPTH) return false
    if (Array.isArray(value)) {
      for (const v of value) if (!visit(v, depth + 1)) return false
      return true
    }
    const obj = value as Record<string, unknown>
    for (const key of Object.keys(obj)) {
      const v = obj[key]
      if (key === 'A_Const' && v !== null && typeof v === 'object') {
        const body = v as Record<string, unknown>
        constants.push(typeof body.location === 'number' ? body.location : -1)
        obj[key] = new Proxy(body, handler)
      } else if (key === 'location' && typeof v === 'number') {
        Object.defineProperty(obj, key, {
          get() {
            reads.value = true
            return v
          },
          enumerable: true,
          configurable: true,
        })
      } else if (!visit(v, depth + 1)) return false
    }
    return true
  }
  return visit(stmt, 0) ? constants : undefined
}

/**
 * Is each replaced constant of the skeleton an A_Const of the tree? `literals` / `minus` are UTF-16
 * offsets from the lexer (minus: a '-' the grammar may have folded in, reported at the sign);
 * `constants` byte locations from the parse.
 */
export function everyLiteralIsConstant(sql: string, literals: number[], minus: number[], constants: number[]): boolean {
  if (literals.length === 0) return true
  const have = new Set(constants)
  const ascii = !/[^\x00-\x7f]/.test(sql)
  const bytes = (at: number): number => (ascii ? at : Buffer.byteLength(sql.slice(0, at), 'utf8'))
  for (let k = 0; k < literals.length; k++) {
    if (have.has(bytes(literals[k]!))) continue
    const m = minus[k]!
    if (m >= 0 && have.has(bytes(m))) continue
    return false
  }
  return true
}
