import { createHash } from 'node:crypto'

/** Short sha256 (16 hex) of a statement with whitespace collapsed: the approval-window key. */
export function fingerprint(text: string): string {
  const normalized = text.trim().replace(/\s+/g, ' ')
  return createHash('sha256').update(normalized).digest('hex').slice(0, 16)
}
