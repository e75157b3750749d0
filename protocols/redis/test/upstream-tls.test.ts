import t from 'tap'
import { testCertificate } from '@portcullis/fixtures/tls'
import { RawClient, startGateway } from './harness.ts'

t.test('the gateway reaches a TLS-only upstream and verifies its certificate', async t => {
  const cert = testCertificate()
  const gw = await startGateway(t, { redis: { tls: true }, upstream: `tls: { enabled: true, ca: "${cert.certFile}", servername: localhost }` })
  const c = await RawClient.connect(gw.port)
  t.teardown(() => c.close())
  c.send(`AUTH ${await gw.token()}\r\nSET tls yes\r\nGET tls\r\nACL WHOAMI\r\n`)
  t.equal(await c.lines(6), '+OK\r\n+OK\r\n$3\r\nyes\r\n$7\r\ngateway\r\n')
})

t.test('an upstream certificate that does not verify ends the session', async t => {
  const gw = await startGateway(t, { redis: { tls: true }, upstream: 'tls: { enabled: true, servername: localhost }' })
  const c = await RawClient.connect(gw.port)
  t.teardown(() => c.close())
  c.send(`AUTH ${await gw.token()}\r\nGET x\r\n`)
  const out = await c.read(() => c.closed)
  t.match(out, /^-ERR upstream connection lost\r\n$/)
  t.ok(c.closed)
})
