// A session that ends within one write window of opening. With the writer thread, the thread opens
// the file, writes the records and the seal, and counts the writes in the shared progress word
// before its answers (the file's descriptor among them) reach the main thread. When the window's
// timer came first it saw the writes done, and close went on to fsync and close a descriptor it did
// not have yet; the descriptor that arrived after was never closed (the gateway's fuzzers: ~1
// session in 1,000 sealed and intact with its file open for ever; instrumented, the drain came
// from flushDue -> windowEnded -> flush -> poll). This forces that order: the window timer and a
// timer that opens, writes and closes a recorder are due in the same timers phase, the second
// holding the thread until the writer has done it all; the window then runs before the poll phase
// delivers the writer's answers.
import t from 'tap'
import { mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { openRecorder, verifyRecording } from '../src/index.ts'
import { writerOnline } from '../src/recording/writer.ts'

const sleep = (ms: number) => new Promise<void>(r => setTimeout(r, ms))
const hold = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms)
const openFds = (path: string) =>
  readdirSync('/proc/self/fd').filter(fd => {
    try {
      return readlinkSync(`/proc/self/fd/${fd}`) === path
    } catch {
      return false
    }
  }).length

t.test('a recording closed before the writer thread answered with its descriptor: the file is closed all the same', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-rec-fd-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const principal = { subject: 'ada', groups: ['agents'], issuer: 'https://issuer.example' }
  // a first recorder starts the writer thread; the ones under test go through it
  await openRecorder({ dir, sessionId: 'warm', target: 't', protocol: 'http', principal }).close()
  for (let i = 0; i < 300 && !writerOnline(); i++) await sleep(10)
  t.ok(writerOnline(), 'the writer thread runs')
  for (let n = 0; n < 5; n++) {
    // arms the shared write window (its timer, 50 ms)
    const first = openRecorder({ dir, sessionId: `window-${n}`, target: 't', protocol: 'http', principal })
    const quick = new Promise<{ path: string; closed: Promise<void> }>(resolve =>
      setTimeout(() => {
        const r = openRecorder({ dir, sessionId: `quick-${n}`, target: 't', protocol: 'http', principal })
        r.record('request', { method: 'GET', path: '/v1/models' })
        const closed = r.close('closed')
        // the writer opens, writes and counts while this thread is held: its answers wait
        hold(300)
        resolve({ path: r.path, closed })
      }, 20),
    )
    // both timers are due when the loop next looks
    hold(80)
    const { path, closed } = await quick
    await closed
    await first.close()
    // whatever the writer still had to say has been delivered by now
    await sleep(200)
    t.equal(openFds(path), 0, `recording ${n}: no descriptor of its file left open after close`)
    t.equal((await verifyRecording(path)).status, 'intact', `recording ${n}: sealed intact`)
  }
})
