import t from 'tap'
import { execFile } from 'node:child_process'
import { Readable } from 'node:stream'
import { promisify } from 'node:util'
import { request } from 'undici'
import { startHttpUpstream } from '@portcullis/fixtures/http-upstream'
import { startGateway } from './harness.ts'

const run = promisify(execFile)

t.test('a 200 MB file upload streams to the upstream with bounded memory and is counted', async t => {
  const upstream = await startHttpUpstream()
  const gw = await startGateway({ upstreamUrl: upstream.url, limits: { maxMessageBytes: 1 << 20 } })
  t.teardown(async () => {
    await gw.stop()
    await upstream.stop()
  })
  const block = Buffer.alloc(64 * 1024, 'y')
  let peak = 0
  const upload = async (total: number) => {
    let sent = 0
    const body = new Readable({
      read() {
        if (sent >= total) return void this.push(null)
        sent += block.length
        if ((sent & 0xfffff) === 0) peak = Math.max(peak, process.memoryUsage().rss)
        this.push(block)
      },
    })
    const res = await request(`${gw.url}/v1/files`, {
      method: 'POST',
      headers: { authorization: 'Bearer dev-token-alice', 'content-type': 'application/octet-stream' },
      body,
    })
    t.equal(res.statusCode, 200)
    return (await res.body.json()) as { bytes: number }
  }
  // warm up connections and buffers first, so the measure is the upload's own
  await upload(8 * 1024 * 1024)
  const total = 200 * 1024 * 1024
  const before = process.memoryUsage().rss
  const file = await upload(total)
  t.equal(file.bytes, total, 'every byte arrived upstream')
  t.equal(upstream.requests[1].bodyBytes, total)
  const growth = Math.max(peak, process.memoryUsage().rss) - before
  t.ok(growth < 96 * 1024 * 1024, `rss grew ${Math.round(growth / 1048576)} MB for a 200 MB upload`)
  await gw.settled(2)
  t.ok((gw.audits[1].bytes ?? 0) >= total, 'the streamed upload is counted in the audit event')
  t.equal(gw.audits[1].class, 'write')
})

t.test('an upload over maxUploadBytes gets 413: at once when its length is declared, or cut off mid-stream', async t => {
  const upstream = await startHttpUpstream()
  const gw = await startGateway({ upstreamUrl: upstream.url, options: { profile: 'openai', maxUploadBytes: 1 << 20 } })
  t.teardown(async () => {
    await gw.stop()
    await upstream.stop()
  })
  const { stdout } = await run('curl', ['-sS', '-w', '\n%{http_code}', `${gw.url}/v1/files`, '-H', 'Authorization: Bearer dev-token-alice', '-H', 'Expect: 100-continue', '-F', 'purpose=fine-tune', '-F', `file=@${process.execPath};filename=node.bin`])
  const [body, code] = stdout.split('\n')
  t.equal(code, '413')
  t.equal(JSON.parse(body).error.code, 'payload_too_large')
  t.equal(upstream.requests.length, 0, 'a declared length over the cap never reaches the upstream')

  const total = 8 << 20
  let sent = 0
  const body2 = new Readable({
    read() {
      if (sent >= total) return void this.push(null)
      sent += 65536
      this.push(Buffer.alloc(65536, 'z'))
    },
  })
  const outcome = await request(`${gw.url}/v1/files`, { method: 'POST', headers: { authorization: 'Bearer dev-token-alice', 'content-type': 'application/octet-stream' }, body: body2 }).then(
    r => r.statusCode,
    (err: Error) => err,
  )
  // the gateway answers 413 and closes; the client may still be writing and see the reset first
  t.ok(outcome === 413 || outcome instanceof Error, 'the upload is refused')
  await gw.settled(2)
  t.equal(gw.audits[1].error, 'payload_too_large')
  t.ok(upstream.requests.every(r => r.bodyBytes <= 1 << 20), 'no more than the cap went upstream')
})
