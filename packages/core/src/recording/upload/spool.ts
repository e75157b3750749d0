// Sealed recordings leave the machine: each one is PUT to the object store, confirmed, and only then
// removed. The recording directory is the spool: a recording is written there as always, handed
// here once sealed (or, at start, found there from a previous run that crashed), and stays there
// until the store has confirmed it.
//
// Confirmed means: the PUT carried Content-MD5 of the file as read from disk (a store that checks it
// refuses a body that differs), and a HEAD afterwards reports the same length and an ETag equal to
// that MD5 (a single-part PUT's ETag is the MD5 of the object, on S3 and s3rver alike). Anything
// else (a refused connection, a 5xx, a mismatch) puts the file back at the head of the queue and
// the uploader backs off exponentially (250 ms doubling, up to maxRetryDelay, with jitter) and
// tries again, for ever: nothing is dropped. The spool is bounded by the bytes of sealed recordings
// waiting: past maxSpoolBytes, `full` is set and the sessions act on it by recording.onFailure.
import { createHash } from 'node:crypto'
import { createReadStream, statSync } from 'node:fs'
import { readdir, rmdir, unlink } from 'node:fs/promises'
import { basename, dirname, join } from 'node:path'
import { HeadObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3'
import type { RecordingUploadConfig } from '../../config/types.ts'
import type { SecretRef } from '../../types.ts'
import { s3Client } from './s3.ts'

/** S3's limit for one PUT; a larger recording stays in the spool (and says so) */
export const SINGLE_PUT_MAX = 5 * 1024 ** 3
const CONCURRENCY = 2
const INITIAL_RETRY_DELAY_MS = 250
const DAY_DIR = /^\d{4}-\d{2}-\d{2}$/

export interface UploaderOptions {
  config: RecordingUploadConfig
  secret(ref: SecretRef): Promise<string>
  /** operational log (the audit log's `log`); gets no credential, ever */
  log(message: string, fields?: Record<string, unknown>): void
  now?: () => number
}

export interface Uploader {
  /** a recording being written: a resume scan leaves it alone */
  opened(path: string): void
  /** a recording sealed and closed: it is queued for upload */
  sealed(path: string): void
  /** queues the recordings a previous run left in `dir` (`<dir>/<yyyy-mm-dd>/*.pcr`); answers how many */
  resume(dir: string): Promise<number>
  /** bytes of recordings waiting for the store (queued, in flight, or too large to PUT) */
  readonly spoolBytes: number
  /** recordings waiting */
  readonly spoolFiles: number
  /** spoolBytes has reached maxSpoolBytes */
  readonly full: boolean
  /** the object key a recording file goes to */
  keyOf(path: string): string
  /** resolves when nothing is queued or in flight (or when the uploader is closed) */
  idle(): Promise<void>
  /**
   * stops after at most `waitMs` of trying to empty the queue; what is left stays in the spool
   * for the next start (resume)
   */
  close(waitMs?: number): Promise<void>
}

interface Entry {
  path: string
  size: number
}

function describe(err: unknown): string {
  const e = err as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } }
  const status = e?.$metadata?.httpStatusCode
  return `${e?.name ?? 'Error'}: ${e?.message ?? String(err)}${status ? ` (HTTP ${status})` : ''}`
}

function md5Of(path: string): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const h = createHash('md5')
    createReadStream(path)
      .on('data', chunk => h.update(chunk))
      .on('error', reject)
      .on('end', () => resolve(h.digest()))
  })
}

class S3Uploader implements Uploader {
  readonly #cfg: RecordingUploadConfig
  readonly #client: S3Client
  readonly #log: UploaderOptions['log']
  readonly #now: () => number
  readonly #queue: Entry[] = []
  /** queued, in flight or stuck: never queued twice */
  readonly #known = new Set<string>()
  readonly #live = new Set<string>()
  readonly #abort = new AbortController()
  #inFlight = 0
  #bytes = 0
  #files = 0
  #delay = 0
  #timer: NodeJS.Timeout | undefined
  #outage = false
  #wasFull = false
  #stopped = false
  #idleWaiters: (() => void)[] = []

  constructor(opts: UploaderOptions) {
    this.#cfg = opts.config
    this.#client = s3Client(opts.config.s3, opts.secret)
    this.#log = opts.log
    this.#now = opts.now ?? Date.now
  }

  get spoolBytes(): number {
    return this.#bytes
  }

  get spoolFiles(): number {
    return this.#files
  }

  get full(): boolean {
    return this.#bytes >= this.#cfg.maxSpoolBytes
  }

  keyOf(path: string): string {
    // <prefix><yyyy-mm-dd>/<session>.pcr: the same layout as the recording directory
    return `${this.#cfg.s3.prefix}${basename(dirname(path))}/${basename(path)}`
  }

  opened(path: string): void {
    this.#live.add(path)
  }

  sealed(path: string): void {
    this.#live.delete(path)
    this.#add(path)
  }

