import t from 'tap'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { connect } from 'node:net'
import { once } from 'node:events'
import type { ProtocolCodec } from '@portcullis/core'
import { startGateway } from '../src/index.ts'
import { silentLogger } from '../src/log.ts'
import { lineClient, lineCodec, recordingsIn, testEnv, waitFor } from './helpers.ts'

const quiet = { log: silentLogger, auditStream: new PassThrough().resume() }

t.test('each connection is a session: authenticated, decided, listed, then closed and recorded', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const gw = await startGateway(env.config({ admin: false }), { ...quiet, codecs: [lineCodec()] })
  t.teardown(() => gw.close(100))
  const { port } = gw.targets.lines!
  t.ok(port > 0, 'port 0 became an ephemeral port')

  const c = await lineClient(port)
  c.send(`AUTH ${await env.token('ann', ['agents'])}`)
  t.equal(await c.next(), 'OK ann')
  c.send('read SELECT customers')
  t.equal(await c.next(), 'ALLOW read')
  c.send('admin COPY files')
  t.match(await c.next(), /^BLOCK no-admin admin is blocked/)
  t.same(gw.core.sessions().map((s) => s.subject), ['ann'], 'the live session is listed with its subject')

  c.send('QUIT')
  await c.closed
  await waitFor(() => gw.core.sessions().length === 0, 'session to close')
  const files = await recordingsIn(join(env.dir, 'recordings'))
  t.equal(files.length, 1, 'one recording for the one session')
})

t.test('a bad token ends the connection and no session stays open', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const gw = await startGateway(env.config({ admin: false }), { ...quiet, codecs: [lineCodec()] })
  t.teardown(() => gw.close(100))
  const c = await lineClient(gw.targets.lines!.port)
  c.send('AUTH not-a-token')
  t.match(await c.next(), /^ERR AUTH_FAILED/)
  await c.closed
  await waitFor(() => gw.core.sessions().length === 0, 'session to close')
})

t.test('connections beyond maxConnections are closed at once', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const targets = `
  - { name: lines, protocol: redis, listen: 127.0.0.1:0, upstream: { host: 127.0.0.1, port: 1 }, limits: { maxConnections: 1 } }`
  const gw = await startGateway(env.config({ admin: false, targets }), { ...quiet, codecs: [lineCodec()] })
  t.teardown(() => gw.close(100))
  const port = gw.targets.lines!.port
  const first = await lineClient(port)
  first.send(`AUTH ${await env.token('ann', ['agents'])}`)
  t.equal(await first.next(), 'OK ann')

  const second = await lineClient(port)
  await second.closed
  t.pass('the second connection was closed by the gateway')
  t.equal(gw.core.sessions().length, 1, 'only the first has a session')

  first.send('QUIT')
  await first.closed
  await waitFor(() => gw.core.sessions().length === 0, 'first session to end')
  const third = await lineClient(port)
  third.send(`AUTH ${await env.token('bob', ['agents'])}`)
  t.equal(await third.next(), 'OK bob', 'a slot frees up when a connection ends')
  third.socket.destroy()
})

t.test('a client that never authenticates is dropped after the handshake timeout', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const targets = `
  - { name: lines, protocol: redis, listen: 127.0.0.1:0, upstream: { host: 127.0.0.1, port: 1 }, limits: { handshakeTimeout: 200ms } }`
  const gw = await startGateway(env.config({ admin: false, targets }), { ...quiet, codecs: [lineCodec()] })
  t.teardown(() => gw.close(100))
  const c = await lineClient(gw.targets.lines!.port)
  await c.closed
  t.pass('closed without a word from the client')
  await waitFor(() => gw.core.sessions().length === 0, 'session to close')
})

t.test('an idle session is dropped after the idle timeout', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const targets = `
  - { name: lines, protocol: redis, listen: 127.0.0.1:0, upstream: { host: 127.0.0.1, port: 1 }, limits: { idleTimeout: 1500ms } }`
  const gw = await startGateway(env.config({ admin: false, targets }), { ...quiet, codecs: [lineCodec()] })
  t.teardown(() => gw.close(100))
  // mint before connecting: on a loaded machine minting alone can outlast a short idle timeout
  const token = await env.token('ann', ['agents'])
  const c = await lineClient(gw.targets.lines!.port)
  c.send(`AUTH ${token}`)
  t.equal(await c.next(), 'OK ann')
  await c.closed
  t.pass('the authenticated but silent client was disconnected')
})

