// The session recorder. record() is on the hot path: it encodes, chains and copies the frame into
// the current batch buffer and returns; a flush (at the end of the shared 50 ms window, window.ts, or at once past FLUSH_BYTES)
// writes everything queued with one writev. The backlog is bounded: past it, or when the sink
// fails, `failed` is set and records are dropped (the session decides by onFailure); a recorder that
// caught up again writes a gap record so the chain stays whole and the gap stays visible.
import { createHmac, hash as oneShotHash, sign as cryptoSign, type KeyObject } from 'node:crypto'
import { close as fsClose, fdatasync, fsync, mkdir, open, writev } from 'node:fs'
import { join } from 'node:path'
import { PortcullisError } from '../errors.ts'
import type { Principal, Protocol, RecordType } from '../types.ts'
import {
  FORMAT_VERSION,
  FRAME_HEADER,
  GENESIS,
  HASH_BYTES,
  MAGIC,
  type RecordingHeader,
  type SealPayload,
  TYPE_CODES,
  packTransient,
  sealMessage,
} from './format.ts'
import { encodeBody } from './encode.ts'
import { atWindowEnd } from '../window.ts'
import { type WriteJob, forgetFile, postWrites, writerAvailable } from './writer.ts'

export interface RecorderOptions {
  dir: string
  sessionId: string
  target: string
  protocol: Protocol
  principal: Principal
  sign?: { hmacKey?: Buffer; ed25519PrivateKey?: KeyObject }
  /** kept for the session; the recorder behaves the same either way and reports through `failed` */
  onFailure?: 'block' | 'allow'
  /** bound on bytes queued but not yet written (default 8 MiB); a single larger record is replaced by a 'record-too-large' event */
  maxBacklogBytes?: number
  /** false: open and write the file from this thread with fs.writev, not through the writer thread (writer.ts) */
  writerThread?: boolean
}

export interface Recorder {
  readonly path: string
  /** set while records are being dropped (sink error: for good; backlog over bound: until it drains) */
  readonly failed: Error | undefined
  /** bytes queued and not yet written */
  readonly backlog: number
  readonly onFailure: 'block' | 'allow'
  record(type: RecordType, payload: Record<string, unknown>): void
  /** seals, flushes, fsyncs and closes the file; idempotent; never rejects (see `failed`) */
  close(reason?: string): Promise<void>
}

export const DEFAULT_MAX_BACKLOG = 8 * 1024 * 1024
// A busy recorder fills a pooled CHUNK, touched through as it fills: at 1 MiB, 50 Redis sessions under
// a pipeline held 50 MB of them (and the pool 32 MB more), a third of the gateway's RSS.
const CHUNK = 256 * 1024
// A recorder starts with a small chunk and takes a pooled CHUNK only when a burst outgrows it; once
// everything it handed is written it rewinds to the start of a small chunk (see rest()). An idle
// session therefore holds SMALL_CHUNK: 1,000 idle sessions held 1,000 MiB of SharedArrayBuffers when
// each started with a 1 MiB chunk, which the 32-chunk pool could not serve, so each login allocated
// (and zeroed) a fresh MiB and RSS climbed ~150 MiB per 1,000 sessions opened and closed.
const SMALL_CHUNK = 16 * 1024
const FLUSH_BYTES = 64 * 1024
// a busy recorder asks the disk for what it wrote every SYNC_BYTES (in the background): the disk
// works while records come in, the fsync at close finds little left to do, and a power cut loses
// less of a long recording
const SYNC_BYTES = 8 * 1024 * 1024

// Written chunks come back here for the next recorder chunk, shared by all recorders. A fresh chunk
// buffer costs a page fault per 4 KiB on first touch (the kernel zeroes each page; on a VM that
// never touched the page, far more), several times the copy and the hash together; a reused one is
// already mapped. The pool keeps what was in flight at once, up to POOL_CHUNKS chunks (a burst that
// outruns the writer by up to that much reuses the memory of the previous one), and gives all but
// POOL_IDLE_KEEP back after POOL_IDLE_MS without a take.
const POOL_CHUNKS = 32
const POOL_IDLE_KEEP = 4
const POOL_IDLE_MS = 10_000
const chunkPool: Buffer[] = []
let poolTaken = false
let poolTimer: NodeJS.Timeout | undefined

