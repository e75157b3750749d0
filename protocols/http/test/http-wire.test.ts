import t from 'tap'
import { execFile } from 'node:child_process'
import { connect } from 'node:net'
import { promisify } from 'node:util'
import { startHttpUpstream } from '@portcullis/fixtures/http-upstream'
import { startGateway, UPSTREAM_KEY, type GatewayOptions } from './harness.ts'

const run = promisify(execFile)

async function setup(t: { teardown(fn: () => unknown): void }, opts: Partial<GatewayOptions> = {}) {
  const upstream = await startHttpUpstream()
  const gw = await startGateway({ upstreamUrl: upstream.url, ...opts })
  t.teardown(async () => {
    await gw.stop()
    await upstream.stop()
  })
  return { upstream, gw }
}

/** writes raw bytes on one connection and collects what comes back until the server closes or `until` matches */
function raw(port: number, data: string | Buffer, until?: (s: string) => boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1')
    let got = ''
    s.on('data', c => {
      got += c.toString('latin1')
      if (until?.(got)) s.destroy(), resolve(got)
    })
    s.on('close', () => resolve(got))
    s.on('error', reject)
    s.write(data)
  })
}

t.test('curl: chat completion with a bearer token', async t => {
  const { gw, upstream } = await setup(t)
  const { stdout } = await run('curl', ['-sS', `${gw.url}/v1/chat/completions`, '-H', 'Authorization: Bearer dev-token-alice', '-H', 'content-type: application/json', '-d', '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"from curl"}]}'])
  t.equal(JSON.parse(stdout).choices[0].message.content, 'echo: from curl')
  t.equal(upstream.requests[0].headers.authorization, `Bearer ${UPSTREAM_KEY}`)
})

t.test('curl: Expect: 100-continue and a chunked upload', async t => {
  const { gw, upstream } = await setup(t)
  const body = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'x'.repeat(5000) }] })
  const { stdout } = await run('curl', ['-sS', `${gw.url}/v1/chat/completions`, '-H', 'Authorization: Bearer dev-token-alice', '-H', 'content-type: application/json', '-H', 'Expect: 100-continue', '-H', 'Transfer-Encoding: chunked', '--data-binary', body])
  t.equal(JSON.parse(stdout).choices[0].message.content, 'echo: ' + 'x'.repeat(5000))
  t.equal(upstream.requests[0].bodyBytes, body.length)
})

t.test('curl: a refused Expect: 100-continue upload gets 401 without sending its body', async t => {
  const { gw, upstream } = await setup(t)
  const { stdout } = await run('curl', ['-sS', '-w', '\n%{http_code}', `${gw.url}/v1/files`, '-H', 'Authorization: Bearer wrong', '-H', 'Expect: 100-continue', '-F', 'purpose=fine-tune', '-F', `file=@${process.execPath};filename=big.bin`])
  const [body, code] = stdout.split('\n')
  t.equal(code, '401')
  t.equal(JSON.parse(body).error.code, 'unauthenticated')
  t.equal(upstream.requests.length, 0)
})

t.test('pipelined requests on one keep-alive connection are answered in order', async t => {
  const { gw } = await setup(t)
  const req = (content: string) => {
    const b = JSON.stringify({ model: 'm', messages: [{ role: 'user', content }] })
    return `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dev-token-alice\r\nContent-Type: application/json\r\nContent-Length: ${b.length}\r\n\r\n${b}`
  }
  const out = await raw(gw.port, req('one') + req('two') + req('three'), s => (s.match(/echo: /g) ?? []).length === 3)
  const order = [...out.matchAll(/echo: (\w+)/g)].map(m => m[1])
  t.same(order, ['one', 'two', 'three'])
  t.equal(gw.sessions, 1, 'one connection, one session')
  await gw.settled(3)
  t.equal(gw.audits.length, 3)
})

t.test('a different token on the same connection gets 401 and the connection closes', async t => {
  const { gw, upstream } = await setup(t)
  const get = (token: string) => `GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer ${token}\r\n\r\n`
  const out = await raw(gw.port, get('dev-token-alice') + get('dev-token-bob'))
  t.match(out, /^HTTP\/1.1 200/)
  t.match(out, /HTTP\/1.1 401[\s\S]*one token per connection/)
  t.match(out, /connection: close/i)
  t.equal(upstream.requests.length, 1)
})

t.test('a missing token gets 401 JSON', async t => {
  const { gw } = await setup(t)
  const res = await fetch(`${gw.url}/v1/models`)
  t.equal(res.status, 401)
  t.same(((await res.json()) as any).error.code, 'unauthenticated')
})

