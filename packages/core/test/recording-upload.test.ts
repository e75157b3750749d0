import t, { type Test } from 'tap'
import { randomBytes } from 'node:crypto'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { mkdir, readFile, truncate, writeFile } from 'node:fs/promises'
import { createServer, connect, type Socket } from 'node:net'
import { basename, dirname, join } from 'node:path'
import { GetObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3'
import { startS3, type S3Store } from '@portcullis/fixtures/s3'
import { createCore, type CoreOptions } from '../src/core.ts'
import { parseConfig } from '../src/config/parse.ts'
import type { RecordingUploadConfig } from '../src/config/types.ts'
import { createUploader, openRecorder, verifyRecording, type Uploader } from '../src/recording/index.ts'
import { auditSink, op, setup, tempDir } from './helpers.ts'

const principal = { subject: 'alice', groups: ['agents'], issuer: 'https://idp.example.com/' }

async function store(t: Test): Promise<S3Store> {
  const s3 = await startS3()
  t.teardown(() => s3.destroy())
  return s3
}

function uploadConfig(endpoint: string, bucket: string, extra: Partial<RecordingUploadConfig> = {}): RecordingUploadConfig {
  return {
    s3: { endpoint, bucket, prefix: 'gw-1/', region: 'us-east-1', accessKeyId: { secret: 'ak' }, secretAccessKey: { secret: 'sk' }, forcePathStyle: true },
    maxSpoolBytes: 1024 ** 3,
    maxRetryDelayMs: 200,
    ...extra,
  }
}

function uploader(t: Test, s3: S3Store, config: RecordingUploadConfig, log: string[] = []): Uploader {
  const secrets: Record<string, string> = { ak: s3.accessKeyId, sk: s3.secretAccessKey }
  const u = createUploader({ config, secret: async ref => secrets[ref.secret]!, log: (msg, fields) => log.push(`${msg} ${JSON.stringify(fields ?? {})}`) })
  t.teardown(() => u.close(0))
  return u
}

function client(t: Test, s3: S3Store): S3Client {
  const c = new S3Client({ endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } })
  t.teardown(() => c.destroy())
  return c
}

async function object(c: S3Client, bucket: string, key: string): Promise<Buffer> {
  const r = await c.send(new GetObjectCommand({ Bucket: bucket, Key: key }))
  return Buffer.from(await r.Body!.transformToByteArray())
}

async function keys(c: S3Client, bucket: string): Promise<string[]> {
  const r = await c.send(new ListObjectsV2Command({ Bucket: bucket }))
  return (r.Contents ?? []).map(o => o.Key!).sort()
}

/** a sealed recording of a short session; answers its path and bytes */
async function recording(dir: string, n = 3): Promise<{ path: string; bytes: Buffer }> {
  const rec = openRecorder({ dir, sessionId: 'ses_' + randomBytes(6).toString('hex'), target: 'docs-db', protocol: 'postgres', principal })
  for (let i = 0; i < n; i++) {
    rec.record('request', { statement: `SELECT email FROM customers WHERE id = ${i}` })
    rec.record('response', { rows: [{ id: i, email: '[REDACTED:email]' }] })
  }
  await rec.close('client closed')
  return { path: rec.path, bytes: await readFile(rec.path) }
}

/** descriptors this process holds on files under `dir` (Linux /proc) */
async function openUnder(dir: string): Promise<number> {
  const { readdir: ls, readlink } = await import('node:fs/promises')
  let n = 0
  for (const fd of await ls('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '')
    if (target.startsWith(dir)) n++
  }
  return n
}

async function until(cond: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const end = Date.now() + 30_000
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise(r => setTimeout(r, 20))
  }
}

