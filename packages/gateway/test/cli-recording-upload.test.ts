// recording.upload end to end: a Redis session through `portcullis start` ends up in the bucket,
// and `portcullis verify` / `replay` read it back from s3:// (with --config, or env AWS_*).
import t from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readFile, writeFile } from 'node:fs/promises'
import { connect } from 'node:net'
import { join } from 'node:path'
import { GetObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3'
import { startRedis } from '@portcullis/fixtures/redis'
import { startS3 } from '@portcullis/fixtures/s3'
import { portcullis, recordingsIn, testEnv, waitFor } from './helpers.ts'

const BIN = new URL('../bin/portcullis.mjs', import.meta.url).pathname

t.test('a Redis session through a gateway with recording.upload lands in the bucket; verify and replay read s3://', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const s3 = await startS3({ bucket: 'pcr-archive' })
  t.teardown(() => s3.destroy())
  const secretFile = join(env.dir, 's3-secret')
  await writeFile(secretFile, s3.secretAccessKey + '\n', { mode: 0o600 })
  const recordings = join(env.dir, 'recordings')
  const yaml = env
    .yaml({
      admin: false,
      targets: `\n  - { name: cache, protocol: redis, listen: 127.0.0.1:0, upstream: { host: ${redis.host}, port: ${redis.port} }, options: { commandInfo: builtin } }`,
    })
    .replace(
      /recording: \{ (dir: [^,]+), onFailure: block \}/,
      `secrets:
  s3key: { env: PCT_S3_KEY }
  s3secret: { file: ${JSON.stringify(secretFile)} }
recording:
  $1
  onFailure: block
  upload:
    s3: { endpoint: "${s3.endpoint}", bucket: pcr-archive, prefix: gw-a, region: us-east-1, accessKeyId: { secret: s3key }, secretAccessKey: { secret: s3secret } }
    maxRetryDelay: 200ms`,
    )
  t.match(yaml, /upload:/)
  const file = join(env.dir, 'portcullis.yaml')
  await writeFile(file, yaml)
  const check = await portcullis(['check-config', file])
  t.equal(check.code, 0, check.stdout + check.stderr)

  const child = spawn(process.execPath, [BIN, 'start', '--config', file], {
    env: { ...process.env, PCT_S3_KEY: s3.accessKeyId },
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL')
  })
  let log = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => (log += d))
  const exited = once(child, 'exit')
  await waitFor(() => /"target":"cache".*target ready/.test(log) || child.exitCode !== null, 'the target', 60_000)
  const listen = /"target":"cache","listen":"127\.0\.0\.1:(\d+)"/.exec(log)
  if (!listen) t.comment(log)
  t.ok(listen, 'the target listens')

  const token = await env.token('agent', ['agents'])
  const replies = await resp(Number(listen![1]), [['AUTH', token], ['PING'], ['GET', 'greeting']])
  t.same(replies, ['+OK', '+PONG', '$-1'])

  const store = new S3Client({ endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } })
  t.teardown(() => store.destroy())
  let keys: string[] = []
  await waitFor(async () => {
    const r = await store.send(new ListObjectsV2Command({ Bucket: 'pcr-archive' }))
    keys = (r.Contents ?? []).map((o) => o.Key!)
    return keys.length > 0
  }, 'the recording in the bucket')
  t.match(keys, [/^gw-a\/\d{4}-\d{2}-\d{2}\/ses_[a-z2-7]+\.pcr$/])
  await waitFor(async () => (await recordingsIn(recordings)).length === 0, 'the local copy to go')
  const url = `s3://pcr-archive/${keys[0]}`

  const withConfig = await portcullis(['verify', url, '--config', file], { PCT_S3_KEY: s3.accessKeyId })
  t.equal(withConfig.code, 0, withConfig.stdout + withConfig.stderr)
  t.match(withConfig.stdout, `${url}: intact (`)
  const awsEnv = { AWS_ENDPOINT_URL: s3.endpoint, AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: 'us-east-1' }
  const withEnv = await portcullis(['verify', url], awsEnv)
  t.equal(withEnv.code, 0, withEnv.stdout + withEnv.stderr)
  t.match(withEnv.stdout, `${url}: intact (`)
  const replay = await portcullis(['replay', url, '--config', file], { PCT_S3_KEY: s3.accessKeyId })
  t.equal(replay.code, 0, replay.stderr)
  t.match(replay.stdout, /agent/)
  t.match(replay.stdout, /greeting/)
  t.notMatch(replay.stdout, /eyJ[\w-]+\.[\w-]+\./, 'never the token')

  // someone with write access to the bucket edits what was recorded
  const obj = await store.send(new GetObjectCommand({ Bucket: 'pcr-archive', Key: keys[0] }))
  const bytes = Buffer.from(await obj.Body!.transformToByteArray())
  const at = bytes.indexOf('greeting')
  t.ok(at > 0, 'the recorded key is in the object')
  bytes.write('GREETING', at)
  await store.send(new PutObjectCommand({ Bucket: 'pcr-archive', Key: keys[0], Body: bytes }))
  const tampered = await portcullis(['verify', url], awsEnv)
  t.equal(tampered.code, 1)
  t.match(tampered.stdout, `${url}: tampered`)

  const missing = await portcullis(['verify', 's3://pcr-archive/gw-a/none.pcr'], awsEnv)
  t.equal(missing.code, 2)
  t.match(missing.stderr, /portcullis verify: .*(does not exist|NoSuchKey)/)
  const noUpload = join(env.dir, 'plain.yaml')
  await writeFile(noUpload, env.yaml({ admin: false }))
  const refused = await portcullis(['verify', url, '--config', noUpload])
  t.equal(refused.code, 2, refused.stderr)
  t.match(refused.stderr, /has no recording\.upload/)

  // the store goes down: the next session's recording waits on disk, and leaves once it is back
  await s3.stop()
  t.same(await resp(Number(listen![1]), [['AUTH', token], ['PING']]), ['+OK', '+PONG'])
  await waitFor(async () => (await recordingsIn(recordings)).length === 1, 'the recording on disk')
  const auditFile = join(env.dir, 'audit.jsonl')
  await waitFor(async () => /recording upload failed; retrying/.test(await readFile(auditFile, 'utf8')), 'the gateway to see the store down')
  const [waiting] = await recordingsIn(recordings)
  t.ok(waiting, 'kept while the store is down')
  await s3.start()
  await waitFor(async () => (await recordingsIn(recordings)).length === 0, 'the upload to resume')
  const after = await store.send(new ListObjectsV2Command({ Bucket: 'pcr-archive' }))
  t.equal(after.Contents?.length, 2, 'both sessions are in the bucket')
  t.ok(after.Contents!.some((o) => o.Key!.endsWith('/' + waiting!.split('/').pop())))

  child.kill('SIGTERM')
  const [code] = (await exited) as [number]
  t.equal(code, 0)
  t.notOk(log.includes(s3.secretAccessKey), 'the gateway never logs the store secret')
  t.notOk((await readFile(auditFile, 'utf8')).includes(s3.secretAccessKey), 'nor writes it to the audit log')
})

/** sends RESP commands one after another and returns the first line of each reply */
async function resp(port: number, commands: string[][]): Promise<string[]> {
  const socket = connect(port, '127.0.0.1')
  await once(socket, 'connect')
  socket.setEncoding('latin1')
  let buffered = ''
  socket.on('data', (d: string) => (buffered += d))
  const out: string[] = []
  try {
    for (const c of commands) {
      socket.write(`*${c.length}\r\n` + c.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join(''))
      await waitFor(() => buffered.includes('\r\n') || socket.destroyed, 'a reply', 20_000)
      const end = buffered.indexOf('\r\n')
      out.push(buffered.slice(0, end))
      buffered = buffered.slice(end + 2)
    }
  } finally {
    socket.destroy()
  }
  return out
}
