// audit.reads: summary — a session's allowed reads counted into one audit line per SUMMARY_READS
// reads, or once the oldest counted read is SUMMARY_MS old (checked at the next read; the session's
// end writes what is left), listing at most SUMMARY_DISTINCT fingerprints and resources (the rest
// are counted). Writes, deletes, admin and every refusal keep their own lines (session.ts audit()).
import type { AuditEvent } from '../types.ts'

const SUMMARY_READS = 1000
const SUMMARY_MS = 10_000
const SUMMARY_DISTINCT = 64

export class ReadSummary {
  #n = 0
  #since = 0
  #bytes = 0
  #masked = 0
  #durationMs = 0
  #fingerprints = new Set<string>()
  #resources = new Set<string>()
  #more = 0

  /** counts one read; returns the summary line when it is due */
  count(event: Partial<AuditEvent>, now: number): Partial<AuditEvent> | undefined {
    if (this.#n === 0) this.#since = now
    this.#n++
    this.#bytes += event.bytes ?? 0
    this.#masked += event.masked ?? 0
    this.#durationMs += event.durationMs ?? 0
    if (event.fingerprint !== undefined) this.#add(this.#fingerprints, event.fingerprint)
    for (const res of event.resources ?? []) this.#add(this.#resources, res)
    return this.#n >= SUMMARY_READS || now - this.#since >= SUMMARY_MS ? this.take() : undefined
  }

  /** the summary line of the reads counted so far (undefined when there are none), and a fresh count */
  take(): Partial<AuditEvent> | undefined {
    if (this.#n === 0) return undefined
    const line = {
      class: 'read',
      decision: 'allow',
      reads: this.#n,
      fingerprints: [...this.#fingerprints],
      resources: [...this.#resources],
      ...(this.#more > 0 ? { distinctLeftOut: this.#more } : {}),
      bytes: this.#bytes,
      masked: this.#masked,
      durationMs: this.#durationMs,
    } as Partial<AuditEvent>
    this.#n = this.#bytes = this.#masked = this.#durationMs = this.#more = 0
    this.#fingerprints = new Set()
    this.#resources = new Set()
    return line
  }

  #add(seen: Set<string>, value: string): void {
    if (seen.has(value)) return
    if (seen.size < SUMMARY_DISTINCT) seen.add(value)
    else this.#more++
  }
}
