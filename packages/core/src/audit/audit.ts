// One JSON line per operation. The line is the AuditEvent itself, after a "level" field: no
// pid/hostname noise, and nothing that could hold a credential. The line is built here with one
// JSON.stringify (the line pino would write for logger.info(event), without its per-field walk).
// The file (or stdout) sink is pino's SonicBoom, async; lines written in one turn of the event loop
// go to it as one string on the next (setImmediate): handed over line by line, SonicBoom
// re-measures its whole pending batch (Buffer.byteLength of a growing concatenation) per line,
// which cost more than the line itself.
import pino from 'pino'
import type { AuditEvent } from '../types.ts'

export interface AuditLog {
  write(event: AuditEvent): void
  /** operational messages (webhook failures, reload errors): same stream, marked with `log` */
  log(message: string, fields?: Record<string, unknown>): void
  flush(): Promise<void>
  /** flushes, and closes a file destination (never stdout, never a stream handed in) */
  close(): Promise<void>
}

/** keys an audit line must never carry, whatever a caller passes in */
const FORBIDDEN = new Set(['token', 'password', 'secret', 'authorization', 'credential'])

function hasForbidden(fields: Record<string, unknown>): boolean {
  for (const k in fields) if (FORBIDDEN.has(k)) return true
  return false
}

/** `{"level":"<level>",…fields}\n`; undefined values and forbidden keys left out */
function line(level: string, fields: Record<string, unknown>, first?: Record<string, unknown>): string {
  let clean = first ?? fields
  if (first !== undefined || hasForbidden(fields)) {
    clean = first ?? {}
    for (const k in fields) {
      const v = fields[k]
      if (v !== undefined && !FORBIDDEN.has(k) && Object.hasOwn(fields, k)) clean[k] = v
    }
  }
  // (JSON.stringify leaves undefined values out by itself)
  let json: string
  try {
    json = JSON.stringify(clean)
  } catch {
    // a cycle or a BigInt in an operational field: keep the line, with those values as text
    const seen = new WeakSet<object>()
    json = JSON.stringify(clean, (_k, v: unknown) => {
      if (typeof v === 'bigint') return String(v)
      if (v !== null && typeof v === 'object') {
        if (seen.has(v)) return '[Circular]'
        seen.add(v)
      }
      return v
    })
  }
  return json.length > 2 ? `{"level":"${level}",${json.slice(1)}\n` : `{"level":"${level}"}\n`
}

export function createAuditLog(opts: { destination: string; stream?: NodeJS.WritableStream }): AuditLog {
  const stream: { write(chunk: string): unknown } =
    opts.stream ??
    (opts.destination === 'stdout'
      ? pino.destination({ dest: 1, sync: false })
      : pino.destination({ dest: opts.destination, sync: false, mkdir: true }))
  const ownsFile = !opts.stream && opts.destination !== 'stdout'
  // a stream handed in gets each line at once (its owner may read it straight after)
  const batching = !opts.stream
  let batch = ''
  let scheduled = false
  const handOver = () => {
    scheduled = false
    if (batch === '') return
    const text = batch
    batch = ''
    stream.write(text)
  }
  const put = (text: string) => {
    if (!batching) {
      stream.write(text)
      return
    }
    batch += text
    if (!scheduled) {
      scheduled = true
      setImmediate(handOver)
    }
  }
  return {
    write(event) {
      put(line('info', event as unknown as Record<string, unknown>))
    },
    log(message, fields = {}) {
      put(line('warn', fields, { time: new Date().toISOString(), log: message }))
    },
    async close() {
      await this.flush()
      if (ownsFile) (stream as { end?: () => void }).end?.()
    },
    flush() {
      handOver()
      return new Promise(resolve => {
        const s = stream as { flush?: (cb?: (err?: Error) => void) => void; flushSync?: () => void }
        if (typeof s.flush === 'function' && stream !== opts.stream) {
          try {
            s.flush(() => resolve())
          } catch {
            resolve()
          }
        } else resolve()
      })
    },
  }
}