/** shared memory, so that the writer thread writes straight from it (writer.ts) */
function sharedBuffer(size: number): Buffer {
  return Buffer.from(new SharedArrayBuffer(size))
}

function takeChunk(size: number): Buffer {
  if (size <= SMALL_CHUNK) return sharedBuffer(SMALL_CHUNK)
  poolTaken = true
  if (size <= CHUNK) return chunkPool.pop() ?? sharedBuffer(CHUNK)
  return sharedBuffer(size)
}

function giveChunk(chunk: Buffer): void {
  if (chunk.length !== CHUNK || chunkPool.length >= POOL_CHUNKS) return
  chunkPool.push(chunk)
  if (chunkPool.length > POOL_IDLE_KEEP && poolTimer === undefined) {
    poolTaken = false
    poolTimer = setInterval(() => {
      if (poolTaken) {
        poolTaken = false
        return
      }
      chunkPool.length = Math.min(chunkPool.length, POOL_IDLE_KEEP)
      clearInterval(poolTimer)
      poolTimer = undefined
    }, POOL_IDLE_MS)
    poolTimer.unref()
  }
}

// One window for all recorders: the batches of every session that had records in it go to the
// writer thread in one message (writer.ts), and one timer is armed per window, not one per session.
let dueRecorders: FileRecorder[] = []
let nextFile = 1
/** flushDue is asked for at the end of the shared window (window.ts) */
let windowArmed = false

function flushDue(): void {
  windowArmed = false
  const due = dueRecorders
  dueRecorders = []
  const jobs: WriteJob[] = []
  for (const r of due) r.windowEnded(jobs)
  if (jobs.length > 0) postWrites(jobs)
}

// the writer thread boots in the background as soon as recordings may be made (writer.ts)
writerAvailable()

function isoDay(d: Date): string {
  return d.toISOString().slice(0, 10)
}

class FileRecorder implements Recorder {
  readonly path: string
  readonly onFailure: 'block' | 'allow'
  failed: Error | undefined
  private readonly maxBacklog: number
  private readonly signing: RecorderOptions['sign']
  private fd: number | undefined
  private sinkError: Error | undefined
  /** where the last chain hash sits in `chunk` (the genesis hash at 0 to begin with) */
  private prevAt = 0
  private index = 0
  private dropped = 0
  private overBound = false
  private closing: Promise<void> | undefined
  // batch: frames are appended to `chunk` at `pos`; [flushed, pos) is not yet handed to a write.
  // A chunk starts with the chain hash so far (not written out): every frame is then preceded in
  // memory by its predecessor's hash and the chain input is one contiguous slice, hashed one-shot.
  private chunk = takeChunk(SMALL_CHUNK)
  private pos = HASH_BYTES
  private flushed = HASH_BYTES
  private pending: Buffer[] = []
  private pendingBytes = 0
  // bytes ever handed to `pending` and ever written: a retired chunk is free again once `written`
  // reaches what had been handed when it was retired (writes go out in order)
  private handed = 0
  private written = 0
  private retired: { chunk: Buffer; until: number }[] = []
  private inFlight = 0
  private writing = false
  private scheduled = false
  private drainWaiters: (() => void)[] = []
  private unsynced = 0
  /** a background fdatasync in flight: close waits for it before its own fsync and close */
  private syncing: Promise<void> | undefined
  /** [0]: jobs of this recorder the writer thread has written (see writer.ts) */
  private readonly progress = new Int32Array(new SharedArrayBuffer(4))
  private jobsPosted = 0
  private jobsDone = 0
  /** writes go to the writer thread, which opened the file (else fs.writev once `fd` is known) */
  private viaWriter = false
  /** seal has taken the descriptor (to fsync and close it): one that arrives later is closed on arrival */
  private fdTaken = false
  private readonly file = nextFile++

