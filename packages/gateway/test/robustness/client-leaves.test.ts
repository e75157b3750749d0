// The fuzzers' leaks, pinned down one by one: a client that half-closes (FIN) right after its request,
// or leaves while its token is being checked. Like the real servers, the gateway answers what was
// asked before the FIN, then ends the session: its upstream connection goes, its recording is sealed
// (verifies intact), its file descriptor is released.
import t from 'tap'
import { connect, type Socket } from 'node:net'
import { once } from 'node:events'
import { verifyRecording } from '@portcullis/core'
import { pgGatewayBackends, recordingFiles, redisGatewayClients, sleep, startWorld } from './env.ts'
import { resp } from './wire.ts'
import { hygieneTest } from './hygiene.ts'
import { prepareData } from './capture.ts'

const w = await startWorld()
t.teardown(() => w.cleanup())
await prepareData(w)

async function raw(port: number): Promise<{ s: Socket; got: () => Buffer; closed: Promise<void> }> {
  const s = connect({ host: '127.0.0.1', port })
  s.on('error', () => {})
  await once(s, 'connect')
  const chunks: Buffer[] = []
  s.on('data', (d: Buffer) => chunks.push(d))
  const closed = new Promise<void>((r) => s.once('close', () => r()))
  return { s, got: () => Buffer.concat(chunks), closed }
}

/** recordings that do not verify intact (sealed) once the session had time to end */
async function openRecordings(): Promise<string[]> {
  const out: string[] = []
  for (const f of await recordingFiles(w.recordingsDir)) {
    const v = await verifyRecording(f, { hmacKey: w.sealKey })
    if (v.status !== 'intact') out.push(`${f.split('/').pop()}: ${v.status}`)
  }
  return out
}

const pgMessage = (type: string, body: Buffer) => {
  const h = Buffer.alloc(5)
  h.write(type, 0, 'latin1')
  h.writeInt32BE(4 + body.length, 1)
  return Buffer.concat([h, body])
}
const cstr = (s: string) => Buffer.from(s + '\0')

t.test('postgres: Query then FIN after ReadyForQuery ends the session: no backend left, recording sealed', async (t) => {
  const token = await w.token('robust-leaves')
  const fds = w.gateway.fds()
  const c = await raw(w.gateway.ports.pg)
  const params = Buffer.concat([cstr('user'), cstr('robust-leaves'), cstr('database'), cstr('app'), Buffer.from([0])])
  const startup = Buffer.alloc(8)
  startup.writeInt32BE(8 + params.length, 0)
  startup.writeInt32BE(196608, 4)
  c.s.write(Buffer.concat([startup, params]))
  for (let i = 0; i < 200 && !c.got().includes(0x52); i++) await sleep(10)
  c.s.write(pgMessage('p', cstr(token)))
  const ready = Buffer.from([0x5a, 0, 0, 0, 5])
  for (let i = 0; i < 300 && !c.got().includes(ready); i++) await sleep(10)
  const at = c.got().length
  c.s.write(pgMessage('Q', cstr('SELECT 1')))
  for (let i = 0; i < 300 && !c.got().subarray(at).includes(ready); i++) await sleep(10)
  c.s.end() // FIN, as a client that is done would
  await Promise.race([c.closed, sleep(3000)])
  t.ok(c.s.readableEnded || c.s.destroyed, 'the gateway closed the connection after the FIN')
  await sleep(1000)
  t.equal(await pgGatewayBackends(w.pg), 0, 'no upstream backend left')
  t.same(await openRecordings(), [], 'every recording sealed')
  t.ok(w.gateway.fds() <= fds, `fds back (${w.gateway.fds()} vs ${fds})`)
  c.s.destroy()
})

t.test('redis: AUTH then FIN or RST at once (the client leaves during token verification) leaves no open recording, no fd', async (t) => {
  const token = await w.token('robust-leaves')
  const fds = w.gateway.fds()
  for (const end of ['fin', 'rst'] as const) {
    const c = await raw(w.gateway.ports.redis)
    c.s.write(resp('AUTH', token))
    if (end === 'fin') c.s.end()
    else c.s.resetAndDestroy()
    await Promise.race([c.closed, sleep(3000)])
    c.s.destroy()
  }
  await sleep(1500)
  t.same(await openRecordings(), [], 'every recording sealed')
  t.ok(w.gateway.fds() <= fds, `fds back (${w.gateway.fds()} vs ${fds})`)
})

