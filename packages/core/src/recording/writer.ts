// The recorders' writes, done by one thread. Through fs.writev each batch is a thread-pool job of
// its own, and its completion is only seen on a later turn of the event loop: a wake-up to submit
// and a completion to pick up per session per window (1,000 a second for 50 busy sessions, each
// costing the event loop tens of µs on a machine where a syscall does), and a producer that does
// not yield keeps every batch buffer it filled until it does (fresh memory, faulted in page by page).
// Here batch buffers are SharedArrayBuffers: a job is a list of views of them (no copy), posted in
// one message per window (or at once for a full batch); the thread writes each job in order and
// counts it in the recorder's shared progress cell, so a recorder sees a finished write at its next
// record, without waiting for the event loop, and reuses that memory. Answers (errors included)
// also come back as one message per burst, for recorders that record nothing more.
// Each file's jobs are written in the order they were posted, one in flight per recorder, so a crash
// still leaves a file that ends in whole frames or inside the last one.
import { Worker } from 'node:worker_threads'

export interface WriteJob {
  /** the recorder's number: the thread keeps each file's descriptor under it */
  file: number
  /** open (mkdir -p, then create exclusively) the file before any write of it */
  open?: { dir: string; path: string }
  /** views of SharedArrayBuffers (other bytes are copied into the message) */
  parts: Uint8Array[]
  /** Int32Array on a SharedArrayBuffer: [0] counts the recorder's write jobs written */
  progress: Int32Array
  /** called once: an error, or (after a write possibly already seen in `progress`) success; an open answers its fd */
  done(err: Error | undefined, fd?: number): void
}

// a plain script (eval), so that it runs the same from the sources and from a bundle
const SOURCE = `
const { parentPort } = require('node:worker_threads')
const { mkdirSync, openSync, writeSync } = require('node:fs')
const files = new Map()
parentPort.on('message', jobs => {
  const done = []
  for (const j of jobs) {
    try {
      if (j.open) {
        mkdirSync(j.open.dir, { recursive: true, mode: 0o750 })
        // 'wx': never overwrite another session's recording
        const fd = openSync(j.open.path, 'wx', 0o640)
        files.set(j.file, fd)
        done.push({ id: j.id, fd })
        continue
      }
      if (j.forget) {
        files.delete(j.file)
        continue
      }
      const fd = files.get(j.file)
      if (fd === undefined) throw new Error('the recording file is not open')
      for (const p of j.parts) {
        let at = 0
        while (at < p.length) at += writeSync(fd, p, at)
      }
      Atomics.add(j.progress, 0, 1)
      done.push({ id: j.id })
    } catch (err) {
      done.push({ id: j.id, error: String((err && err.message) || err) })
    }
  }
  if (done.length > 0) parentPort.postMessage(done)
})
`

interface Answer {
  id: number
  error?: string
  fd?: number
}

let worker: Worker | undefined
/** the thread runs: until then (or without it) recorders open and write their files themselves */
let online = false
/** set when the thread could not be started or died: writes go through fs.writev from then on */
let unavailable = false
let nextId = 1
const waiting = new Map<number, WriteJob>()

function failAll(err: Error): void {
  const all = [...waiting.values()]
  waiting.clear()
  for (const w of all) w.done(err)
}

function start(): Worker | undefined {
  try {
    // execArgv: []: none of this process's loader or input-type flags (the script is plain CommonJS);
    // trackUnmanagedFds: false: the files it opens are the recorders' (closed by them, on the main
    // thread), not the thread's to track or close
    const w = new Worker(SOURCE, { eval: true, execArgv: [], trackUnmanagedFds: false, name: 'portcullis-recording-writer' })
    w.on('message', (answers: Answer[]) => {
      for (const a of answers) {
        const job = waiting.get(a.id)
        if (job === undefined) continue
        waiting.delete(a.id)
        job.done(a.error === undefined ? undefined : new Error(a.error), a.fd)
      }
      // an idle writer must not keep the process alive
      if (waiting.size === 0) w.unref()
    })
    w.once('online', () => {
      if (!unavailable) online = true
    })
    const gone = (err: Error) => {
      if (worker === w) worker = undefined
      unavailable = true
      online = false
      failAll(err)
    }
    w.on('error', gone)
    w.on('exit', code => gone(new Error(`the recording writer thread exited (${code})`)))
    w.unref()
    return w
  } catch {
    unavailable = true
    return undefined
  }
}

/** starts the writer thread if needed; false when there is none (write through fs.writev instead) */
export function writerAvailable(): boolean {
  if (unavailable) return false
  worker ??= start()
  return worker !== undefined
}

/**
 * true once the thread runs. A recorder opened before then opens and writes its file itself for
 * its whole life: its first writes never wait for a thread to boot.
 */
export function writerOnline(): boolean {
  return online
}

/** the thread drops its descriptor of a closed recorder's file (the recorder closes the file itself) */
export function forgetFile(file: number): void {
  worker?.postMessage([{ id: 0, file, forget: true }])
}

/** posts jobs in order, in one message */
export function postWrites(jobs: WriteJob[]): void {
  const w = worker
  if (w === undefined) {
    const err = new Error('the recording writer thread is unavailable')
    for (const j of jobs) j.done(err)
    return
  }
  const message = jobs.map(j => {
    const id = nextId++
    waiting.set(id, j)
    return { id, file: j.file, open: j.open, parts: j.parts, progress: j.progress }
  })
  // writes pending: keep the process alive until they are answered
  w.ref()
  w.postMessage(message)
}
