// /metrics of a host with several workers: each worker's Prometheus text, summed series by series.
// Every series Portcullis exports adds up across processes (counters, the histogram's buckets, sum
// and count, and the gauges: open sessions, recorder backlog, spool files and bytes; spool_full
// reads as the number of workers whose spool is full), so the sum is the host's figure. Families
// keep their first HELP/TYPE lines and their series stay together, as the text format requires.

interface Family {
  head: string[]
  series: Map<string, number>
}

/** sums the texts; a series only some workers have (a class only one has seen) is theirs alone */
export function sumMetrics(texts: string[]): string {
  const families = new Map<string, Family>()
  for (const text of texts) {
    let current: Family | undefined
    for (const line of text.split('\n')) {
      if (line === '') continue
      const head = /^# (HELP|TYPE) (\S+)/.exec(line)
      if (head) {
        const name = head[2]!
        current = families.get(name)
        if (!current) families.set(name, (current = { head: [], series: new Map() }))
        if (current.head.length < 2 && !current.head.some((l) => l.startsWith(`# ${head[1]} `))) current.head.push(line)
        continue
      }
      if (line.startsWith('#')) continue
      const sp = line.lastIndexOf(' ')
      if (sp < 0) continue
      const key = line.slice(0, sp)
      const value = Number(line.slice(sp + 1))
      if (!current) {
        // a series before any HELP line: its own family, named by the series
        const name = key.replace(/\{.*$/, '')
        current = families.get(name)
        if (!current) families.set(name, (current = { head: [], series: new Map() }))
      }
      current.series.set(key, (current.series.get(key) ?? 0) + (Number.isFinite(value) ? value : 0))
    }
  }
  const out: string[] = []
  for (const f of families.values()) {
    out.push(...f.head)
    for (const [key, n] of f.series) out.push(`${key} ${n}`)
  }
  return out.join('\n') + '\n'
}
