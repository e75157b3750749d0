import t from 'tap'
import { readdir, readFile, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { once } from 'node:events'
import { connect } from 'node:net'
import OpenAI from 'openai'
import { Client } from 'undici'
import { startHttpUpstream } from '@portcullis/fixtures/http-upstream'
import { startCoreGateway, CORE_UPSTREAM_KEY } from './core-harness.ts'

const RULES = `
  - { id: agents-infer, when: { groups: [agents], class: [read] }, action: allow }
  - { id: big-budget, when: { groups: [agents], facts: { maxTokens: { gt: 1000 } } }, action: block, reason: max_tokens over budget }
  - { id: deletes, when: { groups: [agents], class: [delete] }, action: approve, approvers: [ops] }`
const MASKING = `
  - { id: secrets, when: { targets: [llm] }, detectors: [email, api-key], method: redact }`

t.test('with the real core: a verified dev token, the secret injected upstream, a split key masked, one audit line per request', async t => {
  const upstream = await startHttpUpstream({ deltas: ['here: ', 'sk-', 'proj-Ab', 'c123def456ghi789jkl012', ' done'] })
  t.teardown(() => upstream.stop())
  const gw = await startCoreGateway(t, { upstreamUrl: upstream.url, rules: RULES, masking: MASKING })
  const token = await gw.token()
  const client = new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: token, maxRetries: 0 })

  const stream = await client.chat.completions.create({ model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'key?' }] })
  let text = ''
  for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? ''
  t.match(text, /^here: \[REDACTED[^\]]*\] done$/)
  t.notOk(text.includes('proj-Ab'))
  t.equal(upstream.requests[0].headers.authorization, `Bearer ${CORE_UPSTREAM_KEY}`)

  const plain = await client.chat.completions.create({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'mail ann@example.com' }] })
  t.match(plain.choices[0].message.content, /^echo: mail \[REDACTED[^\]]*\]$/)

  const chats = () => gw.audit().filter(a => a.statement === 'POST /v1/chat/completions')
  // a request's audit line is written as it completes, just after the client has the last byte
  while (chats().length < 2) await new Promise(r => setTimeout(r, 10))
  const ops = chats()
  t.equal(ops.length, 2, 'one audit line per request')
  t.match(ops[0], { class: 'read', decision: 'allow', rule: 'agents-infer' })

  await gw.core.close()
  let files = 0
  for (const f of await readdir(gw.recordings, { recursive: true })) {
    if (!(await stat(join(gw.recordings, f))).isFile()) continue
    files++
    const bytes = await readFile(join(gw.recordings, f))
    t.notOk(bytes.includes(token), `${f}: the client token is not recorded`)
    t.notOk(bytes.includes(CORE_UPSTREAM_KEY), `${f}: the upstream key is not recorded`)
    t.notOk(bytes.includes('proj-Abc123'), `${f}: the response is recorded after masking`)
  }
  t.ok(files > 0, 'the session was recorded')
})

t.test('with the real core: a body fact rule blocks, and an approved delete passes', async t => {
  const upstream = await startHttpUpstream()
  t.teardown(() => upstream.stop())
  const gw = await startCoreGateway(t, { upstreamUrl: upstream.url, rules: RULES })
  const token = await gw.token()
  const big = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o', max_tokens: 5000, messages: [] }),
  })
  t.equal(big.status, 403)
  t.match(((await big.json()) as any).error, { code: 'policy_blocked', rule: 'big-budget' })

  const held = fetch(`${gw.url}/v1/files/file-9`, { method: 'DELETE', headers: { authorization: `Bearer ${token}` } })
  while (gw.core.approvals.list().length === 0) await new Promise(r => setTimeout(r, 10))
  const [request] = gw.core.approvals.list()
  t.equal(request.statement, 'DELETE /v1/files/file-9')
  gw.core.approvals.approve(request.id, { subject: 'op-1', groups: ['ops'], issuer: 'test' })
  t.equal((await held).status, 200, 'approved: it went to the upstream')
  t.equal(upstream.requests.length, 1)
})

t.test('with the real core: defer mode answers 202, and after approval the retry passes through the approval window', async t => {
  const upstream = await startHttpUpstream()
  t.teardown(() => upstream.stop())
  const rules = `
  - { id: agents-infer, when: { groups: [agents], class: [read] }, action: allow }
  - { id: deletes, when: { groups: [agents], class: [delete] }, action: approve, approvers: [ops], window: 1m }`
  const gw = await startCoreGateway(t, { upstreamUrl: upstream.url, rules, options: '{ profile: openai, approvalMode: defer }' })
  const token = await gw.token()
  // one keep-alive connection: the core withdraws a session's pending approvals when it closes
  const client = new Client(gw.url)
  t.teardown(() => client.close())
  const del = () => client.request({ method: 'DELETE', path: '/v1/files/file-3', headers: { authorization: `Bearer ${token}` } })
  const first = await del()
  t.equal(first.statusCode, 202)
  const body = (await first.body.json()) as any
  t.equal(body.approval.status, 'pending')
  t.equal(gw.core.approvals.get(body.approval.id)?.statement, 'DELETE /v1/files/file-3')
  t.equal(upstream.requests.length, 0)
  gw.core.approvals.approve(body.approval.id, { subject: 'op-1', groups: ['ops'], issuer: 'test' })
  const retry = await del()
  await retry.body.dump()
  t.equal(retry.statusCode, 200, 'the approved retry reached the upstream')
  t.equal(upstream.requests.length, 1)
})

t.test('with the real core: revoking the subject closes its open connection', async t => {
  const upstream = await startHttpUpstream()
  t.teardown(() => upstream.stop())
  const gw = await startCoreGateway(t, { upstreamUrl: upstream.url, rules: RULES })
  const token = await gw.token('agent-7')
  const port = Number(new URL(gw.url).port)
  const sock = connect(port, '127.0.0.1')
  t.teardown(() => sock.destroy())
  let got = ''
  sock.on('data', d => (got += d))
  sock.write(`GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n\r\n`)
  while (!got.includes('gpt-4o-mini')) await new Promise(r => setTimeout(r, 10))
  t.match(got, /^HTTP\/1.1 200/)
  const closed = once(sock, 'close')
  gw.core.revoke({ subject: 'agent-7' })
  await closed
  t.pass('the gateway closed the connection')
  const again = await fetch(`${gw.url}/v1/models`, { headers: { authorization: `Bearer ${token}` } })
  t.equal(again.status, 401, 'the revoked token cannot come back on a new connection')
})

t.test('with the real core: a client that gives up on a held request withdraws its approval request', async t => {
  const upstream = await startHttpUpstream()
  t.teardown(() => upstream.stop())
  const gw = await startCoreGateway(t, { upstreamUrl: upstream.url, rules: RULES })
  const token = await gw.token()
  const ac = new AbortController()
  const held = fetch(`${gw.url}/v1/files/file-5`, { method: 'DELETE', headers: { authorization: `Bearer ${token}` }, signal: ac.signal }).catch(err => err)
  while (gw.core.approvals.list().length === 0) await new Promise(r => setTimeout(r, 10))
  const id = gw.core.approvals.list()[0].id
  ac.abort()
  t.type(await held, Error, 'the client gave up')
  while (gw.core.approvals.get(id)?.status === 'pending') await new Promise(r => setTimeout(r, 10))
  t.equal(gw.core.approvals.get(id)?.status, 'withdrawn')
  t.equal(upstream.requests.length, 0)
})
