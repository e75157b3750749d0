import t from 'tap'
import { Readable } from 'node:stream'
import { request } from 'undici'
import { startHttpUpstream } from '@portcullis/fixtures/http-upstream'
import { startGateway } from './harness.ts'

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
