// The fuzzer's own hygiene: when fuzz() returns, every connection it opened is closed, so that the
// after-batch checks ("upstream connections of ended sessions", fds, unsealed recordings) count only
// what the gateway kept after its clients left. A worker whose case budget ran out on a live,
// logged-in connection used to leave it open: the gateway rightly kept those sessions (an idle
// client keeps its session, as Redis keeps it), and the checks reported them as leaks.
import t from 'tap'
import { createServer, type Socket } from 'node:net'
import { once } from 'node:events'
import { fuzz } from './fuzz.ts'
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
