// Small batches of every recorder, written by one thread with one message per window. Through
// fs.writev each recorder's batch is a thread-pool job of its own: a wake-up to submit it and a
// completion to pick up, per session per window (1,000 a second for 50 busy sessions), each costing
// the event loop tens of µs on a machine where a syscall does. Here the event loop posts the
// window's batches (copies, a few KB each) in one message and takes the answers in one message.
// Each file's batches are written in the order they were posted, one batch in flight per recorder
// (the recorder waits for the answer before it hands over the next), so a crash still leaves a file
// that ends in whole frames or inside the last one.
import { Worker } from 'node:worker_threads'

export interface SmallWrite {
  fd: number
  data: Uint8Array
  /** called once: an error, or how many bytes were written (all of them) */
  done(err: Error | undefined, written: number): void
}

// a plain script (eval), so that it runs the same from the sources and from a bundle
const SOURCE = `
const { parentPort } = require('node:worker_threads')
const { writeSync } = require('node:fs')
parentPort.on('message', jobs => {
  const done = []
  for (const j of jobs) {
    try {
      let at = 0
      while (at < j.data.length) at += writeSync(j.fd, j.data, at)
      done.push({ id: j.id, written: at })
    } catch (err) {
      done.push({ id: j.id, error: String((err && err.message) || err) })
    }
  }
  parentPort.postMessage(done)
})
`

interface Answer {
  id: number
  written?: number
  error?: string
}

let worker: Worker | undefined
/** set when the thread could not be started or died: writes go through fs.writev from then on */
let unavailable = false
let nextId = 1
const waiting = new Map<number, SmallWrite>()

function failAll(err: Error): void {
  const all = [...waiting.values()]
  waiting.clear()
  for (const w of all) w.done(err, 0)
}

function start(): Worker | undefined {
  try {
    const w = new Worker(SOURCE, { eval: true, name: 'portcullis-recording-writer' })
    w.on('message', (answers: Answer[]) => {
      for (const a of answers) {
        const job = waiting.get(a.id)
        if (job === undefined) continue
        waiting.delete(a.id)
        job.done(a.error === undefined ? undefined : new Error(a.error), a.written ?? 0)
      }
      // an idle writer must not keep the process alive
      if (waiting.size === 0) w.unref()
    })
    const gone = (err: Error) => {
      if (worker === w) worker = undefined
      unavailable = true
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

/** posts one window's small batches; each job's done() is called when its bytes are written */
export function writeSmall(jobs: SmallWrite[]): void {
  worker ??= start()
  const w = worker
  if (w === undefined) {
    const err = new Error('the recording writer thread is unavailable')
    for (const j of jobs) j.done(err, 0)
    return
  }
  const message = jobs.map(j => {
    const id = nextId++
    waiting.set(id, j)
    return { id, fd: j.fd, data: j.data }
  })
  // writes pending: keep the process alive until they are answered
  w.ref()
  w.postMessage(message, message.map(m => m.data.buffer as ArrayBuffer))
}
