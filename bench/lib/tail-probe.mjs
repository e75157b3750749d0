// `node --import ./bench/lib/tail-probe.mjs …` (pg-profile.ts --tail passes it to the gateway): what
// holds the main thread between one SIGUSR2 and the next, with wall-clock (epoch) times that line up
// with pgbench's per-transaction log: each GC pause (PerformanceObserver 'gc') and each run of a
// callback of a 50 ms timer (the recorder's write window and the audit hand-over are the 50 ms
// timers of the gateway) and of the writer thread's answers, written as JSON to TAIL_PROBE=FILE at the second signal.
import { writeFileSync } from 'node:fs'
import { PerformanceObserver, performance } from 'node:perf_hooks'
import { Worker } from 'node:worker_threads'

const out = process.env.TAIL_PROBE
if (out) {
  let on = false
  const gc = []
  const timers = []
  const epoch = t => performance.timeOrigin + t
  new PerformanceObserver(list => {
    if (!on) return
    for (const e of list.getEntries()) gc.push([epoch(e.startTime), e.duration, e.detail?.kind ?? 0])
  }).observe({ entryTypes: ['gc'] })
  const setTimeout0 = globalThis.setTimeout
  globalThis.setTimeout = function (fn, ms, ...args) {
    if (ms !== 50 || typeof fn !== 'function') return setTimeout0(fn, ms, ...args)
    return setTimeout0(
      (...a) => {
        const start = performance.now()
        try {
          return fn(...a)
        } finally {
          if (on) timers.push([epoch(start), performance.now() - start, fn.name || '(anonymous)'])
        }
      },
      ms,
      ...args,
    )
  }
  // the recording writer thread's answers (core recording/writer.ts) run on the main thread too
  const emit0 = Worker.prototype.emit
  Worker.prototype.emit = function (event, ...args) {
    if (event !== 'message') return emit0.call(this, event, ...args)
    const start = performance.now()
    try {
      return emit0.call(this, event, ...args)
    } finally {
      if (on) timers.push([epoch(start), performance.now() - start, 'writer thread answer'])
    }
  }
  process.on('SIGUSR2', () => {
    on = !on
    if (!on) writeFileSync(out, JSON.stringify({ gc, timers }))
  })
}