t.test('a sealed recording is uploaded byte for byte under <prefix><day>/<session>.pcr, then removed locally', async t => {
  const s3 = await store(t)
  const dir = await tempDir(t)
  const u = uploader(t, s3, uploadConfig(s3.endpoint, s3.bucket))
  const { path, bytes } = await recording(dir)
  u.opened(path)
  u.sealed(path)
  t.equal(u.spoolFiles, 1, 'it waits in the spool until confirmed')
  await u.idle()
  t.notOk(existsSync(path), 'the local file is gone once the store confirmed it')
  const key = `gw-1/${basename(dirname(path))}/${basename(path)}`
  t.equal(u.keyOf(path), key)
  const c = client(t, s3)
  t.same(await object(c, s3.bucket, key), bytes, 'the object is the file')
  t.equal(u.spoolBytes, 0)
  t.equal(u.spoolFiles, 0)
})

t.test('the store down while sessions end: nothing is removed or lost, uploads resume when it is back', async t => {
  const s3 = await store(t)
  const dir = await tempDir(t)
  const log: string[] = []
  const u = uploader(t, s3, uploadConfig(s3.endpoint, s3.bucket), log)
  await s3.stop()
  const recs = [await recording(dir), await recording(dir, 50), await recording(dir, 1)]
  for (const r of recs) u.sealed(r.path)
  await until(() => log.some(l => l.startsWith('recording upload failed; retrying')), 'a failed upload to be logged')
  // several retries against the stopped store
  await new Promise(r => setTimeout(r, 600))
  for (const r of recs) t.ok(existsSync(r.path), 'kept while the store is down')
  t.ok((await openUnder(dir)) <= 4, 'retries do not pile up open files (at most two uploads hold two each)')
  t.equal(u.spoolFiles, 3)
  t.equal(u.spoolBytes, recs.reduce((n, r) => n + r.bytes.length, 0))
  t.equal(log.filter(l => l.startsWith('recording upload failed')).length, 1, 'an outage is logged once, not per retry')
  t.notOk(log.join('\n').includes(s3.secretAccessKey), 'no credential in the log')

  await s3.start()
  await u.idle()
  for (const r of recs) t.notOk(existsSync(r.path), 'removed after the upload was confirmed')
  const c = client(t, s3)
  t.equal((await keys(c, s3.bucket)).length, 3)
  for (const r of recs) {
    t.same(await object(c, s3.bucket, u.keyOf(r.path)), r.bytes)
  }
  t.ok(log.some(l => l.startsWith('recording uploads resumed')))
})

t.test('at start, recordings a crashed run left behind are uploaded; a file being written is left alone', async t => {
  const s3 = await store(t)
  const dir = await tempDir(t)
  const sealed = await recording(dir)
  // a crash mid-session: the file ends inside its records, without a seal
  const cut = await recording(dir, 20)
  await truncate(cut.path, cut.bytes.length - 40)
  const live = join(dirname(sealed.path), 'ses_live.pcr')
  await writeFile(live, 'being written')
  const u = uploader(t, s3, uploadConfig(s3.endpoint, s3.bucket))
  u.opened(live)
  t.equal(await u.resume(dir), 2)
  await u.idle()
  t.notOk(existsSync(sealed.path))
  t.notOk(existsSync(cut.path))
  t.ok(existsSync(live), 'the live recording stays')
  const c = client(t, s3)
  t.same(await keys(c, s3.bucket), [u.keyOf(cut.path), u.keyOf(sealed.path)].sort())
  // the cut recording is kept as it was: verify says what it is
  const back = join(dir, 'back.pcr')
  await writeFile(back, await object(c, s3.bucket, u.keyOf(cut.path)))
  t.not((await verifyRecording(back)).status, 'intact')
})

