import t from 'tap'
import { copyFile, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { parseConfig } from '@portcullis/core'
import { startGateway } from '../src/index.ts'
import { silentLogger } from '../src/log.ts'
import { lineClient, lineCodec, portcullis, recordingsIn, testEnv, waitFor } from './helpers.ts'

t.test('verify and replay a recording made by a real session', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  // Recordings signed with an HMAC key from a file secret; verify reads the same file.
  const keyFile = join(env.dir, 'recording.key')
  await writeFile(keyFile, 'a-long-random-recording-key\n')
  const yaml = env
    .yaml({ admin: false })
    .replace(/recording: \{ (dir: [^,]+), onFailure: block \}/, `secrets: { rk: { file: ${JSON.stringify(keyFile)} } }\nrecording: { $1, onFailure: block, sign: { hmacKey: { secret: rk } } }`)
  t.match(yaml, /sign: \{ hmacKey/)
  const gw = await startGateway(parseConfig(yaml, join(env.dir, 'p.yaml')), {
    log: silentLogger,
    auditStream: new PassThrough().resume(),
    codecs: [lineCodec()],
  })
  t.teardown(() => gw.close(100))
  const c = await lineClient(gw.targets.lines!.port)
  c.send(`AUTH ${await env.token('ann', ['agents'])}`)
  t.equal(await c.next(), 'OK ann')
  c.send('read SELECT name FROM customers')
  t.equal(await c.next(), 'ALLOW read')
  c.send('QUIT')
  await c.closed
  await waitFor(() => gw.core.sessions().length === 0, 'the session to be sealed')
  const [file] = await recordingsIn(join(env.dir, 'recordings'))

  const ok = await portcullis(['verify', file!, '--hmac-key-file', keyFile])
  t.equal(ok.code, 0, ok.stdout + ok.stderr)
  t.match(ok.stdout, /: intact \(\d+ records, signature valid\)/)
  const wrongKey = join(env.dir, 'wrong.key')
  await writeFile(wrongKey, 'not-the-key')
  const forged = await portcullis(['verify', file!, '--hmac-key-file', wrongKey])
  t.equal(forged.code, 1, 'a seal that does not match the key fails')
  t.match(forged.stdout, /signature invalid/)

  const replay = await portcullis(['replay', file!])
  t.equal(replay.code, 0, replay.stderr)
  t.match(replay.stdout, /ann/, 'the transcript names the principal')
  t.match(replay.stdout, /SELECT name FROM customers/, 'and the statement')
  t.notMatch(replay.stdout, /eyJ[\w-]+\.[\w-]+\./, 'and never the token')

  // Flip one byte near the end of the body (inside a record, before the seal).
  const tampered = join(env.dir, 'tampered.pcr')
  await copyFile(file!, tampered)
  const bytes = await readFile(tampered)
  bytes[Math.floor(bytes.length / 2)]! ^= 0xff
  await writeFile(tampered, bytes)
  const bad = await portcullis(['verify', tampered])
  t.equal(bad.code, 1)
  t.match(bad.stdout, /tampered|truncated/)
  t.match(bad.stdout, /record \d+/, 'says where')
})

t.test('approvals list and approve against a running gateway', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const gw = await startGateway(env.config(), { log: silentLogger, auditStream: new PassThrough().resume(), codecs: [lineCodec()] })
  t.teardown(() => gw.close(100))
  const c = await lineClient(gw.targets.lines!.port)
  c.send(`AUTH ${await env.token('ann', ['agents'])}`)
  t.equal(await c.next(), 'OK ann')
  c.send('write UPDATE customers')
  const id = (await c.next()).split(' ')[1]!

  const approver = await env.token('bea', ['approvers'])
  const envVars = { PORTCULLIS_ADMIN: gw.admin!.url, PORTCULLIS_TOKEN: approver }
  const list = await portcullis(['approvals', 'list'], envVars)
  t.equal(list.code, 0, list.stderr)
  t.match(list.stdout, new RegExp(`^${id}  pending  ann \\(agents\\)  lines  write`, "m"))
  t.match(list.stdout, /UPDATE customers/)

  const approve = await portcullis(['approvals', 'approve', id, '--admin', gw.admin!.url, '--token', approver])
  t.equal(approve.code, 0, approve.stderr)
  t.equal(approve.stdout.trim(), `${id}: approved`)
  t.equal(await c.next(), 'ALLOW agents-write')

  const noToken = await portcullis(['approvals', 'list', '--admin', gw.admin!.url], { PORTCULLIS_TOKEN: '' })
  t.equal(noToken.code, 2, 'a token must be given')
  t.match(noToken.stderr, /token is required/)
  c.socket.destroy()
})
