// What an idle session's recorder holds. Each recorder used to take a 1 MiB batch chunk at open and
// keep it for its whole life: 1,000 idle logged-in sessions held 1,000 MiB of SharedArrayBuffers, the
// 32-chunk pool could not serve them, so every login allocated and zeroed a fresh MiB, and the
// gateway's RSS climbed ~150 MiB per 1,000 sessions opened and closed (the robustness suite's idle
// check and long fuzz runs). Now a recorder starts small, takes a pooled MiB only for a burst, and
// rewinds to a small chunk once everything it handed is written. Counted here with
// process.memoryUsage().arrayBuffers (SharedArrayBuffers included), not timed.
import t from 'tap'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { openRecorder, readRecording, verifyRecording, type Recorder } from '../src/index.ts'
import { writerOnline } from '../src/recording/writer.ts'

const sleep = (ms: number) => new Promise<void>(r => setTimeout(r, ms))
const principal = { subject: 'ada', groups: ['agents'], issuer: 'https://issuer.example' }
const MiB = 1024 * 1024

t.test('1,000 idle recorders hold a few KiB each, not a 1 MiB chunk each', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-rec-idle-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  await openRecorder({ dir, sessionId: 'warm', target: 't', protocol: 'redis', principal }).close()
  for (let i = 0; i < 300 && !writerOnline(); i++) await sleep(10)
  const before = process.memoryUsage().arrayBuffers
  const open: Recorder[] = []
  for (let i = 0; i < 1000; i++) {
    const r = openRecorder({ dir, sessionId: `idle-${i}`, target: 't', protocol: 'redis', principal })
    r.record('event', { event: 'authenticated' })
    open.push(r)
  }
  // their windows end and their writes are done: what each keeps now is what an idle session costs
  await sleep(300)
  const held = process.memoryUsage().arrayBuffers - before
  t.ok(held < 64 * MiB, `1,000 idle recorders hold ${(held / MiB).toFixed(1)} MiB of buffers (under 64; 1 MiB each before)`)
  await Promise.all(open.map(r => r.close('closed')))
  for (const r of open.slice(0, 20)) t.equal((await verifyRecording(r.path)).status, 'intact')
})

t.test('a recorder that rests between bursts keeps one unbroken chain (small records, a burst past the small chunk, rests)', async t => {
  const dir = mkdtempSync(join(tmpdir(), 'portcullis-rec-rest-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const r = openRecorder({ dir, sessionId: 'rests', target: 't', protocol: 'redis', principal, sign: { hmacKey: Buffer.from('k') } })
  const big = 'x'.repeat(40_000)
  let n = 0
  for (let round = 0; round < 6; round++) {
    // one command per window, then a burst that outgrows the small chunk (and one record larger than it)
    r.record('request', { command: 'GET', n: n++ })
    await sleep(80)
    for (let i = 0; i < 50; i++) r.record('response', { n: n++, value: i === 0 ? big : 'v'.repeat(600) })
    await sleep(80)
  }
  await r.close('closed')
  const v = await verifyRecording(r.path, { hmacKey: Buffer.from('k') })
  t.equal(v.status, 'intact')
  const seen: number[] = []
  for await (const rec of readRecording(r.path)) if (typeof (rec.payload as { n?: number }).n === 'number') seen.push((rec.payload as { n: number }).n)
  t.same(seen, Array.from({ length: n }, (_, i) => i), 'every record, in order')
})
