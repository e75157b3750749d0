// One JSON line per operation. The line is the AuditEvent itself, after a "level" field: no
// pid/hostname noise, and nothing that could hold a credential. The line is built here with one
// JSON.stringify (the line pino would write for logger.info(event), without its per-field walk).
// Lines are gathered into one batch and handed over at the end of the shared 50 ms window (window.ts; at once past
// BATCH_CHARS): handed over line by line, a sink re-measures its pending text per line, and handed
// over per event-loop turn, each turn under load costs a write syscall. A file is appended to with
// one fs.writev of every batch waiting (fileSink): pino's SonicBoom (still the stdout sink) writes
// at most 16 KB per fs.write and starts the next only when the event loop sees the last one done,
// so under a Redis pipeline load (15 MB of lines a second) its backlog grew without bound in the
// heap (200 MB in 10 s). (Through the recordings' writer thread instead, postMessage alone took 3%
// of the gateway's CPU.)
// A session's own fields (id, principal, target, protocol) are serialized once per session
// (auditHead) and spliced into each of its lines. For a file, a line is not built as a string at
// all: its pieces (the head's JSON, the operation's JSON made once per Operation, the outcome's) are
// encoded one after the other into the batch buffer that goes to writev (ByteBatch).
import { close as fsClose, fsync, mkdir, open, writev, WriteStream } from 'node:fs'
import { dirname } from 'node:path'
import pino from 'pino'
import type { AuditEvent } from '../types.ts'

export { operationJson, operationText, withAuditFieldsOf, type OperationText } from './operation-json.ts'
import type { OperationText } from './operation-json.ts'
import { atWindowEnd } from '../window.ts'

/** how long a line may wait to be handed to the sink (a crash loses at most this window) */
const BATCH_CHARS = 256 * 1024
/**
 * Lines waiting for the disk, at most: past it the disk is not keeping up (or the file cannot be
 * opened, e.g. a FIFO nobody reads), and the sink fails as on a write error rather than hold the
 * gateway's memory without bound or let operations run past what is audited. 128 MiB is several
 * seconds of the heaviest load measured (a Redis pipeline writes ~15 MB of lines a second).
 */
export const MAX_AUDIT_BACKLOG_BYTES = 128 * 1024 * 1024

