// Small helpers shared by the CLI commands.
export class UsageError extends Error {}

export function parseTtlSeconds(text: string): number {
  const m = /^(\d+)(s|m|h|d)?$/.exec(text.trim())
  if (!m) throw new UsageError(`--ttl must look like 90s, 30m, 1h or 1d (got ${JSON.stringify(text)})`)
  const mult = { s: 1, m: 60, h: 3600, d: 86400 }[(m[2] ?? 's') as 's' | 'm' | 'h' | 'd']
  return Number(m[1]) * mult
}

export function splitList(text: string | undefined): string[] {
  return (text ?? '')
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean)
}
