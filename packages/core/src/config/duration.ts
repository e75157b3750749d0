const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }

/** `30s`, `5m`, `1h`, `250ms`, `1d` or a number of milliseconds. */
export function parseDuration(value: string | number): number {
  if (typeof value === 'number') {
    if (!Number.isFinite(value) || value < 0) throw new RangeError(`bad duration: ${value}`)
    return value
  }
  const m = /^(\d+(?:\.\d+)?)(ms|s|m|h|d)$/.exec(value.trim())
  if (!m) throw new RangeError(`bad duration: ${value} (use 30s, 5m, 1h or milliseconds)`)
  return Math.round(Number(m[1]) * UNIT_MS[m[2]])
}