t.test('a JSON body over maxMessageBytes gets 413', async t => {
  const { gw, upstream } = await setup(t, { limits: { maxMessageBytes: 1000 } })
  const res = await fetch(`${gw.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: 'Bearer dev-token-alice', 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'm', messages: [{ role: 'user', content: 'x'.repeat(2000) }] }),
  })
  t.equal(res.status, 413)
  t.equal(((await res.json()) as any).error.code, 'payload_too_large')
  t.equal(upstream.requests.length, 0)
})

t.test('a body that is not JSON gets 400 bad_request', async t => {
  const { gw } = await setup(t)
  const res = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: 'Bearer dev-token-alice', 'content-type': 'application/json' }, body: '{nope' })
  t.equal(res.status, 400)
  t.equal(((await res.json()) as any).error.code, 'bad_request')
})

t.test('a path with dot segments gets 400 and never reaches the upstream', async t => {
  const { gw, upstream } = await setup(t)
  const out = await raw(gw.port, 'DELETE /v1/models/../files/file-1 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dev-token-alice\r\n\r\n', s => s.includes('}'))
  t.match(out, /^HTTP\/1.1 400/)
  t.match(out, /"code":"bad_request"/)
  t.equal(upstream.requests.length, 0)
})

t.test('oversized headers get 431 and malformed requests 400', async t => {
  const { gw } = await setup(t)
  const big = await raw(gw.port, `GET /v1/models HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(32 * 1024)}\r\n\r\n`)
  t.match(big, /^HTTP\/1.1 431/)
  t.match(big, /"code":"headers_too_large"/)
  const bad = await raw(gw.port, 'GET /v1/models HTTP/1.1\r\nHost x\r\n\r\n')
  t.match(bad, /^HTTP\/1.1 400/)
  t.match(bad, /"code":"bad_request"/)
})

t.test('a block decision answers 403 policy_blocked with the rule', async t => {
  const { gw, upstream } = await setup(t, { policy: op => (op.facts.model === 'gpt-4o' ? { action: 'block', rule: 'no-big-models', reason: 'model not allowed' } : { action: 'allow', rule: 'ok' }) })
  const res = await fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: 'Bearer dev-token-alice', 'content-type': 'application/json' }, body: JSON.stringify({ model: 'gpt-4o', messages: [] }) })
  t.equal(res.status, 403)
  t.same(((await res.json()) as any).error, { code: 'policy_blocked', message: 'model not allowed', rule: 'no-big-models' })
  t.equal(upstream.requests.length, 0)
  await gw.settled(1)
  t.match(gw.audits[0], { decision: 'block', rule: 'no-big-models', error: 'policy_blocked' })
})

t.test('a configured token header carries the token; the client cannot smuggle its own Authorization upstream', async t => {
  const { gw, upstream } = await setup(t, { options: { tokenHeader: 'X-Portcullis-Token' } })
  const res = await fetch(`${gw.url}/v1/models`, { headers: { 'x-portcullis-token': 'dev-token-alice', authorization: 'Bearer sk-clients-own-key' } })
  t.equal(res.status, 200)
  t.equal(upstream.requests[0].headers.authorization, `Bearer ${UPSTREAM_KEY}`)
  t.equal(upstream.requests[0].headers['x-portcullis-token'], undefined)
  t.notOk(JSON.stringify(upstream.requests[0].headers).includes('clients-own-key'))
})

t.test('method override headers never reach the upstream', async t => {
  const { gw, upstream } = await setup(t)
  const res = await fetch(`${gw.url}/v1/models`, { headers: { authorization: 'Bearer dev-token-alice', 'x-http-method-override': 'DELETE', 'x-method-override': 'DELETE' } })
  t.equal(res.status, 200)
  t.equal(upstream.requests[0].headers['x-http-method-override'], undefined)
  t.equal(upstream.requests[0].headers['x-method-override'], undefined)
})

t.test('a client that sends its requests and then half-closes (FIN) gets every response', async t => {
  const { gw, upstream } = await setup(t)
  // slow enough that the FIN is in before the upstream has answered
  upstream.options.delayMs = 50
  const body = (content: string) => JSON.stringify({ model: 'm', messages: [{ role: 'user', content }] })
  const req = (content: string) =>
    `POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dev-token-alice\r\nContent-Type: application/json\r\nContent-Length: ${body(content).length}\r\n\r\n${body(content)}`
  for (const requests of [[req('only')], [req('one'), req('two')]]) {
    const sock = connect({ host: '127.0.0.1', port: gw.port, allowHalfOpen: true })
    await new Promise(r => sock.once('connect', r))
    let out = ''
    sock.setEncoding('utf8')
    sock.on('data', (d: string) => (out += d))
    sock.end(requests.join(''))
    await new Promise(r => sock.once('close', r))
    t.same([...out.matchAll(/echo: (\w+)/g)].map(m => m[1]), requests.length === 1 ? ['only'] : ['one', 'two'], 'each request answered after the FIN')
    t.equal((out.match(/HTTP\/1\.1 200 OK/g) ?? []).length, requests.length)
  }
  // a request cut short by the FIN is not answered as if it were whole, and nothing goes upstream
  const before = upstream.requests.length
  const sock = connect({ host: '127.0.0.1', port: gw.port, allowHalfOpen: true })
  await new Promise(r => sock.once('connect', r))
  let out = ''
  sock.on('data', (d: Buffer) => (out += d.toString()))
  sock.end('POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer dev-token-alice\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{"model":')
  await new Promise(r => sock.once('close', r))
  t.notMatch(out, /200 OK/)
  t.equal(upstream.requests.length, before, 'the cut request never reached the upstream')
})