t.test('a sniffing listener hands each connection to the codec that recognises it', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const targets = `
  - { name: lines, protocol: redis, listen: 127.0.0.1:0, upstream: { host: 127.0.0.1, port: 1 }, options: { sniff: true } }`
  // Two codecs with different first bytes; the gateway must pick by content, not by target protocol.
  const seen: string[] = []
  const tag = (c: ProtocolCodec, name: string): ProtocolCodec => ({
    protocol: c.protocol,
    sniff: c.sniff,
    serve: (s, session) => {
      seen.push(name)
      return c.serve(s, session)
    },
  })
  const codecs = [tag(lineCodec('redis', 'R:'), 'redis'), tag(lineCodec('http', 'H:'), 'http')]
  const gw = await startGateway(env.config({ admin: false, targets }), { ...quiet, codecs })
  t.teardown(() => gw.close(100))
  const port = gw.targets.lines!.port
  const token = await env.token('ann', ['agents'])

  const h = await lineClient(port)
  // Split the sniffed prefix across writes: the gateway must wait for enough bytes.
  h.socket.write('H:AU')
  await new Promise((r) => setTimeout(r, 50))
  h.send(`TH ${token}`)
  t.equal(await h.next(), 'OK ann')
  h.send('H:read GET thing')
  t.equal(await h.next(), 'ALLOW read', 'the bytes read while sniffing reached the codec')

  const r = await lineClient(port)
  r.send(`R:AUTH ${token}`)
  t.equal(await r.next(), 'OK ann')
  t.same(seen, ['http', 'redis'])

  const x = await lineClient(port)
  x.send('GARBAGE')
  await x.closed
  t.pass('bytes no codec recognises close the connection')
  h.socket.destroy()
  r.socket.destroy()
})

t.test('a codec that throws does not take the gateway down', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  let calls = 0
  const flaky: ProtocolCodec = {
    protocol: 'redis',
    sniff: () => true,
    async serve(client, session) {
      if (++calls === 1) throw new Error('codec bug')
      return lineCodec().serve(client, session)
    },
  }
  const errors: string[] = []
  const log = { ...silentLogger, error: (_o: object, msg?: string) => void errors.push(msg ?? '') }
  const gw = await startGateway(env.config({ admin: false }), { auditStream: quiet.auditStream, log, codecs: [flaky] })
  t.teardown(() => gw.close(100))
  const port = gw.targets.lines!.port
  const a = await lineClient(port)
  await a.closed
  t.same(errors, ['session failed'], 'the failure is logged')
  const b = await lineClient(port)
  b.send(`AUTH ${await env.token('ann', ['agents'])}`)
  t.equal(await b.next(), 'OK ann', 'the next connection is served')
  b.socket.destroy()
})

t.test('reload adds and removes listeners while live sessions keep running', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const gw = await startGateway(env.config({ admin: false }), { ...quiet, codecs: [lineCodec()] })
  t.teardown(() => gw.close(100))
  const oldPort = gw.targets.lines!.port
  const c = await lineClient(oldPort)
  c.send(`AUTH ${await env.token('ann', ['agents'])}`)
  t.equal(await c.next(), 'OK ann')

  const targets = `
  - { name: other, protocol: redis, listen: 127.0.0.1:0, upstream: { host: 127.0.0.1, port: 1 } }`
  const rules = `
  - { id: read-v2, when: { groups: [agents], class: [session, read] }, action: allow }`
  await gw.reload(env.config({ admin: false, targets, rules }))
  t.same(Object.keys(gw.targets), ['other'])
  const refused = connect({ port: oldPort, host: '127.0.0.1' })
  const [err] = (await once(refused, 'error')) as [NodeJS.ErrnoException]
  t.equal(err.code, 'ECONNREFUSED', 'the removed target stopped listening')

  c.send('read SELECT customers')
  t.match(await c.next(), /^ALLOW read/, 'the live session on the removed target still works')
  const d = await lineClient(gw.targets.other!.port)
  d.send(`AUTH ${await env.token('bob', ['agents'])}`)
  t.equal(await d.next(), 'OK bob')
  d.send('read SELECT customers')
  t.equal(await d.next(), 'ALLOW read-v2', 'new sessions use the new rules')
  c.socket.destroy()
  d.socket.destroy()
})

t.test('a config file change reloads; a broken file is logged and the old config kept', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const file = join(env.dir, 'portcullis.yaml')
  await writeFile(file, env.yaml({ admin: false }))
  const errors: Array<{ issues?: Array<{ line: number; path: string }> }> = []
  const log = { ...silentLogger, error: (o: object) => void errors.push(o as (typeof errors)[number]) }
  const gw = await startGateway(env.config({ admin: false }), {
    auditStream: quiet.auditStream,
    log,
    codecs: [lineCodec()],
    configFile: file,
    watchDebounceMs: 50,
  })
  t.teardown(() => gw.close(100))

  await writeFile(file, env.yaml({ admin: false }).replace('targets:', 'targets:\n  - { name: 7 }'))
  await waitFor(() => errors.length > 0, 'the bad file to be rejected')
  t.ok(errors[0]!.issues && errors[0]!.issues.length > 0, 'the log names the issues (file:line:key)')
  t.same(Object.keys(gw.targets), ['lines'], 'the running config is kept')

  const rules = `
  - { id: everything-blocked, when: { class: [read] }, action: block }`
  await writeFile(file, env.yaml({ admin: false, rules }))
  await waitFor(() => gw.core.config.rules[0]?.id === 'everything-blocked', 'the good file to load')
  const c = await lineClient(gw.targets.lines!.port)
  c.send(`AUTH ${await env.token('ann', ['agents'])}`)
  t.equal(await c.next(), 'OK ann')
  c.send('read SELECT 1')
  t.match(await c.next(), /^BLOCK everything-blocked/)
  c.socket.destroy()
})