  constructor(opts: RecorderOptions) {
    const start = new Date()
    GENESIS.copy(this.chunk, 0)
    // the session id names the file: nothing in it may climb out of the day directory
    const name = opts.sessionId.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^\.+/, '_') || '_'
    this.path = join(opts.dir, isoDay(start), `${name}.pcr`)
    this.onFailure = opts.onFailure ?? 'block'
    this.maxBacklog = opts.maxBacklogBytes ?? DEFAULT_MAX_BACKLOG
    this.signing = opts.sign
    this.appendRaw(MAGIC)
    const p = opts.principal
    const header: RecordingHeader = {
      magic: 'portcullis-recording',
      version: FORMAT_VERSION,
      sessionId: opts.sessionId,
      target: opts.target,
      protocol: opts.protocol,
      // who, never how: no token, no token id
      principal: { subject: p.subject, groups: [...p.groups], issuer: p.issuer, ...(p.expiresAt !== undefined ? { expiresAt: p.expiresAt } : {}) },
      start: start.toISOString(),
    }
    this.append('session-start', header as unknown as Record<string, unknown>, start.getTime())
    const dir = join(opts.dir, isoDay(start))
    if (opts.writerThread !== false && writerAvailable()) {
      // the writer thread opens the file ahead of its first write: records can be handed over at
      // once, without waiting for an event-loop turn to learn the descriptor (a thread still
      // booting, tens of ms after the module loaded, takes them when it runs)
      this.viaWriter = true
      postWrites([
        {
          file: this.file,
          open: { dir, path: this.path },
          parts: [],
          progress: this.progress,
          done: (err, fd) => {
            if (err) return this.sinkFailed(err)
            // the writes can be seen done (progress) before this answer is delivered: a session that
            // ended at once was sealed without a descriptor to close, and this one stayed open for
            // ever (fuzz-http: ~1 in 1,000 sessions, sealed and intact, fd never closed)
            if (this.fdTaken && fd !== undefined) return void fsync(fd, () => fsClose(fd, () => {}))
            this.fd = fd
          },
        },
      ])
      return
    }
    mkdir(dir, { recursive: true, mode: 0o750 }, err => {
      if (err) return this.sinkFailed(err)
      // 'wx': never overwrite another session's recording
      open(this.path, 'wx', 0o640, (err, fd) => {
        if (err) return this.sinkFailed(err)
        this.fd = fd
        this.flush()
      })
    })
  }

  get backlog(): number {
    return this.pendingBytes + this.inFlight + (this.pos - this.flushed)
  }

  record(type: RecordType, payload: Record<string, unknown>): void {
    if (this.closing !== undefined) return
    if (this.sinkError !== undefined) {
      this.dropped++
      return
    }
    // a write the thread finished frees its bytes here, even for a producer that never yields
    if (this.writing) this.poll()
    if (this.backlog >= this.maxBacklog) {
      this.dropped++
      if (!this.overBound) {
        this.overBound = true
        this.failed = new PortcullisError('RECORDING_FAILED', `recording is behind: more than ${this.maxBacklog} bytes not yet written`)
      }
      return
    }
    this.append(type, payload, Date.now())
  }

  private append(type: RecordType, payload: Record<string, unknown>, time: number): void {
    const code = TYPE_CODES[type]
    if (code === undefined) {
      // a type this format has no code for: keep it, as an event, rather than write an unreadable frame
      return this.append('event', { event: 'unknown-record-type', recordType: String(type), payload }, time)
    }
    // the body is encoded in place, right after its frame header in the batch buffer; a body that
    // does not fit in what is left of the buffer, or that holds what only msgpackr encodes, goes
    // through msgpackr and is copied in
    const at = this.pos
    const bodyAt = at + FRAME_HEADER + 1
    const end = encodeBody(this.chunk, bodyAt, this.chunk.length - HASH_BYTES, this.index, time, payload)
    if (end < 0) return this.appendPacked(type, code, payload, time)
    const bodyLength = end - bodyAt
    if (FRAME_HEADER + 1 + bodyLength + HASH_BYTES > this.maxBacklog) {
      return this.append('event', { event: 'record-too-large', recordType: type, bytes: bodyLength }, time)
    }
    this.chain(at, code, bodyLength)
  }

  private appendPacked(type: RecordType, code: number, payload: Record<string, unknown>, time: number): void {
    let body: Buffer
    try {
      body = packTransient([this.index, time, payload])
    } catch (err) {
      // an unencodable payload must not throw into a codec: record that it happened instead
      body = packTransient([this.index, time, { unencodable: (err as Error).message }])
    }
    const size = FRAME_HEADER + 1 + body.length + HASH_BYTES
    if (size > this.maxBacklog) {
      // one record larger than the whole buffer bound: keep its place in the chain, not its bytes
      return this.append('event', { event: 'record-too-large', recordType: type, bytes: body.length }, time)
    }
    if (this.pos + size > this.chunk.length) this.newChunk(size)
    body.copy(this.chunk, this.pos + FRAME_HEADER + 1)
    this.chain(this.pos, code, body.length)
  }

  /** frame header and chain hash around a body already in place at `at` + 9 */
  private chain(at: number, code: number, bodyLength: number): void {
    const buf = this.chunk
    const len = 1 + bodyLength + HASH_BYTES
    buf.writeUInt32BE(len, at)
    buf.writeUInt32BE(~len >>> 0, at + 4)
    buf[at + 8] = code
    const hashAt = at + FRAME_HEADER + 1 + bodyLength
    // chain: H(prev || header || type || body), prev being the 32 bytes just before `at`; the header
    // is hashed too so a length can't be edited alone
    // (a binary (latin1) string result and a write are cheaper than a Buffer result: no allocation per record)
    buf.write(oneShotHash('sha256', buf.subarray(at - HASH_BYTES, hashAt), 'binary'), hashAt, HASH_BYTES, 'binary')
    this.prevAt = hashAt
    this.pos = hashAt + HASH_BYTES
    this.index++
    this.schedule()
  }

  /** the magic: written out, but the genesis hash must stay right before the first frame */
  private appendRaw(bytes: Buffer): void {
    this.pending.push(bytes)
    this.pendingBytes += bytes.length
    this.handed += bytes.length
  }

  /** hands the unflushed part of the current chunk to `pending` and starts a new chunk */
  private newChunk(need: number): void {
    // chunks whose bytes are written go back to the pool before this one takes from it
    this.poll()
    this.takeBatch()
    const old = this.chunk
    // a chunk outgrown is a burst: a pooled CHUNK at least, never another small one — records of
    // 8–16 KB (masked SSE batches) took a fresh, zeroed SharedArrayBuffer each, and none of them fit
    // the 3 bytes per character encodeBody asks room for, so each went through msgpackr and a copy
    this.chunk = takeChunk(Math.max(HASH_BYTES + need, SMALL_CHUNK + 1))
    old.copy(this.chunk, 0, this.prevAt, this.prevAt + HASH_BYTES)
    if (this.sinkError === undefined) this.retired.push({ chunk: old, until: this.handed })
    this.prevAt = 0
    this.pos = HASH_BYTES
    this.flushed = HASH_BYTES
  }

  private takeBatch(): void {
    if (this.pos > this.flushed) {
      this.pending.push(this.chunk.subarray(this.flushed, this.pos))
      this.pendingBytes += this.pos - this.flushed
      this.handed += this.pos - this.flushed
      this.flushed = this.pos
    }
  }

  private schedule(): void {
    if (this.writing) {
      // a write the thread finished completes here, at the next record (it schedules again)
      this.poll()
      return
    }
    if (this.pos - this.flushed + this.pendingBytes >= FLUSH_BYTES) return this.flush()
    if (!this.scheduled) {
      // a small batch waits a little for more: a session doing one command per round trip would
      // otherwise cost a write (a thread-pool round trip) per command
      this.scheduled = true
      dueRecorders.push(this)
      if (!windowArmed) {
        windowArmed = true
        atWindowEnd(flushDue)
      }
    }
  }

  /** the shared window ended: its write joins `jobs` (or goes through fs.writev without a writer thread) */
  windowEnded(jobs: WriteJob[]): void {
    this.scheduled = false
    this.flush(jobs)
  }

  /** a write the writer thread finished shows in `progress` before its answer arrives */
  private poll(): void {
    if (this.writing && this.jobsDone < this.jobsPosted && Atomics.load(this.progress, 0) === this.jobsPosted) this.jobWritten(this.jobsPosted)
  }

  private jobWritten(job: number): void {
    if (job <= this.jobsDone || this.sinkError !== undefined) return
    this.jobsDone = job
    this.wrote([], undefined, this.inFlight)
  }

  /** hands everything queued to one write; `jobs`: join that list instead of posting at once */
  private flush(jobs?: WriteJob[]): void {
    this.poll()
    if (this.writing || (!this.viaWriter && this.fd === undefined) || this.sinkError !== undefined) return
    this.takeBatch()
    if (this.pending.length === 0) return this.drained()
    const bufs = this.pending
    this.pending = []
    this.inFlight = this.pendingBytes
    this.pendingBytes = 0
    this.writing = true
    if (!this.viaWriter) return this.writeAll(bufs)
    const job = ++this.jobsPosted
    const parts: Uint8Array[] = bufs.map(b => (b.buffer instanceof SharedArrayBuffer ? b : new Uint8Array(b)))
    const write: WriteJob = {
      file: this.file,
      parts,
      progress: this.progress,
      done: err => (err ? this.sinkFailed(err) : this.jobWritten(job)),
    }
    if (jobs) jobs.push(write)
    else postWrites([write])
  }

  private writeAll(bufs: Buffer[]): void {
    writev(this.fd!, bufs, (err, written) => this.wrote(bufs, err ?? undefined, written))
  }

  private wrote(bufs: Buffer[], err: Error | undefined, written: number): void {
    if (err) return this.sinkFailed(err)
    this.inFlight -= written
    this.written += written
    this.unsynced += written
    if (this.unsynced >= SYNC_BYTES && this.syncing === undefined && this.closing === undefined && this.fd !== undefined) this.syncInBackground()
    while (this.retired.length > 0 && this.retired[0].until <= this.written) giveChunk(this.retired.shift()!.chunk)
    if (this.inFlight > 0) {
      if (bufs.length === 0) return this.sinkFailed(new Error(`short write: ${written} bytes`))
      // short write: drop what was written and go on with the rest
      let skip = written
      while (skip > 0 && bufs.length > 0) {
        if (bufs[0].length <= skip) skip -= bufs.shift()!.length
        else {
          bufs[0] = bufs[0].subarray(skip)
          skip = 0
        }
      }
      return this.writeAll(bufs)
    }
    this.writing = false
    if (this.overBound && this.closing === undefined && this.backlog <= this.maxBacklog / 2) {
      // caught up: say in the chain what was lost, then accept records again
      this.overBound = false
      this.failed = undefined
      this.append('event', { event: 'recording-gap', dropped: this.dropped }, Date.now())
    }
    // what queued up behind this write waits for its own window unless it is already a full
    // batch: under steady load a write per event-loop turn would cost a thread-pool round trip
    // (tens of µs here) for a few small records each time
    if (this.closing !== undefined) this.flush()
    else if (this.pos > this.flushed || this.pendingBytes > 0) this.schedule()
    else this.rest()
  }

  /**
   * Everything handed is written and nothing waits: the chunk's bytes are needed no more (only the
   * last chain hash is), so the next record starts again at the front of a small chunk. An idle
   * session keeps SMALL_CHUNK, a CHUNK goes back to the pool for a busy one, and a session
   * doing one command per window writes into the same few warm pages instead of walking a MiB.
   */
  private rest(): void {
    if (this.retired.length > 0 || this.pos !== this.flushed || this.sinkError !== undefined) return
    const old = this.chunk
    if (old.length > SMALL_CHUNK) {
      this.chunk = takeChunk(SMALL_CHUNK)
      old.copy(this.chunk, 0, this.prevAt, this.prevAt + HASH_BYTES)
      giveChunk(old)
    } else if (this.prevAt !== 0) {
      old.copy(old, 0, this.prevAt, this.prevAt + HASH_BYTES)
    }
    this.prevAt = 0
    this.pos = HASH_BYTES
    this.flushed = HASH_BYTES
  }

  private syncInBackground(): void {
    this.unsynced = 0
    const fd = this.fd!
    this.syncing = new Promise<void>(resolve =>
      fdatasync(fd, () => {
        // an error here shows again in close's fsync or the next write; nothing to act on now
        this.syncing = undefined
        resolve()
      }),
    )
  }

  private drained(): void {
    const waiters = this.drainWaiters
    this.drainWaiters = []
    for (const w of waiters) w()
  }

  private sinkFailed(err: Error): void {
    if (this.sinkError !== undefined) return
    this.sinkError = err
    this.failed = new PortcullisError('RECORDING_FAILED', `recording to ${this.path} failed: ${err.message}`)
    this.writing = false
    this.pending = []
    this.pendingBytes = 0
    this.inFlight = 0
    this.flushed = this.pos
    // a write may still be reading them: leave them to the garbage collector
    this.retired = []
    this.drained()
  }

  close(reason?: string): Promise<void> {
    this.closing ??= this.seal(reason)
    return this.closing
  }

  private async seal(reason: string | undefined): Promise<void> {
    if (this.sinkError === undefined) {
      const records = this.index
      const lastHash = Buffer.from(this.chunk.subarray(this.prevAt, this.prevAt + HASH_BYTES))
      const seal: SealPayload = { records, lastHash }
      if (reason !== undefined) seal.reason = reason
      if (this.dropped > 0) seal.dropped = this.dropped
      if (this.failed !== undefined) seal.failed = this.failed.message
      const msg = sealMessage(lastHash, records)
      if (this.signing?.hmacKey) seal.hmac = createHmac('sha256', this.signing.hmacKey).update(msg).digest()
      if (this.signing?.ed25519PrivateKey) seal.ed25519 = cryptoSign(null, msg, this.signing.ed25519PrivateKey)
      this.append('seal', seal as unknown as Record<string, unknown>, Date.now())
      // wait until the file is open and everything queued is written (or the sink fails)
      await new Promise<void>(resolve => {
        this.drainWaiters.push(resolve)
        this.flush()
      })
      if (this.sinkError === undefined && this.written === this.handed) {
        // everything is on disk: the chunks can serve another recorder
        for (const r of this.retired) giveChunk(r.chunk)
        this.retired = []
        giveChunk(this.chunk)
        this.chunk = Buffer.alloc(0)
      }
    }
    const fd = this.fd
    this.fd = undefined
    this.fdTaken = true
    if (this.viaWriter) forgetFile(this.file)
    if (fd === undefined) return
    await this.syncing
    await new Promise<void>(resolve => fsync(fd, () => fsClose(fd, () => resolve())))
  }
}

/** Opens `<dir>/<yyyy-mm-dd>/<sessionId>.pcr` and writes the header record. Never throws for I/O: see `failed`. */
export function openRecorder(opts: RecorderOptions): Recorder {
  return new FileRecorder(opts)
}
