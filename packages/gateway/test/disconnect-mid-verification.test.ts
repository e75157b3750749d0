// Clients that hang up while their token is being verified (an identity provider that is slow to
// serve its keys), 100 per protocol, through the real gateway and the real codecs: afterwards the
// process holds no more file descriptors than before, no session is left, and no recording was
// opened (and so none stays unsealed). Then clients that stay are served, and their recordings seal.
import t from 'tap'
import { readdirSync } from 'node:fs'
import { readFile } from 'node:fs/promises'
import { connect, type Socket } from 'node:net'
import { once } from 'node:events'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import pg from 'pg'
import { parseConfig, verifyRecording } from '@portcullis/core'
import { startHeldJwks, startHttpUpstream } from '@portcullis/fixtures/http-upstream'
import { startPglite } from '@portcullis/fixtures/pglite'
import { startRedis } from '@portcullis/fixtures/redis'
import { startGateway } from '../src/index.ts'
import { silentLogger } from '../src/log.ts'
import { recordingsIn, testEnv, waitFor } from './helpers.ts'

const CLIENTS = 100
const run = promisify(execFile)
const openFds = () => readdirSync('/proc/self/fd').length

/** Postgres: StartupMessage, wait for the password request, send the token as the password */
async function postgresClient(port: number, token: string): Promise<Socket> {
  const sock = connect({ host: '127.0.0.1', port })
  await once(sock, 'connect')
  const params = Buffer.from('user\0agent\0database\0postgres\0\0')
  const startup = Buffer.alloc(8)
  startup.writeInt32BE(8 + params.length)
  startup.writeInt32BE(196608, 4)
  sock.write(Buffer.concat([startup, params]))
  const [ask] = (await once(sock, 'data')) as [Buffer]
  if (ask[0] !== 0x52 /* R */ || ask.readInt32BE(5) !== 3) throw new Error('expected AuthenticationCleartextPassword')
  const pw = Buffer.from(token + '\0')
  const msg = Buffer.alloc(5)
  msg[0] = 0x70 /* p */
  msg.writeInt32BE(4 + pw.length, 1)
  sock.write(Buffer.concat([msg, pw]))
  return sock
}

async function redisClient(port: number, token: string): Promise<Socket> {
  const sock = connect({ host: '127.0.0.1', port })
  await once(sock, 'connect')
  sock.write(`*2\r\n$4\r\nAUTH\r\n$${token.length}\r\n${token}\r\n`)
  return sock
}

async function httpClient(port: number, token: string): Promise<Socket> {
  const sock = connect({ host: '127.0.0.1', port })
  await once(sock, 'connect')
  sock.write(`GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n\r\n`)
  return sock
}

