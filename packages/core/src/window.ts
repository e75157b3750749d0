// One 50 ms window for the work the gateway batches off the hot path: the recorders' writes (handed
// to the writer thread) and the audit log's hand-over to its sink. Each had its own timer, so the
// event loop woke twice per window, at unrelated moments, and a 1-client session's slowest
// transactions were the ones such a wake-up landed in (bench/README.md, "the 1-client tail": the
// callbacks overlapped 23% of the slowest 1% against 1% of all transactions). One timer serves
// every batcher: a batcher that has something waiting asks for the end of the current window once.
/** how long batched work may wait (a crash loses at most this much of the audit log) */
export const WINDOW_MS = 50

let due: (() => void)[] = []
let timer: NodeJS.Timeout | undefined

/** `fn` runs at the end of the current window (one is opened if none is); once per call */
export function atWindowEnd(fn: () => void): void {
  due.push(fn)
  timer ??= setTimeout(windowEnded, WINDOW_MS)
}

function windowEnded(): void {
  timer = undefined
  const fns = due
  due = []
  for (const fn of fns) {
    try {
      fn()
    } catch (err) {
      // one batcher's failure is not the others': theirs still run, and this one surfaces as before
      process.nextTick(() => {
        throw err
      })
    }
  }
}
