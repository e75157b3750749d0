// The fuzzer's own hygiene: when fuzz() returns, every connection it opened is closed, so that the
// after-batch checks ("upstream connections of ended sessions", fds, unsealed recordings) count only
// what the gateway kept after its clients left. A worker whose case budget ran out on a live,
// logged-in connection used to leave it open: the gateway rightly kept those sessions (an idle
// client keeps its session, as Redis keeps it), and the checks reported them as leaks.
import t from 'tap'
import { createServer, type Socket } from 'node:net'
import { once } from 'node:events'
import { fuzz } from './fuzz.ts'
import { prng, split } from './mutate.ts'
import { resp } from './wire.ts'
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

t.test('fuzz() leaves no connection open when it returns, however its last case ended', async (t) => {
  // the smallest Redis-like peer: '+OK' once logged in, then every byte echoed (the sentinel's
  // marker comes back, so batches are answered and connections stay up until the budget runs out)
  const open = new Set<Socket>()
  let opened = 0
  const server = createServer((s) => {
    opened++
    open.add(s)
    s.on('error', () => {})
    s.once('close', () => open.delete(s))
    s.write('+OK\r\n')
    s.on('data', (d: Buffer) => s.write(d))
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => {
    for (const s of open) s.destroy()
    server.close()
  })
  const port = (server.address() as { port: number }).port
  const seed = Buffer.concat([resp('AUTH', 'tok'), resp('SET', 'k', 'v'), resp('GET', 'k'), resp('ECHO', 'x')])
  for (const s of [1, 2, 3]) {
    const stats = await fuzz({ protocol: 'redis', port, seeds: [seed], cases: 300, seed: s, parallel: 8, token: 'tok' })
    t.ok(stats.cases >= 300 && stats.answered > 0, `seed ${s}: ${stats.cases} cases, ${stats.answered} batches answered`)
    // the peer sees each close a moment after the client's destroy(): wait for it, bounded
    for (let i = 0; i < 100 && open.size > 0; i++) await sleep(20)
    t.equal(open.size, 0, `seed ${s}: all ${opened} connections the fuzzer opened are closed`)
  }
})

t.test('split() cuts a case at every byte offset across a run, and some cases a few bytes at a time from start to end', async (t) => {
  const r = prng(7)
  const n = 1000 // about an HTTP case of the captured corpus
  const cutAt = new Array<number>(n).fill(0)
  let wholeTiny = 0
  let writes = 0
  const draws = 4000 // one fuzz file's 20,000 cases see five times this
  for (let i = 0; i < draws; i++) {
    const chunks = split(r, n)
    if (chunks.reduce((a, b) => a + b, 0) !== n || chunks.some((c) => c < 1)) return t.fail(`pieces ${chunks.join(',')} do not cut ${n} bytes`)
    writes += chunks.length
    if (chunks.every((c) => c <= 7)) wholeTiny++
    let at = 0
    for (const c of chunks.slice(0, -1)) cutAt[(at += c)]!++
  }
  const never = cutAt.map((k, i) => (i > 0 && k === 0 ? i : -1)).filter((i) => i >= 0)
  t.same(never, [], 'every offset of the case was a write boundary in some draw')
  t.ok(wholeTiny >= draws * 0.01, `${wholeTiny} of ${draws} cases written 1-7 bytes at a time from start to end`)
  t.ok(writes / draws < 40, `${(writes / draws).toFixed(1)} writes per ${n}-byte case on average (with every such case cut 1-7 bytes at a time: ~100)`)
})
