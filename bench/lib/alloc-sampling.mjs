// `node --import ./bench/lib/alloc-sampling.mjs …` (pg-cpu-per-tx.ts passes it to the gateway when
// ALLOC_PROF=FILE is set): a sampling allocation profile of a window of the process's life, with
// the objects the collector already freed counted too (`--heap-prof` keeps only what is still alive
// at exit, which says nothing of per-request garbage). The window starts ALLOC_PROF_DELAY_MS after
// start (default 30 s) and lasts ALLOC_PROF_MS (default 5 s); FILE opens in DevTools (Memory tab)
// or in heapprofile-top.ts.
import { Session } from 'node:inspector'
import { writeFileSync } from 'node:fs'

const out = process.env.ALLOC_PROF
if (out) {
  const session = new Session()
  session.connect()
  const fail = err => writeFileSync(out, JSON.stringify({ error: String(err?.message ?? err) }))
  const start = () =>
    session.post('HeapProfiler.enable', () =>
      session.post('HeapProfiler.startSampling', { samplingInterval: 4096, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true }, err => {
        if (err) return fail(err)
        if (process.env.ALLOC_PROF_DELAY_MS === 'signal') return
        setTimeout(stop, Number(process.env.ALLOC_PROF_MS ?? 5000)).unref()
      }),
    )
  const stop = () => session.post('HeapProfiler.stopSampling', (e, r) => (e ? fail(e) : writeFileSync(out, JSON.stringify(r.profile))))
  // ALLOC_PROF_DELAY_MS=signal: the window is from one SIGUSR2 to the next (pg-profile.ts sends them
  // around the measured load)
  if (process.env.ALLOC_PROF_DELAY_MS === 'signal') {
    let on = false
    process.on('SIGUSR2', () => {
      on = !on
      if (on) start()
      else stop()
    })
  } else setTimeout(start, Number(process.env.ALLOC_PROF_DELAY_MS ?? 30000)).unref()
}
