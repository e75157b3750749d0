// Prometheus text exposition, hand-written: a handful of series does not need a dependency.
export const DURATION_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

function escapeLabel(v: string) {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"')
}

export class Metrics {
  sessions = 0
  readonly #operations = new Map<string, { n: number }>()
  readonly #bytes = new Map<string, number>()
  readonly #buckets = new Array<number>(DURATION_BUCKETS.length).fill(0)
  #durationSum = 0
  #durationCount = 0
  /** sums the recorder backlog of open sessions at render time */
  backlog: () => number = () => 0
  /** recording.upload: sealed recordings waiting for the object store (absent without uploads) */
  spool: (() => { files: number; bytes: number; full: boolean }) | undefined

  operation(cls: string, decision: string): void {
    // one counter object per (class, decision), found by two lookups of short strings: no label
    // text built or hashed per operation
    let byDecision = this.#counters.get(cls)
    if (byDecision === undefined) this.#counters.set(cls, (byDecision = new Map()))
    let counter = byDecision.get(decision)
    if (counter === undefined) {
      const key = `class="${escapeLabel(cls)}",decision="${escapeLabel(decision)}"`
      counter = this.#operations.get(key)
      if (counter === undefined) this.#operations.set(key, (counter = { n: 0 }))
      byDecision.set(decision, counter)
    }
    counter.n++
  }
  readonly #counters = new Map<string, Map<string, { n: number }>>()

  bytes(direction: 'in' | 'out', n: number): void {
    if (!(n > 0)) return
    this.#bytes.set(direction, (this.#bytes.get(direction) ?? 0) + n)
  }

  duration(seconds: number): void {
    if (!(seconds >= 0)) return
    for (let i = 0; i < DURATION_BUCKETS.length; i++) if (seconds <= DURATION_BUCKETS[i]) this.#buckets[i]++
    this.#durationSum += seconds
    this.#durationCount++
  }

  render(): string {
    const lines: string[] = []
    lines.push('# HELP portcullis_sessions Open client sessions.', '# TYPE portcullis_sessions gauge')
    lines.push(`portcullis_sessions ${this.sessions}`)
    lines.push('# HELP portcullis_operations_total Operations decided, by class and decision.')
    lines.push('# TYPE portcullis_operations_total counter')
    for (const [labels, c] of this.#operations) lines.push(`portcullis_operations_total{${labels}} ${c.n}`)
    lines.push('# HELP portcullis_bytes_total Bytes through the gateway, by direction.')
    lines.push('# TYPE portcullis_bytes_total counter')
    for (const [dir, n] of this.#bytes) lines.push(`portcullis_bytes_total{direction="${dir}"} ${n}`)
    lines.push('# HELP portcullis_operation_duration_seconds Time from request to completed response.')
    lines.push('# TYPE portcullis_operation_duration_seconds histogram')
    DURATION_BUCKETS.forEach((le, i) =>
      lines.push(`portcullis_operation_duration_seconds_bucket{le="${le}"} ${this.#buckets[i]}`),
    )
    lines.push(`portcullis_operation_duration_seconds_bucket{le="+Inf"} ${this.#durationCount}`)
    lines.push(`portcullis_operation_duration_seconds_sum ${this.#durationSum}`)
    lines.push(`portcullis_operation_duration_seconds_count ${this.#durationCount}`)
    lines.push('# HELP portcullis_recorder_backlog Records waiting to be written, all sessions.')
    lines.push('# TYPE portcullis_recorder_backlog gauge')
    lines.push(`portcullis_recorder_backlog ${this.backlog()}`)
    const spool = this.spool?.()
    if (spool) {
      lines.push('# HELP portcullis_recording_spool_files Sealed recordings waiting for upload.', '# TYPE portcullis_recording_spool_files gauge')
      lines.push(`portcullis_recording_spool_files ${spool.files}`)
      lines.push('# HELP portcullis_recording_spool_bytes Bytes of sealed recordings waiting for upload.', '# TYPE portcullis_recording_spool_bytes gauge')
      lines.push(`portcullis_recording_spool_bytes ${spool.bytes}`)
      lines.push('# HELP portcullis_recording_spool_full 1 while the spool is at recording.upload.maxSpool.', '# TYPE portcullis_recording_spool_full gauge')
      lines.push(`portcullis_recording_spool_full ${spool.full ? 1 : 0}`)
    }
    return lines.join('\n') + '\n'
  }
}