/** the fields every line of one session carries, as JSON text made once: see auditHead() */
export interface AuditHead {
  readonly fields: Pick<AuditEvent, 'session' | 'principal' | 'target' | 'protocol' | 'scope'>
  /** `"session":…,"principal":…,"target":…,"protocol":…` */
  readonly json: string
  /** `json` and a ',' as UTF-8, made when a file's batch first copies it (writeOutcome) */
  bytes?: Buffer
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

/** a count JSON writes as plain digits (and that the batch writes so: ByteBatch.field) */
const isCount = (n: number | undefined): boolean => n === undefined || (n >= 0 && n <= 0x7fffffff && (n | 0) === n)

/**
 * The outcome most operations have: a decision and a rule (or null), no approval, no error, counts
 * that are whole numbers. Its line is written from the bytes of `,"decision":…,"rule":…` made once
 * per decision and rule (outcomeHeadBytes) and the counts as digits: the same text outcomeJson makes.
 */
function commonOutcome(o: OperationOutcome): boolean {
  return o.decision !== undefined && ACTION_JSON[o.decision] !== undefined && o.rule !== undefined && o.approvalId === undefined && o.error === undefined &&
    isCount(o.rows) && isCount(o.bytes) && isCount(o.masked) && isCount(o.durationMs)
}

const ROWS = Buffer.from(',"rows":')
const BYTES = Buffer.from(',"bytes":')
const MASKED = Buffer.from(',"masked":')
const DURATION = Buffer.from(',"durationMs":')
const LINE_END = Buffer.from('}\n')
/** the four counts' names and digits (10 each at most) and the line's end */
const MAX_NUMBERS_BYTES = ROWS.length + BYTES.length + MASKED.length + DURATION.length + 4 * 10 + LINE_END.length
/** per decision, per rule: the bytes of `,"decision":…,"rule":…` (rules come from the config: few; cleared past 1,024) */
const outcomeHeads = new Map<string, Map<string | null, Buffer>>()
let outcomeHeadCount = 0

/**
 * `text` as UTF-8 in an ArrayBuffer of its own, for bytes kept as long as what they belong to (a
 * cached Operation, a session, the outcome heads): Buffer.from of a short text is a slice of Node's
 * shared 8 KiB pool, and one slice kept alive keeps its whole slab. The classifier caches' Operations
 * each kept one (README, *Where the RSS that stays is*: 2,033 slabs, 15.9 MiB, for ~0.3 KiB of
 * text each, the fuzz runs' "array buffers" that grew batch after batch).
 */
function ownBytes(text: string): Buffer {
  const b = Buffer.allocUnsafeSlow(Buffer.byteLength(text))
  b.write(text)
  return b
}

function outcomeHeadBytes(decision: string, rule: string | null): Buffer {
  let byRule = outcomeHeads.get(decision)
  if (byRule === undefined) outcomeHeads.set(decision, (byRule = new Map()))
  let b = byRule.get(rule)
  if (b === undefined) {
    if (outcomeHeadCount >= 1024) {
      for (const m of outcomeHeads.values()) m.clear()
      outcomeHeadCount = 0
    }
    b = ownBytes(outcomeJson({ decision: decision as OperationOutcome['decision'], rule }))
    byRule.set(rule, b)
    outcomeHeadCount++
  }
  return b
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
   * why the audit file cannot be written, while it cannot (a write error, a disk not keeping up):
   * Session refuses operations until this is undefined again
   */
  failure(): Error | undefined
  /**
   * the line writeSession(head, time, outcome, op) writes, `op` being operationJson's text of the
   * operation: built field by field (an operation's line per Redis command, per Postgres Execute)
   */
  writeOutcome(head: AuditHead, time: string, op: string | OperationText, outcome: OperationOutcome): void
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
  /** why the destination cannot be written now (a file sink only), else undefined */
  failure?(): Error | undefined
  /** bytes to append as they are; `written` once the sink needs them no more (file sink only) */
  writeBytes?(bytes: Buffer, written: () => void): void
  /** resolves once everything written before is on disk (fsync), or handed to a stream */
  flush(): Promise<void>
  /** flushes and closes a file of its own */
  close(): Promise<void>
}

/**
 * The audit file, appended to with one fs.writev at a time of everything batched since the last
 * one: a batch is a job on the thread pool, not one per 16 KB as SonicBoom's fs.write takes.
 *
 * When the file cannot be written (a write error such as ENOSPC or EIO, a file that cannot be
 * opened, or more than MAX_AUDIT_BACKLOG_BYTES waiting because the disk is not keeping up) the sink
 * fails: what waits is dropped and counted, `failure()` says why, and Session refuses every
 * operation until a write succeeds again (fail closed: nothing runs that the audit does not hold).
 * It tries again every RETRY_MS, first with a line that says how many lines were lost.
 */
function fileSink(path: string): Sink {
  let fd: number | undefined
  let opening = false
  let closed = false
  let queued: Buffer[] = []
  /** for each queued buffer, what to call once it is written or dropped (or undefined) */
  let queuedDone: ((() => void) | undefined)[] = []
  /** bytes in `queued` and in the writev in flight */
  let backlog = 0
  let failure: Error | undefined
  let lost = 0
  /** the line about the loss is being written: lines from now on queue behind it, none is dropped */
  let recovering = false
  let retry: NodeJS.Timeout | undefined
  let writing = false
  let waiters: (() => void)[] = []
  const fail = (err: Error): void => {
    recovering = false
    if (!failure) {
      failure = new Error(`audit log ${path}: ${err.message}`)
      // the one place that still reaches an operator when the audit log itself is what failed
      process.stderr.write(`portcullis: ${failure.message}; operations are refused until it can be written again\n`)
    }
    for (const b of queued) lost += lineCount(b)
    // (the batch buffers go back to their owners: dropped, they are needed no more)
    for (const d of queuedDone) d?.()
    queued = []
    queuedDone = []
    backlog = 0
    retry ??= setTimeout(tryAgain, RETRY_MS)
    retry.unref()
    settled()
  }
  const tryAgain = (): void => {
    retry = undefined
    if (closed || !failure) return
    // a file that could not be opened is opened again; an open still pending (a FIFO without a
    // reader) is not doubled: it holds a thread of the pool until it returns
    if (fd === undefined) return opening ? void (retry = setTimeout(tryAgain, RETRY_MS).unref()) : openFile()
    writeOut()
  }
  const settled = (): void => {
    if (writing || opening || (queued.length > 0 && fd !== undefined && (!failure || recovering))) return
    const w = waiters
    waiters = []
    for (const f of w) f()
  }
  const writeOut = (): void => {
    if (writing || fd === undefined) return settled()
    // failed: the first write is the line that says what was lost; it succeeding ends the failure
    const parts = failure ? [Buffer.from(line('error', { time: new Date().toISOString(), log: 'audit lines lost: the audit log could not be written', error: failure.message, lost }))] : queued
    if (parts.length === 0) return settled()
    const done = failure ? [] : queuedDone
    if (failure) recovering = true
    else {
      queued = []
      queuedDone = []
    }
    writing = true
    writev(fd, parts, (err, written) => {
      writing = false
      if (err) return fail(err)
      let total = 0
      for (const p of parts) total += p.length
      if (failure) {
        if (written < total) return fail(new Error('short write'))
        failure = undefined
        recovering = false
        lost = 0
        process.stderr.write(`portcullis: audit log ${path} is written again\n`)
        return writeOut()
      }
      // a short write (a full disk, a signal) leaves the rest to go first next time (as a copy:
      // the parts' buffers go back to their owners now)
      backlog -= written
      if (written < total) {
        queued.unshift(Buffer.from(Buffer.concat(parts).subarray(written)))
        queuedDone.unshift(undefined)
      }
      for (const d of done) d?.()
      writeOut()
    })
  }
  const openFile = (): void => {
    opening = true
    mkdir(dirname(path), { recursive: true }, err => {
      if (err) {
        opening = false
        return fail(err)
      }
      open(path, 'a', 0o640, (err, opened) => {
        opening = false
        if (err) return fail(err)
        if (closed) return fsClose(opened, () => {})
        fd = opened
        writeOut()
      })
    })
  }
  openFile()
  const idle = () =>
    new Promise<void>(resolve => {
      waiters.push(resolve)
      settled()
    })
  return {
    write(text) {
      if (closed) return
      if (failure && !recovering) {
        lost += lineCount(text)
        return
      }
      const b = Buffer.from(text, 'utf8')
      queued.push(b)
      queuedDone.push(undefined)
      backlog += b.length
      if (backlog > MAX_AUDIT_BACKLOG_BYTES) return fail(new Error(`${backlog} bytes of lines wait for the disk (at most ${MAX_AUDIT_BACKLOG_BYTES}): it is not keeping up`))
      writeOut()
    },
    writeBytes(bytes, written) {
      if (closed) return written()
      if (failure && !recovering) {
        lost += lineCount(bytes)
        return written()
      }
      queued.push(bytes)
      queuedDone.push(written)
      backlog += bytes.length
      if (backlog > MAX_AUDIT_BACKLOG_BYTES) return fail(new Error(`${backlog} bytes of lines wait for the disk (at most ${MAX_AUDIT_BACKLOG_BYTES}): it is not keeping up`))
      writeOut()
    },
    failure: () => failure,
    async flush() {
      await idle()
      const f = fd
      if (f !== undefined) await new Promise<void>(resolve => fsync(f, () => resolve()))
    },
    async close() {
      if (closed) return
      await this.flush()
      closed = true
      if (retry) clearTimeout(retry)
      const f = fd
      fd = undefined
      if (f !== undefined) await new Promise<void>(resolve => fsClose(f, () => resolve()))
    },
  }
}

const RETRY_MS = 5000

function lineCount(text: string | Buffer): number {
  const b = typeof text === 'string' ? Buffer.from(text) : text
  let n = 0
  for (let i = b.indexOf(10); i !== -1; i = b.indexOf(10, i + 1)) n++
  return n
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

const LINE_START = '{"level":"info","time":"'

/** Lines as UTF-8 bytes in a batch buffer, handed to a file sink whole; buffers come back once written. */
class ByteBatch {
  private buf: Buffer | undefined
  pos = 0
  private readonly free: Buffer[] = []

  /** makes room for `max` more bytes, handing the batch over first when they would not fit */
  room(sink: Sink, max: number): void {
    if (this.buf !== undefined && this.pos + max <= this.buf.length) return
    if (this.pos > 0) this.handOver(sink)
    if (this.buf === undefined || max > this.buf.length) {
      const spare = this.free.pop()
      this.buf = spare !== undefined && spare.length >= max ? spare : Buffer.allocUnsafeSlow(Math.max(BATCH_CHARS + BATCH_CHARS / 4, max))
    }
  }

  put(text: string): void {
    this.pos += this.buf!.write(text, this.pos)
  }

  /** bytes already encoded (a copy: no string to flatten and encode) */
  copy(bytes: Uint8Array): void {
    this.buf!.set(bytes, this.pos)
    this.pos += bytes.length
  }

  /** `name` (its bytes) and a count 0…2^31-1 as the digits JSON writes for it */
  field(name: Uint8Array, n: number): void {
    this.copy(name)
    const buf = this.buf!
    let digits = 1
    for (let x = n; x >= 10; x = Math.floor(x / 10)) digits++
    let at = this.pos + digits
    this.pos = at
    do {
      buf[--at] = 48 + (n % 10)
      n = Math.floor(n / 10)
    } while (n > 0)
  }

  putReplacingFirst(text: string, byte: number): void {
    const at = this.pos
    this.put(text)
    this.buf![at] = byte
  }

  handOver(sink: Sink): void {
    const buf = this.buf
    if (buf === undefined || this.pos === 0) return
    const bytes = buf.subarray(0, this.pos)
    this.buf = undefined
    this.pos = 0
    // a few buffers at most: more in flight than that means the disk is behind, and those are let go
    sink.writeBytes!(bytes, () => {
      if (this.free.length < 4 && buf.length <= BATCH_CHARS * 2) this.free.push(buf)
    })
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
  /** the hand-over is asked for at the end of the shared window (window.ts) */
  let armed = false
  // a file sink takes the batch as bytes: each line's pieces are encoded straight into a batch
  // buffer (one of a few, reused once written), with no line string, no batch string to join and
  // no conversion of it at hand-over (the line's text and its copy were a query's largest garbage)
  const bytes = batching && sink.writeBytes !== undefined ? new ByteBatch() : undefined
  // `{"level":"info","time":"<time>",` as bytes, for the last time a line had (writeOutcome)
  let startOf = ''
  let start = Buffer.alloc(0)
  const handOver = () => {
    if (bytes !== undefined) return bytes.handOver(sink)
    if (batch === '') return
    const text = batch
    batch = ''
    sink.write(text)
  }
  const windowEnded = () => {
    armed = false
    handOver()
  }
  const queued = (size: number) => {
    if (size >= BATCH_CHARS) handOver()
    else if (!armed) {
      armed = true
      atWindowEnd(windowEnded)
    }
  }
  const put = (text: string) => {
    if (bytes !== undefined) {
      bytes.room(sink, text.length * 3)
      bytes.put(text)
      return queued(bytes.pos)
    }
    if (!batching) {
      sink.write(text)
      return
    }
    batch += text
    queued(batch.length)
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
      if (json === undefined) {
        put(line('info', pre !== undefined ? { time, ...head.fields, ...(JSON.parse(`{${pre}}`) as Record<string, unknown>), ...fields } : { time, ...head.fields, ...fields }))
        return
      }
      if (bytes !== undefined) {
        // the same line as below, piece by piece: `{"level":"info","time":"T",HEAD[,PRE][,REST]}\n`
        // (an ISO time needs no escaping)
        bytes.room(sink, (LINE_START.length + time.length + 2 + head.json.length + 1 + (pre?.length ?? 0) + json.length + 2) * 3)
        bytes.put(LINE_START)
        bytes.put(time)
        bytes.put('",')
        bytes.put(head.json)
        if (pre !== undefined) {
          bytes.put(',')
          bytes.put(pre)
        }
        // REST is json without its brace: written whole, its '{' then becomes the ','
        if (json.length > 2) bytes.putReplacingFirst(json, 0x2c)
        else bytes.put('}')
        bytes.put('\n')
        return queued(bytes.pos)
      }
      if (pre !== undefined) json = json.length > 2 ? `{${pre},${json.slice(1)}` : `{${pre}}`
      // (an ISO time needs no escaping)
      put(json.length > 2 ? `${LINE_START}${time}",${head.json},${json.slice(1)}\n` : `${LINE_START}${time}",${head.json}}\n`)
    },
    failure: () => sink.failure?.(),
    writeOutcome(head, time, op, outcome) {
      if (bytes !== undefined && typeof op !== 'string') {
        const rest = commonOutcome(outcome) ? undefined : outcomeJson(outcome)
        // the same line from pieces whose bytes are made once: the line's start up to the time's
        // end once per millisecond, the session's fields once per session, the operation's once
        // per Operation; only the outcome is encoded per line
        if (time !== startOf) {
          startOf = time
          start = Buffer.from(`${LINE_START}${time}",`)
        }
        const headBytes = (head.bytes ??= ownBytes(head.json + ','))
        const opBytes = (op.bytes ??= ownBytes(op.json))
        const outcomeHead = commonOutcome(outcome) ? outcomeHeadBytes(outcome.decision!, outcome.rule!) : undefined
        bytes.room(sink, start.length + headBytes.length + opBytes.length + (outcomeHead === undefined ? (rest!.length + 2) * 3 : outcomeHead.length + MAX_NUMBERS_BYTES))
        bytes.copy(start)
        bytes.copy(headBytes)
        bytes.copy(opBytes)
        if (outcomeHead === undefined) bytes.put(rest! + '}\n')
        else {
          // decision and rule copied, the counts written as digits: no text made for the outcome
          bytes.copy(outcomeHead)
          if (outcome.rows !== undefined) bytes.field(ROWS, outcome.rows)
          if (outcome.bytes !== undefined) bytes.field(BYTES, outcome.bytes)
          if (outcome.masked !== undefined) bytes.field(MASKED, outcome.masked)
          if (outcome.durationMs !== undefined) bytes.field(DURATION, outcome.durationMs)
          bytes.copy(LINE_END)
        }
        return queued(bytes.pos)
      }
      put(`${LINE_START}${time}",${head.json},${typeof op === 'string' ? op : op.json}${outcomeJson(outcome)}}\n`)
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