t.test('redis: AUTH, MULTI, SET then FIN gets every reply, then the session ends', async (t) => {
  const token = await w.token('robust-leaves')
  const fds = w.gateway.fds()
  const c = await raw(w.gateway.ports.redis)
  c.s.end(Buffer.concat([resp('AUTH', token), resp('MULTI'), resp('SET', 'robust:fin', 'v')]))
  await Promise.race([c.closed, sleep(3000)])
  t.equal(c.got().toString('latin1'), '+OK\r\n+OK\r\n+QUEUED\r\n', 'the replies Redis itself sends before it closes')
  c.s.destroy()
  await sleep(1500)
  t.same(await openRecordings(), [], 'every recording sealed')
  t.same((await redisGatewayClients(w.redis)).filter((l) => !/ name=portcullis-lane /.test(l)), [], 'no upstream connection left')
  t.ok(w.gateway.fds() <= fds, `fds back (${w.gateway.fds()} vs ${fds})`)
})

t.test('http: a request then FIN before the answer gets the answer, then the session ends', async (t) => {
  const token = await w.token('robust-leaves')
  // The gateway keeps its upstream connection to the HTTP fixture in the target's undici Pool
  // (keep-alive, reused by the next request of any session): that fd is the pool's, not the
  // session's. A warm-up request on its own connection opens it before the baseline is taken, so
  // the comparison counts only what this session leaves behind.
  const warm = await raw(w.gateway.ports.http)
  warm.s.end(`GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${token}\r\nconnection: close\r\n\r\n`)
  await Promise.race([warm.closed, sleep(3000)])
  t.match(warm.got().toString('latin1'), /^HTTP\/1\.1 200 /, 'the warm-up request is answered')
  warm.s.destroy()
  await sleep(500)
  const fds = w.gateway.fds()
  const c = await raw(w.gateway.ports.http)
  c.s.end(`GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\nauthorization: Bearer ${token}\r\n\r\n`)
  await Promise.race([c.closed, sleep(3000)])
  t.match(c.got().toString('latin1'), /^HTTP\/1\.1 200 /, 'the answer arrives after the FIN')
  c.s.destroy()
  await sleep(1500)
  t.same(await openRecordings(), [], 'every recording sealed')
  t.ok(w.gateway.fds() <= fds, `fds back (${w.gateway.fds()} vs ${fds})`)
})

// The fuzzer's "unsealed" HTTP recordings (request GET /v1/models … error 400 request body is not
// valid JSON … request POST /v1/chat/completions (chunked) …) were keep-alive connections its workers
// left open when the case count ran out, not sessions the gateway lost: the gateway socket was still
// reading, with no request in flight. These pin down that the ways a client really leaves such a
// session (FIN or RST mid-chunked-body, after a 400) end it.
t.test('http: keep-alive session with a 400, then FIN or RST mid-chunked-body: the session ends', async (t) => {
  const token = await w.token('robust-leaves')
  const auth = `authorization: Bearer ${token}\r\n`
  const get = `GET /v1/models HTTP/1.1\r\nhost: 127.0.0.1\r\n${auth}\r\n`
  const badJson = `POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n${auth}content-type: application/json\r\ncontent-length: 9\r\n\r\n{"model":`
  const body = '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}'
  const chunkedHead = `POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n${auth}content-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n`
  // the chunk's size line promises the whole body; only part of it comes, and no last chunk
  const cut = `${body.length.toString(16)}\r\n${body.slice(0, 20)}`
  // warm the pool (see the FIN test above) before the baseline
  const warm = await raw(w.gateway.ports.http)
  warm.s.end(get)
  await Promise.race([warm.closed, sleep(3000)])
  warm.s.destroy()
  await sleep(500)
  const fds = w.gateway.fds()
  for (const end of ['fin', 'rst'] as const) {
    const c = await raw(w.gateway.ports.http)
    c.s.write(get + badJson)
    for (let i = 0; i < 300 && !/HTTP\/1\.1 400 [^]*request body is not valid JSON/.test(c.got().toString('latin1')); i++) await sleep(10)
    const got = c.got().toString('latin1')
    t.match(got, /^HTTP\/1\.1 200 [^]*HTTP\/1\.1 400 [^]*request body is not valid JSON/, `${end}: the GET answered, then the 400 for the bad JSON`)
    t.notOk(c.s.destroyed || c.s.readableEnded, `${end}: the connection stays open after the 400 (keep-alive)`)
    c.s.write(chunkedHead + cut)
    await sleep(100)
    if (end === 'fin') c.s.end()
    else c.s.resetAndDestroy()
    await Promise.race([c.closed, sleep(3000)])
    if (end === 'fin') t.ok(c.s.readableEnded || c.s.destroyed, 'the gateway closed the connection after the FIN mid-body')
    c.s.destroy()
  }
  await sleep(1500)
  t.same(await openRecordings(), [], 'every recording sealed')
  t.ok(w.gateway.fds() <= fds, `fds back (${w.gateway.fds()} vs ${fds})`)
})

t.test('secret hygiene after the clients left: no password, key or token in logs, audit or recordings', (t) => hygieneTest(t, w))
