// One JSON line per operation. The line is the AuditEvent itself, after a "level" field: no
// pid/hostname noise, and nothing that could hold a credential. The line is built here with one
// JSON.stringify (the line pino would write for logger.info(event), without its per-field walk).
// The file (or stdout) sink is pino's SonicBoom, async; lines are gathered into one string and
// handed over at most WINDOW_MS later (at once past BATCH_CHARS): handed over line by line, SonicBoom
// re-measures its whole pending batch (Buffer.byteLength of a growing concatenation) per line, and
// handed over per event-loop turn, each turn under load costs a write syscall on the thread pool.
// A session's own fields (id, principal, target, protocol) are serialized once per session
// (auditHead) and spliced into each of its lines.
import { WriteStream } from 'node:fs'
import pino from 'pino'
import type { AuditEvent } from '../types.ts'

/** how long a line may wait to be handed to the sink (a crash loses at most this window) */
const WINDOW_MS = 50
const BATCH_CHARS = 64 * 1024

/** the fields every line of one session carries, as JSON text made once: see auditHead() */
export interface AuditHead {
  readonly fields: Pick<AuditEvent, 'session' | 'principal' | 'target' | 'protocol' | 'scope'>
  /** `"session":…,"principal":…,"target":…,"protocol":…` */
  readonly json: string
}

const operationJsons = new WeakMap<object, string>()

/**
 * An operation's own audit fields (class, resources, fingerprint, statement) as JSON text without
 * braces, made once per Operation object: a codec that caches its Operations (Redis: per command
 * frame) pays one JSON.stringify of them, not one per line.
 */
export function operationJson(op: { class: string; resources: readonly string[]; fingerprint: string; statement: string }): string {
  let json = operationJsons.get(op)
  if (json === undefined) {
    json = JSON.stringify({ class: op.class, resources: op.resources, fingerprint: op.fingerprint, statement: op.statement }).slice(1, -1)
    operationJsons.set(op, json)
  }
  return json
}

export function auditHead(fields: AuditHead['fields']): AuditHead {
  const json = JSON.stringify(fields)
  return { fields, json: json.slice(1, -1) }
}

export interface AuditLog {
  write(event: AuditEvent): void
  /**
   * the line write({ time, ...head.fields, ...event }) writes, without building that object;
   * `pre`: fields already serialized (operationJson) that come before the event's own
   */
  writeSession(head: AuditHead, time: string, event: Partial<AuditEvent>, pre?: string): void
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

/** forbidden keys, and the keys a session's head already wrote (an event that sets one overrides it) */
const NOT_AFTER_HEAD = new Set([...FORBIDDEN, 'time', 'session', 'principal', 'target', 'protocol'])

function splicable(event: Record<string, unknown>): boolean {
  for (const k in event) if (NOT_AFTER_HEAD.has(k)) return false
  return true
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
  // a stream handed in gets each line at once (its owner may read it straight after), unless it is
  // a file stream
  const batching = !opts.stream || opts.stream instanceof WriteStream
  let batch = ''
  let timer: NodeJS.Timeout | undefined
  const handOver = () => {
    if (timer !== undefined) {
      clearTimeout(timer)
      timer = undefined
    }
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
    if (batch.length >= BATCH_CHARS) handOver()
    else if (timer === undefined) timer = setTimeout(handOver, WINDOW_MS)
  }
  return {
    write(event) {
      put(line('info', event as unknown as Record<string, unknown>))
    },
    writeSession(head, time, event, pre) {
      const fields = event as Record<string, unknown>
      let json: string | undefined
      if (splicable(fields)) {
        try {
          json = JSON.stringify(fields)
        } catch {
          // a value JSON cannot hold: the general path says what it makes of it
        }
      }
      if (json !== undefined && pre !== undefined) json = json.length > 2 ? `{${pre},${json.slice(1)}` : `{${pre}}`
      if (json === undefined) {
        put(line('info', pre !== undefined ? { time, ...head.fields, ...(JSON.parse(`{${pre}}`) as Record<string, unknown>), ...fields } : { time, ...head.fields, ...fields }))
        return
      }
      // (an ISO time needs no escaping)
      put(json.length > 2 ? `{"level":"info","time":"${time}",${head.json},${json.slice(1)}\n` : `{"level":"info","time":"${time}",${head.json}}\n`)
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
