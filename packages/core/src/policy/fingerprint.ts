import { createHash } from 'node:crypto'

/** Short sha256 (16 hex) of a statement with whitespace collapsed: the approval-window key. */
export function fingerprint(text: string): string {
  const normalized = text.trim().replace(/\s+/g, ' ')
  return createHash('sha256').update(normalized).digest('hex').slice(0, 16)
}

const versions = new WeakMap<object, string>()
/**
 * The policy version an approval request binds to: a short hash of the rules in force (their JSON,
 * in order). Computed once per config generation.
 */
export function policyVersion(rules: readonly object[]): string {
  let v = versions.get(rules)
  if (v === undefined) {
    v = createHash('sha256').update(JSON.stringify(rules)).digest('hex').slice(0, 16)
    versions.set(rules, v)
  }
  return v
}

/** the hash a request binds to when a codec gives no statement as sent: the normalized text */
export function statementHash(text: string, parameters: readonly (string | Buffer | null)[] = []): string {
  const h = createHash('sha256').update(text)
  for (const p of parameters) {
    // a length prefix per value: ('a','bc') and ('ab','c') hash apart, NULL apart from ''
    if (p === null) h.update('\u0000N')
    else {
      const b = typeof p === 'string' ? Buffer.from(p, 'utf8') : p
      h.update(`\u0000${b.length}:`).update(b)
    }
  }
  return h.digest('hex')
}
