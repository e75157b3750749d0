import t from 'tap'
import { connect, createServer, type Socket } from 'node:net'
import { createServer as createTlsServer } from 'node:tls'
import { once } from 'node:events'
import { Agent, request } from 'undici'
import { startHttpUpstream } from '@portcullis/fixtures/http-upstream'
import { testCertificate } from '@portcullis/fixtures/tls'
import { httpCodec } from '../src/index.ts'
import { startGateway } from './harness.ts'

// A listener that sniffs like the gateway does: read the first bytes, pause, push them back, then
// hand the socket to the codec with a session from the harness.
async function sniffThenServe(socket: Socket, serve: (s: Socket) => Promise<void>): Promise<void> {
  const [first] = (await once(socket, 'data')) as [Buffer]
  socket.pause()
  t.equal(httpCodec.sniff(first), true)
  socket.unshift(first)
  await serve(socket)
}

t.test('sniff: a method and a space is HTTP, a prefix needs more bytes, anything else is not', async t => {
  t.equal(httpCodec.sniff(Buffer.from('POST /v1/x HTTP/1.1')), true)
  t.equal(httpCodec.sniff(Buffer.from('PO')), undefined)
  t.equal(httpCodec.sniff(Buffer.from([0, 0, 0, 8, 4, 210, 22, 47])), false)
  t.equal(httpCodec.sniff(Buffer.from('*2\r\n$4\r\nPING')), false)
})

t.test('a socket whose first bytes were read and pushed back is served whole, pipelined requests included', async t => {
  const upstream = await startHttpUpstream()
  const gw = await startGateway({ upstreamUrl: upstream.url })
  const server = createServer(s => void sniffThenServe(s, sock => gw.serve(sock)))
  const sockets = new Set<Socket>()
  server.on('connection', s => sockets.add(s))
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(async () => {
    for (const s of sockets) s.destroy()
    server.close()
    await gw.stop()
    await upstream.stop()
  })
  const s = connect((server.address() as { port: number }).port, '127.0.0.1')
  const req = `GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dev-token-alice\r\n\r\n`
  s.write(req + req)
  let got = ''
  s.on('data', d => (got += d))
  while ((got.match(/HTTP\/1.1 200/g) ?? []).length < 2) await new Promise(r => setTimeout(r, 10))
  await gw.settled(2)
  t.equal(gw.audits.length, 2, 'both pipelined requests answered')
  s.destroy()
})

t.test('a TLS socket terminated by the listener is served', async t => {
  const cert = testCertificate()
  const upstream = await startHttpUpstream()
  const inner = await startGateway({ upstreamUrl: upstream.url })
  const server = createTlsServer({ cert: cert.cert, key: cert.key }, s => void sniffThenServe(s, sock => inner.serve(sock)))
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const agent = new Agent({ connect: { ca: cert.cert, servername: 'localhost' } })
  t.teardown(async () => {
    await agent.close()
    server.close()
    await inner.stop()
    await upstream.stop()
  })
  const port = (server.address() as { port: number }).port
  const res = await request(`https://localhost:${port}/v1/models`, { dispatcher: agent, headers: { authorization: 'Bearer dev-token-alice' } })
  t.equal(res.statusCode, 200)
  t.equal(((await res.body.json()) as any).object, 'list')
})