/** a TCP relay to the store that flips `marker`'s last byte in request bodies while `corrupt` is set */
async function corruptingRelay(t: Test, port: number, marker: Buffer): Promise<{ endpoint: string; corrupt: boolean }> {
  const state = { endpoint: '', corrupt: true }
  const sockets = new Set<Socket>()
  const server = createServer(client => {
    const upstream = connect(port, '127.0.0.1')
    sockets.add(client).add(upstream)
    client.on('data', (d: Buffer) => {
      if (state.corrupt) {
        for (let at = d.indexOf(marker); at >= 0; at = d.indexOf(marker, at + 1)) d[at + marker.length - 1] ^= 1
      }
      upstream.write(d)
    })
    upstream.pipe(client)
    const end = () => {
      client.destroy()
      upstream.destroy()
    }
    client.on('error', end).on('close', end)
    upstream.on('error', end).on('close', end)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(() => {
    for (const s of sockets) s.destroy()
    server.close()
  })
  state.endpoint = `http://127.0.0.1:${(server.address() as { port: number }).port}`
  return state
}

t.test('an object the store holds with other bytes than the file is not confirmed: the file stays until one is', async t => {
  const s3 = await store(t)
  const dir = await tempDir(t)
  const marker = Buffer.from('customers WHERE id = 1')
  const relay = await corruptingRelay(t, s3.port, marker)
  const log: string[] = []
  const u = uploader(t, s3, uploadConfig(relay.endpoint, s3.bucket), log)
  const r = await recording(dir)
  t.ok(r.bytes.includes(marker))
  u.sealed(r.path)
  await until(() => log.some(l => l.includes('not confirmed')), 'the mismatch to be seen')
  t.ok(existsSync(r.path), 'the file is kept')
  relay.corrupt = false
  await u.idle()
  t.notOk(existsSync(r.path))
  t.same(await object(client(t, s3), s3.bucket, u.keyOf(r.path)), r.bytes, 'what the store holds now is the file')
})

const RULES = `
  - { id: agents-read, when: { groups: [agents], class: [read] }, action: allow }`

async function coreWithUpload(t: Test, s3: S3Store, onFailure: 'block' | 'allow', maxSpool: string, given?: Awaited<ReturnType<typeof setup>>, opts: Pick<CoreOptions, 'resumeSpool'> = {}) {
  const s = given ?? (await setup(t, RULES))
  const upload = `recording:
  dir: "${join(s.dir, 'recordings')}"
  onFailure: ${onFailure}
  upload:
    s3: { endpoint: "${s3.endpoint}", bucket: ${s3.bucket}, region: us-east-1, accessKeyId: { secret: ak }, secretAccessKey: { secret: sk } }
    maxSpool: ${maxSpool}
    maxRetryDelay: 200ms`
  const yaml = s.yaml
    .replace(/recording: \{[^}]*\}/, upload)
    .replace('secrets:\n', `secrets:\n  ak: { env: PORTCULLIS_TEST_S3_KEY }\n  sk: { env: PORTCULLIS_TEST_S3_SECRET }\n`)
  process.env.PORTCULLIS_TEST_S3_KEY = s3.accessKeyId
  process.env.PORTCULLIS_TEST_S3_SECRET = s3.secretAccessKey
  const config = parseConfig(yaml, 'test.yaml')
  const audit = auditSink()
  const core = await createCore(config, { auditStream: audit.stream, ...opts })
  t.teardown(() => core.close({ uploadWaitMs: 0 }))
  return { ...s, core, audit }
}

t.test('spool full with onFailure block: every operation is refused until uploads catch up', async t => {
  const s3 = await store(t)
  // one recording of a few hundred bytes fills a 100-byte spool
  const { core, issuer, audit } = await coreWithUpload(t, s3, 'block', '100')
  await s3.stop()
  const first = core.openSession(core.config.targets[0], '127.0.0.1:50000')
  await first.authenticate(await issuer.mint({ sub: 'agent-1', groups: ['agents'] }))
  t.equal((await first.decide(op('read', 'SELECT 1'))).action, 'allow')
  const other = core.openSession(core.config.targets[0], '127.0.0.1:50001')
  await other.authenticate(await issuer.mint({ sub: 'agent-2', groups: ['agents'] }))
  await first.close()
  await until(() => core.uploader!.full, 'the spool to fill')
  await t.rejects(other.decide(op('read', 'SELECT 2')), { code: 'RECORDING_FAILED', message: /spool full/ })
  t.match(core.metrics.render(), /^portcullis_recording_spool_files 1$/m)
  t.match(core.metrics.render(), /^portcullis_recording_spool_full 1$/m)
  const late = core.openSession(core.config.targets[0], '127.0.0.1:50002')
  await late.authenticate(await issuer.mint({ sub: 'agent-3', groups: ['agents'] }))
  await t.rejects(late.decide(op('read', 'SELECT 3')), { code: 'RECORDING_FAILED' }, 'a new session too')
  t.match(audit.text(), /recording spool full/)

  await s3.start()
  await until(() => !core.uploader!.full, 'the spool to drain')
  t.equal((await late.decide(op('read', 'SELECT 4'))).action, 'allow', 'operations run again')
  t.match(core.metrics.render(), /^portcullis_recording_spool_bytes 0$/m)
  t.equal((await other.decide(op('read', 'SELECT 5'))).action, 'allow')
  t.notOk(audit.text().includes(s3.secretAccessKey), 'no credential in the audit log')
})

t.test('spool full with onFailure allow: operations go on, recordings keep waiting on disk', async t => {
  const s3 = await store(t)
  const { core, issuer, dir } = await coreWithUpload(t, s3, 'allow', '100')
  await s3.stop()
  const first = core.openSession(core.config.targets[0], '127.0.0.1:50000')
  await first.authenticate(await issuer.mint({ sub: 'agent-1', groups: ['agents'] }))
  const path = first.recorder!.path
  await first.close()
  await until(() => core.uploader!.full, 'the spool to fill')
  const other = core.openSession(core.config.targets[0], '127.0.0.1:50001')
  await other.authenticate(await issuer.mint({ sub: 'agent-2', groups: ['agents'] }))
  t.equal((await other.decide(op('read', 'SELECT 1'))).action, 'allow')
  t.ok(existsSync(path), 'the waiting recording is still on disk')
  t.ok(path.startsWith(join(dir, 'recordings')))
  await s3.start()
  await until(() => !existsSync(path), 'the recording to be uploaded')
})

t.test('a session through the core ends up in the bucket, intact', async t => {
  const s3 = await store(t)
  const { core, issuer, dir } = await coreWithUpload(t, s3, 'block', '1GiB')
  const session = core.openSession(core.config.targets[0], '127.0.0.1:50000')
  await session.authenticate(await issuer.mint({ sub: 'agent-1', groups: ['agents'] }))
  await session.decide(op('read', 'SELECT * FROM customers'))
  const path = session.recorder!.path
  await session.close()
  await core.uploader!.idle()
  t.notOk(existsSync(path))
  const back = join(dir, 'back.pcr')
  await mkdir(dirname(back), { recursive: true })
  await writeFile(back, await object(client(t, s3), s3.bucket, core.uploader!.keyOf(path)))
  t.equal((await verifyRecording(back)).status, 'intact')
})

t.test('a core started over a recording directory with leftovers uploads them before anything else happens', async t => {
  const s3 = await store(t)
  const s = await setup(t, RULES)
  // a previous run's recordings: one sealed, one cut off by a crash
  const left = [await recording(join(s.dir, 'recordings')), await recording(join(s.dir, 'recordings'), 10)]
  await truncate(left[1]!.path, left[1]!.bytes.length - 7)
  const { core } = await coreWithUpload(t, s3, 'block', '1GiB', s)
  await until(() => left.every(r => !existsSync(r.path)), 'the leftovers to be uploaded')
  const c = client(t, s3)
  t.same(await keys(c, s3.bucket), left.map(r => core.uploader!.keyOf(r.path)).sort())
  t.same(await object(c, s3.bucket, core.uploader!.keyOf(left[0]!.path)), left[0]!.bytes)
})

t.test('with several workers on one spool, the first has queued the leftovers before its core is up; the others leave the spool alone', async t => {
  const s3 = await store(t)
  const s = await setup(t, RULES)
  const left = [await recording(join(s.dir, 'recordings')), await recording(join(s.dir, 'recordings'))]
  // a second worker (resumeSpool: false) starting over the same directory: the leftovers are not its own
  const { core: other, issuer } = await coreWithUpload(t, s3, 'block', '1GiB', s, { resumeSpool: false })
  t.equal(other.uploader!.spoolFiles, 0, 'nothing queued')
  // its own sessions' recordings still go up
  const session = other.openSession(other.config.targets[0], '127.0.0.1:50001')
  await session.authenticate(await issuer.mint({ sub: 'agent-1', groups: ['agents'] }))
  await session.decide(op('read', 'SELECT * FROM customers'))
  const own = session.recorder!.path
  await session.close()
  await other.uploader!.idle()
  t.notOk(existsSync(own), "its own recording was uploaded and removed")
  t.ok(left.every(r => existsSync(r.path)), 'the leftovers are still on disk')
  t.same(await keys(client(t, s3), s3.bucket), [other.uploader!.keyOf(own)])
  // the first worker (resumeSpool: true): the scan is done when createCore returns, before it listens
  const { core: first } = await coreWithUpload(t, s3, 'block', '1GiB', s, { resumeSpool: true })
  t.ok(first.uploader!.spoolFiles >= 1 || left.every(r => !existsSync(r.path)), 'the leftovers are queued at once')
  await until(() => left.every(r => !existsSync(r.path)), 'the leftovers to be uploaded')
  t.pass('and uploaded')
})

t.test('shutdown waits for the uploads of the sessions it sealed; with the store down it leaves them for the next start', async t => {
  const s3 = await store(t)
  const { core, issuer } = await coreWithUpload(t, s3, 'block', '1GiB')
  const session = core.openSession(core.config.targets[0], '127.0.0.1:50000')
  await session.authenticate(await issuer.mint({ sub: 'agent-1', groups: ['agents'] }))
  const path = session.recorder!.path
  const key = core.uploader!.keyOf(path)
  // the session is still open: close() seals it, then uploads it before returning
  await core.close()
  t.notOk(existsSync(path))
  t.ok((await object(client(t, s3), s3.bucket, key)).length > 0)

  const down = await coreWithUpload(t, s3, 'block', '1GiB')
  await s3.stop()
  const other = down.core.openSession(down.core.config.targets[0], '127.0.0.1:50001')
  await other.authenticate(await down.issuer.mint({ sub: 'agent-2', groups: ['agents'] }))
  const kept = other.recorder!.path
  await down.core.close({ uploadWaitMs: 300 })
  t.ok(existsSync(kept), 'the recording stays in the spool')
  t.match(down.audit.text(), /recordings left in the spool; they are uploaded at the next start/)
  await s3.start()
})

t.test('a recording removed from the spool by hand before its upload is dropped from the queue, not retried for ever', async t => {
  const s3 = await store(t)
  const dir = await tempDir(t)
  const log: string[] = []
  const u = uploader(t, s3, uploadConfig(s3.endpoint, s3.bucket), log)
  await s3.stop()
  const gone = await recording(dir)
  const kept = await recording(dir)
  u.sealed(gone.path)
  u.sealed(kept.path)
  await until(() => log.some(l => l.startsWith('recording upload failed')), 'the store to be seen down')
  const { unlink } = await import('node:fs/promises')
  await unlink(gone.path)
  await s3.start()
  await u.idle()
  t.equal(u.spoolFiles, 0)
  t.equal(u.spoolBytes, 0)
  t.ok(log.some(l => l.startsWith('recording vanished from the spool')))
  t.same(await keys(client(t, s3), s3.bucket), [u.keyOf(kept.path)])
})
