// One JSON line per operation. The line is the AuditEvent itself, after a "level" field: no
// pid/hostname noise, and nothing that could hold a credential. The line is built here with one
// JSON.stringify (the line pino would write for logger.info(event), without its per-field walk).
// Lines are gathered into one string and handed over at most WINDOW_MS later (at once past
// BATCH_CHARS): handed over line by line, a sink re-measures its pending text per line, and handed
// over per event-loop turn, each turn under load costs a write syscall. A file is appended to with
// one fs.writev of every batch waiting (fileSink): pino's SonicBoom (still the stdout sink) writes
// at most 16 KB per fs.write and starts the next only when the event loop sees the last one done,
// so under a Redis pipeline load (15 MB of lines a second) its backlog grew without bound in the
// heap (200 MB in 10 s). (Through the recordings' writer thread instead, postMessage alone took 3%
// of the gateway's CPU.)
// A session's own fields (id, principal, target, protocol) are serialized once per session
// (auditHead) and spliced into each of its lines.
import { close as fsClose, fsync, mkdir, open, writev, WriteStream } from 'node:fs'
import { dirname } from 'node:path'
import pino from 'pino'
import type { AuditEvent } from '../types.ts'

/** how long a line may wait to be handed to the sink (a crash loses at most this window) */
const WINDOW_MS = 50
const BATCH_CHARS = 256 * 1024

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
    // what JSON.stringify of the four fields writes, field by field (no object to build and walk)
    let resources = '['
    for (let i = 0; i < op.resources.length; i++) resources += (i === 0 ? '' : ',') + JSON.stringify(op.resources[i] ?? null)
    json = `"class":${JSON.stringify(op.class)},"resources":${resources}],"fingerprint":${JSON.stringify(op.fingerprint)},"statement":${JSON.stringify(op.statement)}`
    operationJsons.set(op, json)
  }
  return json
}

/** the fields of an operation's line after its own (auditOperation), in the order they are written */
export type OperationOutcome = Pick<AuditEvent, 'decision' | 'rule' | 'approvalId' | 'rows' | 'bytes' | 'masked' | 'durationMs' | 'error'>

const num = (n: number): string => (Number.isFinite(n) ? '' + n : 'null')
const ACTION_JSON: Record<string, string> = { allow: '"allow"', block: '"block"', approve: '"approve"' }

/**
 * `,"decision":…,"rule":…` … of an outcome, the text JSON.stringify writes for these fields in this
 * order (undefined ones left out), field by field: no walk of the object, no check of its keys (only
 * these named fields are read, so nothing else can reach the line)
 */
function outcomeJson(o: OperationOutcome): string {
  let s = ''
  if (o.decision !== undefined) s += ',"decision":' + (ACTION_JSON[o.decision] ?? JSON.stringify(o.decision))
  if (o.rule !== undefined) s += ',"rule":' + (o.rule === null ? 'null' : JSON.stringify(o.rule))
  if (o.approvalId !== undefined) s += ',"approvalId":' + JSON.stringify(o.approvalId)
  if (o.rows !== undefined) s += ',"rows":' + num(o.rows)
  if (o.bytes !== undefined) s += ',"bytes":' + num(o.bytes)
  if (o.masked !== undefined) s += ',"masked":' + num(o.masked)
  if (o.durationMs !== undefined) s += ',"durationMs":' + num(o.durationMs)
  if (o.error !== undefined) s += ',"error":' + JSON.stringify(o.error)
  return s
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
  /**
   * the line writeSession(head, time, outcome, op) writes, `op` being operationJson's text of the
   * operation: built field by field (an operation's line per Redis command, per Postgres Execute)
   */
  writeOutcome(head: AuditHead, time: string, op: string, outcome: OperationOutcome): void
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

interface Sink {
  write(text: string): void
  /** resolves once everything written before is on disk (fsync), or handed to a stream */
  flush(): Promise<void>
  /** flushes and closes a file of its own */
  close(): Promise<void>
}

/**
 * The audit file, appended to with one fs.writev at a time of everything batched since the last
 * one: a batch is a job on the thread pool, not one per 16 KB as SonicBoom's fs.write takes.
 */
function fileSink(path: string): Sink {
  let fd: number | undefined
  let opening = true
  let closed = false
  let queued: Buffer[] = []
  let writing = false
  let waiters: (() => void)[] = []
  const fail = (err: Error): void => {
    // as SonicBoom's unhandled 'error' did: an audit log that cannot be written stops the process
    // rather than let operations run unaudited
    process.nextTick(() => {
      throw new Error(`audit log ${path}: ${err.message}`)
    })
  }
  const settled = (): void => {
    if (writing || opening || (queued.length > 0 && fd !== undefined)) return
    const w = waiters
    waiters = []
    for (const f of w) f()
  }
  const writeOut = (): void => {
    if (writing || fd === undefined || queued.length === 0) return settled()
    const parts = queued
    queued = []
    writing = true
    writev(fd, parts, (err, written) => {
      writing = false
      if (err) return fail(err)
      // a short write (a full disk, a signal) leaves the rest to go first next time
      let total = 0
      for (const p of parts) total += p.length
      if (written < total) queued.unshift(Buffer.concat(parts).subarray(written))
      writeOut()
    })
  }
  mkdir(dirname(path), { recursive: true }, err => {
    if (err) {
      opening = false
      return fail(err)
    }
    open(path, 'a', 0o640, (err, opened) => {
      opening = false
      if (err) return fail(err)
      fd = opened
      writeOut()
    })
  })
  const idle = () =>
    new Promise<void>(resolve => {
      waiters.push(resolve)
      settled()
    })
  return {
    write(text) {
      if (closed) return
      queued.push(Buffer.from(text, 'utf8'))
      writeOut()
    },
    async flush() {
      await idle()
      const f = fd
      if (f !== undefined) await new Promise<void>(resolve => fsync(f, () => resolve()))
    },
    async close() {
      if (closed) return
      await this.flush()
      closed = true
      const f = fd
      fd = undefined
      if (f !== undefined) await new Promise<void>(resolve => fsClose(f, () => resolve()))
    },
  }
}

/** a stream: stdout's SonicBoom, or one handed in (never ended here) */
function streamSink(stream: NodeJS.WritableStream | ReturnType<typeof pino.destination>, owned: boolean): Sink {
  const s = stream as { write(chunk: string): unknown; end?: () => void; flush?: (cb?: (err?: Error) => void) => void }
  const flush = () =>
    new Promise<void>(resolve => {
      if (typeof s.flush === 'function' && owned) {
        try {
          s.flush(() => resolve())
        } catch {
          resolve()
        }
      } else resolve()
    })
  return {
    write: text => void s.write(text),
    flush,
    close: flush,
  }
}

export function createAuditLog(opts: { destination: string; stream?: NodeJS.WritableStream }): AuditLog {
  const sink: Sink =
    (opts.stream
      ? streamSink(opts.stream, false)
      : opts.destination === 'stdout'
        ? streamSink(pino.destination({ dest: 1, sync: false }), true)
        : fileSink(opts.destination))
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
    sink.write(text)
  }
  const put = (text: string) => {
    if (!batching) {
      sink.write(text)
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
    writeOutcome(head, time, op, outcome) {
      put(`{"level":"info","time":"${time}",${head.json},${op}${outcomeJson(outcome)}}\n`)
    },
    log(message, fields = {}) {
      put(line('warn', fields, { time: new Date().toISOString(), log: message }))
    },
    close() {
      handOver()
      return sink.close()
    },
    flush() {
      handOver()
      return sink.flush()
    },
  }
}
