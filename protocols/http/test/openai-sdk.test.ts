import t from 'tap'
import OpenAI, { toFile } from 'openai'
import { startHttpUpstream, type HttpUpstreamOptions } from '@portcullis/fixtures/http-upstream'
import { startGateway, UPSTREAM_KEY, type GatewayOptions } from './harness.ts'
import { stubMasks } from './stub-masks.ts'

async function setup(t: { teardown(fn: () => unknown): void }, opts: Partial<GatewayOptions> = {}, upstreamOpts: HttpUpstreamOptions = {}) {
  const upstream = await startHttpUpstream(upstreamOpts)
  const gw = await startGateway({ upstreamUrl: upstream.url, ...opts })
  t.teardown(async () => {
    await gw.stop()
    await upstream.stop()
  })
  const client = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'dev-token-alice', maxRetries: 0 })
  return { upstream, gw, client }
}

t.test('the OpenAI SDK gets a chat completion; the upstream sees the gateway key, never the client token', async t => {
  const { upstream, gw, client } = await setup(t)
  const r = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello there' }] })
  t.equal(r.choices[0].message.content, 'echo: hello there')
  t.equal(upstream.requests.length, 1)
  t.equal(upstream.requests[0].headers.authorization, `Bearer ${UPSTREAM_KEY}`)
  t.notOk(JSON.stringify(upstream.requests[0].headers).includes('dev-token-alice'), 'the client token never goes upstream')
  await gw.settled(1)
  t.equal(gw.audits.length, 1, 'one audit event per request')
  t.match(gw.audits[0], { class: 'read', decision: 'allow', statement: 'POST /v1/chat/completions', resources: ['gpt-4o-mini'] })
  t.notOk(JSON.stringify(gw.records).includes('dev-token-alice'), 'the token is never recorded')
  t.notOk(JSON.stringify(gw.records).includes(UPSTREAM_KEY), 'nor the upstream key')
  const response = gw.records.find(r => r.type === 'response')
  t.match(String(response?.payload.body), /echo: hello there/, 'the response body is recorded')
  t.match(String(gw.records.find(r => r.type === 'request')?.payload.body), /hello there/, 'and the request body')
})

t.test('the OpenAI SDK streams a chat completion through the gateway', async t => {
  const { client } = await setup(t, { masks: () => stubMasks() }, { deltas: ['Hel', 'lo ', 'world'] })
  const stream = await client.chat.completions.create({ model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'hi' }] })
  let text = ''
  let finish: string | null = null
  for await (const chunk of stream) {
    text += chunk.choices[0]?.delta?.content ?? ''
    finish = chunk.choices[0]?.finish_reason ?? finish
  }
  t.equal(text, 'Hello world')
  t.equal(finish, 'stop')
})

t.test('a secret split over several streamed deltas never reaches the SDK', async t => {
  const { client, gw } = await setup(t, { masks: () => stubMasks() }, { deltas: ['your key: ', 'sk-', 'proj-Ab', 'c123def456ghi789', ' keep it safe'] })
  const stream = await client.chat.completions.create({ model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'key?' }] })
  let text = ''
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? ''
  t.equal(text, 'your key: [REDACTED] keep it safe')
  await gw.settled(1)
  t.equal(gw.audits[0].masked, 1)
  const recorded = gw.records.filter(r => r.type === 'response' && typeof r.payload.batch === 'string').map(r => r.payload.batch).join('')
  t.ok(recorded.includes('[REDACTED]'), 'the stream is recorded after masking, event batch by batch')
  t.notOk(recorded.includes('proj-Ab'))
})

t.test('embeddings (base64, as the SDK asks) and models pass through', async t => {
  const { client, gw } = await setup(t)
  const e = await client.embeddings.create({ model: 'text-embedding-3-small', input: ['a', 'bb'] })
  t.equal(e.data.length, 2)
  t.equal(e.data[0].embedding.length, 8)
  const models = await client.models.list()
  t.ok(models.data.some(m => m.id === 'gpt-4o-mini'))
  await gw.settled(2)
  t.match(gw.audits.map(a => a.statement), ['POST /v1/embeddings', 'GET /v1/models'])
})

t.test('a file upload streams through as multipart and is classified write', async t => {
  const { client, upstream, gw } = await setup(t, { limits: { maxMessageBytes: 1024 } })
  const content = Buffer.alloc(300 * 1024, 'a')
  const file = await client.files.create({ file: await toFile(content, 'train.jsonl'), purpose: 'fine-tune' })
  t.equal(file.filename, 'train.jsonl')
  t.ok(upstream.requests[0].bodyBytes > content.length, 'the upload is not held to the inspection limit')
  await gw.settled(1)
  t.equal(gw.audits[0].class, 'write')
  t.ok((gw.audits[0].bytes ?? 0) > content.length, 'streamed bytes are counted')
})

t.test('a JSON response is masked by field path and by detector', async t => {
  const { client } = await setup(t, { masks: () => stubMasks({ fields: { 'customer.phone': 'partial' } }) }, { reply: 'mail me at jane@example.com', extra: { customer: { phone: '5551234' } } })
  const r = (await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] })) as unknown as Record<string, any>
  t.equal(r.choices[0].message.content, 'mail me at [REDACTED]')
  t.equal(r.customer.phone, '55***')
})

t.test('request masking removes emails from prompts before they reach the LLM', async t => {
  const { client, upstream } = await setup(t, { masks: () => stubMasks(), options: { maskRequests: true } })
  await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'write to joe@corp.example.org' }] })
  t.notOk(upstream.requests[0].body?.includes('joe@corp'), 'the email never reaches the upstream')
  t.ok(upstream.requests[0].body?.includes('[REDACTED]'))
})

t.test('a gzipped upstream response is decoded before it is masked', async t => {
  const { client } = await setup(t, { masks: () => stubMasks() }, { gzip: true, reply: 'token sk-proj-0123456789abcdef' })
  const r = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] })
  t.equal(r.choices[0].message.content, 'token [REDACTED]')
})

t.test('brotli and deflate upstream responses are decoded before they are masked', async t => {
  for (const encoding of ['br', 'deflate'] as const) {
    const { client, upstream } = await setup(t, { masks: () => stubMasks() }, { encoding, reply: `${encoding}: ann@example.com` })
    const r = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x' }] }, { headers: { 'accept-encoding': 'br, deflate, zstd' } })
    t.match(String(upstream.requests[0].headers['accept-encoding']), encoding, 'the upstream was allowed to compress')
    t.notMatch(String(upstream.requests[0].headers['accept-encoding']), 'zstd', 'but only with what the gateway can decode')
    t.equal(r.choices[0].message.content, `${encoding}: [REDACTED]`)
  }
})

t.test('a wrong token is refused with 401 and never reaches the upstream', async t => {
  const { gw, upstream } = await setup(t)
  const bad = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: 'not-a-token', maxRetries: 0 })
  const err = await bad.models.list().then(
    () => undefined,
    (e: any) => e,
  )
  t.equal(err?.status, 401)
  t.equal(err?.error?.code, 'unauthenticated')
  t.equal(upstream.requests.length, 0)
})