t.test('shutdown lets sessions finish, then aborts the rest at the deadline and seals recordings', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const gw = await startGateway(env.config({ admin: false }), { ...quiet, codecs: [lineCodec()] })
  const port = gw.targets.lines!.port
  const c = await lineClient(port)
  c.send(`AUTH ${await env.token('ann', ['agents'])}`)
  t.equal(await c.next(), 'OK ann')

  const closing = gw.close(300)
  // The listener stops accepting at once.
  await waitFor(async () => {
    const s = connect({ port, host: '127.0.0.1' })
    const r = await Promise.race([once(s, 'error').then(() => true), once(s, 'connect').then(() => false)])
    s.destroy()
    return r
  }, 'listener to stop')
  t.match(await c.next(), /^ERR SESSION_CLOSED/, 'the lingering session is told why it ends')
  await c.closed
  await closing
  t.equal(gw.core.sessions().length, 0)
  const { verifyRecording } = await import('@portcullis/core')
  const [file] = await recordingsIn(join(env.dir, 'recordings'))
  const result = await verifyRecording(file!)
  t.equal(result.status, 'intact', 'the recording was sealed')
})

t.test('a non-Postgres target with tls terminates TLS at the listener', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const { testCertificate } = await import('@portcullis/fixtures/tls')
  const cert = testCertificate()
  await writeFile(join(env.dir, 'cert.pem'), cert.cert)
  await writeFile(join(env.dir, 'key.pem'), cert.key)
  const targets = `
  - { name: lines, protocol: redis, listen: 127.0.0.1:0, upstream: { host: 127.0.0.1, port: 1 },
      tls: { cert: ${JSON.stringify(join(env.dir, 'cert.pem'))}, key: ${JSON.stringify(join(env.dir, 'key.pem'))} } }`
  const gw = await startGateway(env.config({ admin: false, targets }), { ...quiet, codecs: [lineCodec()] })
  t.teardown(() => gw.close(100))
  const { connect: tlsConnect } = await import('node:tls')
  const s = tlsConnect({ host: '127.0.0.1', port: gw.targets.lines!.port, servername: 'localhost', ca: cert.cert })
  await once(s, 'secureConnect')
  t.ok(s.authorized, 'the client verified the gateway certificate')
  s.write(`AUTH ${await env.token('ann', ['agents'])}\n`)
  const [reply] = await once(s, 'data')
  t.equal(String(reply), 'OK ann\n')
  s.destroy()
})

t.test('during shutdown a live session keeps working until it ends on its own', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const gw = await startGateway(env.config({ admin: false }), { ...quiet, codecs: [lineCodec()] })
  const c = await lineClient(gw.targets.lines!.port)
  c.send(`AUTH ${await env.token('ann', ['agents'])}`)
  t.equal(await c.next(), 'OK ann')
  let done = false
  const closing = gw.close(30_000).then(() => (done = true))
  c.send('read SELECT customers')
  t.equal(await c.next(), 'ALLOW read', 'still served while draining')
  t.notOk(done, 'shutdown waits for the session')
  c.send('QUIT')
  await closing
  t.equal(gw.core.sessions().length, 0)
})

t.test('a target whose port is taken fails start-up with the reason; on reload the others still open', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const blocker = (await import('node:net')).createServer().listen(0, '127.0.0.1')
  await once(blocker, 'listening')
  t.teardown(() => blocker.close())
  const taken = (blocker.address() as { port: number }).port
  const targets = `
  - { name: taken, protocol: redis, listen: 127.0.0.1:${taken}, upstream: { host: 127.0.0.1, port: 1 } }`
  await t.rejects(
    startGateway(env.config({ admin: false, targets }), { ...quiet, codecs: [lineCodec()] }),
    { code: 'EADDRINUSE' },
  )

  const gw = await startGateway(env.config({ admin: false }), { ...quiet, codecs: [lineCodec()] })
  t.teardown(() => gw.close(100))
  const both = `
  - { name: taken, protocol: redis, listen: 127.0.0.1:${taken}, upstream: { host: 127.0.0.1, port: 1 } }
  - { name: fresh, protocol: redis, listen: 127.0.0.1:0, upstream: { host: 127.0.0.1, port: 1 } }`
  await gw.reload(env.config({ admin: false, targets: both }))
  t.same(Object.keys(gw.targets), ['fresh'], 'the target that could open did')
})