t.test('100 clients per protocol that leave mid-verification leave no descriptor, session or recording behind', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  // a dev token adds its public key to the issuer's key set: mint first, then serve that set
  const token = await env.token('agent-1', ['agents'])
  const jwksFile = env.config({ admin: false }).identity.issuers[0]!.jwksFile!
  const jwks = await startHeldJwks(JSON.parse(await readFile(jwksFile, 'utf8')))
  t.teardown(() => jwks.stop())
  const pglite = await startPglite({ seed: false })
  t.teardown(() => pglite.stop())
  const redis = await startRedis({ password: 'redis-upstream-pw' })
  t.teardown(() => redis.stop())
  const llm = await startHttpUpstream()
  t.teardown(() => llm.stop())

  const targets = `
  - { name: pg, protocol: postgres, listen: 127.0.0.1:0,
      upstream: { host: ${pglite.host}, port: ${pglite.port}, database: ${pglite.database}, user: ${pglite.user}, password: { secret: pg } } }
  - { name: cache, protocol: redis, listen: 127.0.0.1:0, upstream: { host: 127.0.0.1, port: ${redis.port}, password: { secret: redis } } }
  - { name: llm, protocol: http, listen: 127.0.0.1:0, upstream: { url: ${JSON.stringify(llm.url)} }, options: { profile: openai } }`
  const rules = `
  - { id: read, when: { groups: [agents], class: [session, read] }, action: allow }`
  process.env.PORTCULLIS_TEST_MID_PG = pglite.password
  process.env.PORTCULLIS_TEST_MID_REDIS = 'redis-upstream-pw'
  t.teardown(() => {
    delete process.env.PORTCULLIS_TEST_MID_PG
    delete process.env.PORTCULLIS_TEST_MID_REDIS
  })
  const yaml = env
    .yaml({ admin: false, targets, rules })
    .replace(`jwksFile: ${JSON.stringify(jwksFile)}`, `jwks: ${JSON.stringify(jwks.url)}, jwksTimeout: 2m`)
    .replace('recording:', 'secrets: { pg: { env: PORTCULLIS_TEST_MID_PG }, redis: { env: PORTCULLIS_TEST_MID_REDIS } }\nrecording:')
  t.match(yaml, jwks.url, 'the issuer keys come from the held JWKS')
  const audit = new PassThrough()
  let auditText = ''
  audit.on('data', (d) => (auditText += String(d)))
  const gw = await startGateway(parseConfig(yaml, join(env.dir, 'portcullis.yaml')), { log: silentLogger, auditStream: audit })
  t.teardown(() => gw.close(100))
  const recordings = join(env.dir, 'recordings')
  const ports = { pg: gw.targets.pg!.port, cache: gw.targets.cache!.port, llm: gw.targets.llm!.port }

  const baseline = openFds()
  // all at once: the identity provider's keys must still be on their way (jose gives up after 5 s)
  const clients: Socket[] = (
    await Promise.all(
      Array.from({ length: CLIENTS }, () => [postgresClient(ports.pg, token), redisClient(ports.cache, token), httpClient(ports.llm, token)]).flat(),
    )
  )
  await waitFor(() => jwks.requests >= 1, 'the gateway to ask for the keys')
  t.ok(jwks.requests >= 1, 'verification is waiting on the identity provider')
  t.equal(gw.core.sessions().length, 3 * CLIENTS, 'every client has a session')
  t.equal(gw.core.sessions().filter((s) => s.subject !== undefined).length, 0, 'none of them verified yet')
  // every client hangs up, half with a FIN and half with a reset, before the keys arrive
  for (const [i, c] of clients.entries()) {
    if (i % 2) c.destroy()
    else c.resetAndDestroy()
  }
  await waitFor(() => gw.core.sessions().length === 0, 'the sessions to close')
  t.equal(jwks.requests, 1, 'the keys are still on their way')

  // each of the 300 authentications ended with its session, refused; none got to open a recorder
  const ended = () => (auditText.match(/"error":"authentication (?:failed: session closed|completed after the session ended)/g) ?? []).length
  // (on failure, go on: what a late verification leaves behind is checked below)
  await waitFor(() => ended() === 3 * CLIENTS, `${3 * CLIENTS} authentications to end with their sessions`).catch(() => {})
  t.equal(ended(), 3 * CLIENTS, 'every client was mid-verification when its session ended')
  t.notMatch(auditText, /issuer keys unavailable/, 'no verification timed out: the sessions ended first')
  // the keys arrive now, for sessions that are gone (the fetch's own connection is one of the fds)
  jwks.release()
  await waitFor(() => openFds() <= baseline, 'the key fetch to finish and every descriptor to close').catch(() => {})
  t.ok(openFds() <= baseline, `open fds ${openFds()} <= ${baseline} before the clients came`)
  t.same(await recordingsIn(recordings), [], 'no recording was opened for a session that had ended')
  t.same(gw.core.sessions(), [])

  // clients that stay are served on all three, and their recordings seal
  const agent = new pg.Client({ host: '127.0.0.1', port: ports.pg, user: 'agent', database: 'postgres', password: token })
  await agent.connect()
  t.equal((await agent.query('SELECT 1 AS one')).rows[0].one, 1)
  await agent.end()
  const ping = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(ports.cache), '--no-auth-warning', '-a', token, 'PING'])
  t.equal(ping.stdout.trim(), 'PONG')
  const models = await fetch(`http://127.0.0.1:${ports.llm}/v1/models`, { headers: { authorization: `Bearer ${token}` } })
  t.equal(models.status, 200)
  await models.text()
  await waitFor(() => gw.core.sessions().length === 0, 'the served sessions to close', 10_000).catch(() => {
    const errs: Record<string, number> = {}
    for (const l of auditText.split('\n').filter(Boolean)) {
      const e = JSON.parse(l)
      const k = e.protocol + ' ' + e.error
      errs[k] = (errs[k] ?? 0) + 1
    }
    console.error('AUDIT', errs)
  })
  await gw.close(2000)
  const files = await recordingsIn(recordings)
  t.ok(files.length >= 3, 'the sessions that stayed were recorded')
  for (const f of files) t.equal((await verifyRecording(f)).status, 'intact', `${f} is sealed`)
})