  async resume(dir: string): Promise<number> {
    let days
    try {
      days = await readdir(dir, { withFileTypes: true })
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0
      throw err
    }
    let n = 0
    for (const d of days) {
      if (!d.isDirectory() || !DAY_DIR.test(d.name)) continue
      for (const f of await readdir(join(dir, d.name))) {
        const path = join(dir, d.name, f)
        // a recording this process is writing is not a leftover
        if (!f.endsWith('.pcr') || this.#live.has(path) || this.#known.has(path)) continue
        if (this.#add(path)) n++
      }
    }
    if (n > 0) this.#log('recordings left by a previous run queued for upload', { files: n })
    return n
  }

  /** synchronous, so that the spool counts a recording from the moment its session ends */
  #add(path: string): boolean {
    if (this.#known.has(path)) return false
    this.#known.add(path)
    let size: number
    try {
      size = statSync(path).size
    } catch (err) {
      this.#known.delete(path)
      // a recorder that never managed to create its file has nothing to upload
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.#log('recording cannot be read for upload', { path, error: describe(err) })
      return false
    }
    this.#bytes += size
    this.#files++
    this.#watchBound()
    if (size > SINGLE_PUT_MAX) {
      this.#log('recording too large for one upload; it stays in the spool', { path, bytes: size })
      return true
    }
    this.#queue.push({ path, size })
    this.#pump()
    return true
  }

  /** says once when the spool crosses its bound, and once when it is back under it */
  #watchBound(): void {
    if (this.full === this.#wasFull) return
    this.#wasFull = this.full
    if (this.full) this.#log('recording spool full: uploads are behind; recording.onFailure applies', { waiting: this.#files, bytes: this.#bytes, maxSpoolBytes: this.#cfg.maxSpoolBytes })
    else this.#log('recording spool below its bound again', { waiting: this.#files, bytes: this.#bytes })
  }

  #pump(): void {
    if (this.#stopped || this.#timer !== undefined) return
    while (this.#inFlight < CONCURRENCY && this.#queue.length > 0) {
      const e = this.#queue.shift()!
      this.#inFlight++
      this.#upload(e).then(
        () => {
          this.#known.delete(e.path)
          this.#bytes -= e.size
          this.#files--
          this.#watchBound()
          this.#delay = 0
          if (this.#outage) {
            this.#outage = false
            this.#log('recording uploads resumed', { waiting: this.#files })
          }
        },
        err => {
          if (this.#stopped) return
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
            // removed from the spool by someone else: nothing left to upload, and retrying it would
            // hold up the queue for ever
            this.#known.delete(e.path)
            this.#bytes -= e.size
            this.#files--
            this.#watchBound()
            this.#log('recording vanished from the spool before its upload', { path: e.path })
            return
          }
          this.#queue.unshift(e)
          this.#backOff(err)
        },
      ).finally(() => {
        this.#inFlight--
        this.#pump()
        this.#checkIdle()
      })
    }
  }

  #backOff(err: unknown): void {
    if (!this.#outage) {
      this.#outage = true
      this.#log('recording upload failed; retrying with backoff', { error: describe(err), waiting: this.#files, bytes: this.#bytes })
    }
    this.#delay = this.#delay === 0 ? INITIAL_RETRY_DELAY_MS : Math.min(this.#cfg.maxRetryDelayMs, this.#delay * 2)
    if (this.#timer !== undefined) return
    // ±20% so that many gateways coming back together do not retry in step
    const wait = Math.round(this.#delay * (0.8 + Math.random() * 0.4))
    this.#timer = setTimeout(() => {
      this.#timer = undefined
      this.#pump()
    }, wait)
  }

  async #upload(e: Entry): Promise<void> {
    const md5 = await md5Of(e.path)
    const Bucket = this.#cfg.s3.bucket
    const Key = this.keyOf(e.path)
    const abortSignal = this.#abort.signal
    // a PUT refused before it read its body leaves the stream open: close it whatever happened,
    // or every retry of a long outage would hold one more descriptor
    const body = createReadStream(e.path)
    try {
      await this.#client.send(
        new PutObjectCommand({
          Bucket,
          Key,
          Body: body,
          ContentLength: e.size,
          ContentMD5: md5.toString('base64'),
          ContentType: 'application/vnd.portcullis.recording',
        }),
        { abortSignal },
      )
    } finally {
      body.destroy()
    }
    const head = await this.#client.send(new HeadObjectCommand({ Bucket, Key }), { abortSignal })
    const etag = head.ETag?.replace(/"/g, '')
    if (etag !== md5.toString('hex') || head.ContentLength !== e.size) {
      throw new Error(`s3://${Bucket}/${Key} not confirmed: the store reports ${head.ContentLength} bytes, ETag ${etag ?? 'none'}; the file has ${e.size} bytes, MD5 ${md5.toString('hex')}`)
    }
    await unlink(e.path).catch((err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err
    })
    await this.#tidy(dirname(e.path))
  }

  /** an emptied day directory goes, except today's and yesterday's (a recorder may be about to use it) */
  async #tidy(dayDir: string): Promise<void> {
    const day = basename(dayDir)
    if (!DAY_DIR.test(day)) return
    if (Date.parse(`${day}T00:00:00Z`) >= this.#now() - 2 * 86_400_000) return
    await rmdir(dayDir).catch(() => {})
  }

  #checkIdle(): void {
    if (this.#inFlight > 0 || (this.#queue.length > 0 && !this.#stopped)) return
    const w = this.#idleWaiters
    this.#idleWaiters = []
    for (const f of w) f()
  }

  idle(): Promise<void> {
    return new Promise(resolve => {
      this.#idleWaiters.push(resolve)
      this.#checkIdle()
    })
  }

  async close(waitMs = 5_000): Promise<void> {
    if (this.#stopped) return
    if (this.#queue.length > 0 || this.#inFlight > 0) {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([this.idle(), new Promise<void>(resolve => (timer = setTimeout(resolve, waitMs)))])
      clearTimeout(timer)
    }
    this.#stopped = true
    if (this.#timer !== undefined) clearTimeout(this.#timer)
    this.#timer = undefined
    this.#abort.abort()
    if (this.#files > 0) this.#log('recordings left in the spool; they are uploaded at the next start', { files: this.#files, bytes: this.#bytes })
    await new Promise<void>(resolve => {
      this.#idleWaiters.push(resolve)
      this.#checkIdle()
    })
    this.#client.destroy()
  }
}

export function createUploader(opts: UploaderOptions): Uploader {
  return new S3Uploader(opts)
}
