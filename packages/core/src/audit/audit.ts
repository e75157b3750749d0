// One JSON line per operation, through pino (fast, async when writing to a file). The line is the
// AuditEvent itself: no pid/hostname noise, and nothing that could hold a credential.
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

export function createAuditLog(opts: { destination: string; stream?: NodeJS.WritableStream }): AuditLog {
  const stream =
    opts.stream ??
    (opts.destination === 'stdout'
      ? pino.destination({ dest: 1, sync: false })
      : pino.destination({ dest: opts.destination, sync: false, mkdir: true }))
  const ownsFile = !opts.stream && opts.destination !== 'stdout'
  const logger = pino(
    {
      base: null,
      timestamp: false,
      formatters: { level: (label: string) => ({ level: label }) },
    },
    stream as pino.DestinationStream,
  )
  return {
    write(event) {
      const clean: Record<string, unknown> = {}
      for (const [k, v] of Object.entries(event)) if (v !== undefined && !FORBIDDEN.has(k)) clean[k] = v
      logger.info(clean)
    },
    log(message, fields = {}) {
      const clean: Record<string, unknown> = { time: new Date().toISOString(), log: message }
      for (const [k, v] of Object.entries(fields)) if (!FORBIDDEN.has(k)) clean[k] = v
      logger.warn(clean)
    },
    async close() {
      await this.flush()
      if (ownsFile) (stream as { end?: () => void }).end?.()
    },
    flush() {
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
