import t from 'tap'
import { connect, createServer } from 'node:net'
import { createServer as createHttpServer } from 'node:http'
import { once } from 'node:events'
import type { AddressInfo } from 'node:net'
import { request } from 'undici'
import { startHttpUpstream } from '@portcullis/fixtures/http-upstream'
import { testCertificate } from '@portcullis/fixtures/tls'
import { startGateway, type GatewayOptions } from './harness.ts'
import { stubMasks } from './stub-masks.ts'

const auth = { authorization: 'Bearer dev-token-alice' }

async function setup(t: { teardown(fn: () => unknown): void }, opts: Partial<GatewayOptions> = {}, upOpts = {}) {
  const upstream = await startHttpUpstream(upOpts)
  const gw = await startGateway({ upstreamUrl: upstream.url, ...opts })
  t.teardown(async () => {
    await gw.stop()
    await upstream.stop()
  })
  return { upstream, gw }
}

t.test('a slow upstream answers 504 upstream_timeout', async t => {
  const { gw, upstream } = await setup(t, { options: { upstreamTimeout: 200 } })
  upstream.options.delayMs = 1500
  const res = await fetch(`${gw.url}/v1/models`, { headers: auth })
  t.equal(res.status, 504)
  t.equal(((await res.json()) as any).error.code, 'upstream_timeout')
  await gw.settled(1)
  t.equal(gw.audits[0].error, 'upstream_timeout')
})

t.test('an upstream that is down answers 502 upstream_unavailable', async t => {
  const closed = createServer()
  await new Promise<void>(r => closed.listen(0, '127.0.0.1', r))
  const port = (closed.address() as AddressInfo).port
  await new Promise<void>(r => closed.close(() => r()))
  const gw = await startGateway({ upstreamUrl: `http://127.0.0.1:${port}` })
  t.teardown(() => gw.stop())
  const res = await fetch(`${gw.url}/v1/models`, { headers: auth })
  t.equal(res.status, 502)
  t.equal(((await res.json()) as any).error.code, 'upstream_unavailable')
  // every byte the client gets, on a raw socket: JSON, and no upstream address in it
  for (const host of ['127.0.0.1', 'localhost']) {
    const named = await startGateway({ upstreamUrl: `http://${host}:${port}` })
    t.teardown(() => named.stop())
    const sock = connect({ host: '127.0.0.1', port: named.port })
    await once(sock, 'connect')
    sock.end('GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dev-token-alice\r\nConnection: close\r\n\r\n')
    const parts: Buffer[] = []
    sock.on('data', (c: Buffer) => parts.push(c))
    await once(sock, 'close')
    const raw = Buffer.concat(parts).toString('latin1')
    t.match(raw, /^HTTP\/1\.1 502 Bad Gateway\r\n/)
    t.match(raw, /content-type: application\/json/i)
    const body = JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4))
    t.same(body, { error: { code: 'upstream_unavailable', message: 'the upstream could not be reached (ECONNREFUSED)' } })
    t.notOk(raw.includes(String(port)), `${host}: the upstream port is not in the answer`)
    t.notOk(raw.includes(host), `${host}: the upstream host is not in the answer`)
  }
})

t.test('an upstream reset mid-stream breaks the client stream; the gateway stays up', async t => {
  const { gw, upstream } = await setup(t, { masks: () => stubMasks() })
  upstream.options.resetAfterChunks = 2
  const res = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { ...auth, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'm', stream: true, messages: [{ role: 'user', content: 'a long answer please' }] }),
  })
  t.equal(res.status, 200, 'the stream had started')
  await t.rejects(res.text(), 'the client sees a broken stream, not a clean end')
  upstream.options.resetAfterChunks = undefined
  const again = await fetch(`${gw.url}/v1/models`, { headers: auth })
  t.equal(again.status, 200, 'the gateway still serves')
})

t.test('an unmasked body reset mid-stream is passed on as a broken stream too', async t => {
  const { gw, upstream } = await setup(t, {}, { bigBodyBytes: 10 << 20, resetAfterChunks: 5 })
  const res = await request(`${gw.url}/big`, { headers: auth })
  t.equal(res.statusCode, 200)
  await t.rejects(res.body.arrayBuffer())
  t.equal(upstream.requests.length, 1)
})

t.test('a 200 MB response streams through with bounded memory', async t => {
  const { gw } = await setup(t, { options: { profile: 'generic' } })
  global.gc?.()
  const before = process.memoryUsage().rss
  let peak = before
  let bytes = 0
  const res = await request(`${gw.url}/big`, { headers: auth })
  t.equal(res.statusCode, 200)
  for await (const chunk of res.body) {
    bytes += chunk.length
    if ((bytes & 0xfffff) < chunk.length) peak = Math.max(peak, process.memoryUsage().rss)
  }
  peak = Math.max(peak, process.memoryUsage().rss)
  t.equal(bytes, 200 * 1024 * 1024)
  const growth = peak - before
  t.ok(growth < 96 * 1024 * 1024, `rss grew ${Math.round(growth / 1048576)} MB for a 200 MB body`)
  await gw.settled(1)
  t.equal(gw.audits[0].bytes, 200 * 1024 * 1024, 'the response bytes are counted')
})

t.test('upstream TLS is verified: the right CA passes, an unknown certificate is refused', async t => {
  const cert = testCertificate()
  const upstream = await startHttpUpstream({ tls: { cert: cert.cert, key: cert.key } })
  const good = await startGateway({ upstreamUrl: `https://localhost:${upstream.port}`, tls: { ca: cert.certFile } })
  const bad = await startGateway({ upstreamUrl: `https://localhost:${upstream.port}` })
  t.teardown(async () => {
    await good.stop()
    await bad.stop()
    await upstream.stop()
  })
  t.equal((await fetch(`${good.url}/v1/models`, { headers: auth })).status, 200)
  const refused = await fetch(`${bad.url}/v1/models`, { headers: auth })
  t.equal(refused.status, 502)
  t.equal(((await refused.json()) as any).error.code, 'upstream_unavailable')
})

t.test('with masking on, a broken compressed body or a JSON body cut short answers 502, never a hang', async t => {
  // a deliberately broken upstream (stands in for an LLM API, like the fixture): bad gzip, or a reset
  const broken = createHttpServer((req, res) => {
    if (req.url === '/v1/models') {
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' })
      res.end('this is not gzip')
    } else {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': 1000 })
      res.write('{"data": [')
      setTimeout(() => res.socket?.destroy(), 20)
    }
  })
  broken.listen(0, '127.0.0.1')
  await once(broken, 'listening')
  const gw = await startGateway({ upstreamUrl: `http://127.0.0.1:${(broken.address() as AddressInfo).port}`, masks: () => stubMasks() })
  t.teardown(async () => {
    await gw.stop()
    broken.closeAllConnections()
    broken.close()
  })
  const bad = await fetch(`${gw.url}/v1/models`, { headers: auth })
  t.equal(bad.status, 502)
  t.equal(((await bad.json()) as any).error.code, 'upstream_unreadable')
  const cut = await fetch(`${gw.url}/v1/files`, { headers: auth })
  t.equal(cut.status, 502)
  t.equal(((await cut.json()) as any).error.code, 'upstream_unavailable')
})
