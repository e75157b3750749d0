export function median(xs: number[]): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2
}

/** nearest-rank percentile over an unsorted sample; p in 0..100 */
export function percentile(xs: number[] | Float64Array, p: number): number {
  if (xs.length === 0) return NaN
  const s = Float64Array.from(xs).sort()
  const rank = Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))
  return s[rank]
}

/** the median, run by run, of each numeric field of repeated measurements */
export function medianOf<T extends Record<string, number>>(runs: T[]): T {
  const out: Record<string, number> = {}
  for (const key of Object.keys(runs[0] ?? {})) out[key] = median(runs.map(r => r[key]))
  return out as T
}
