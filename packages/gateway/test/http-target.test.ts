// The gateway with the real HTTP codec in front of the HTTP upstream fixture (an OpenAI-shaped
// stand-in: no real LLM can run here). Postgres and Redis through the gateway are in demo.test.ts.
import t from 'tap'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { parseConfig } from '@portcullis/core'
import { startHttpUpstream } from '@portcullis/fixtures/http-upstream'
import { startGateway } from '../src/index.ts'
import { silentLogger } from '../src/log.ts'
import { testEnv } from './helpers.ts'

t.test('an http target: the token is swapped for the upstream key, PII in replies is masked', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const upstream = await startHttpUpstream({ extra: { note: 'contact ada@example.com' } })
  t.teardown(() => upstream.stop())
  const keyFile = join(env.dir, 'openai.key')
  await writeFile(keyFile, 'sk-upstream-secret\n')
  const targets = `
  - name: llm
    protocol: http
    listen: 127.0.0.1:0
    upstream: { url: ${JSON.stringify(upstream.url)}, auth: { header: authorization, value: "Bearer {secret}", secret: { secret: openai } } }
    options: { profile: openai, sniff: true }`
  const yaml = env
    .yaml({ admin: false, targets })
    .replace('recording:', `secrets: { openai: { file: ${JSON.stringify(keyFile)} } }\nmasking:\n  - { id: pii, detectors: [email], method: redact }\nrecording:`)
  const gw = await startGateway(parseConfig(yaml, join(env.dir, 'p.yaml')), {
    log: silentLogger,
    auditStream: new PassThrough().resume(),
  })
  t.teardown(() => gw.close(100))
  const token = await env.token('ann', ['agents'])

  const res = await fetch(`http://127.0.0.1:${gw.targets.llm!.port}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hello' }] }),
  })
  const text = await res.text()
  t.equal(res.status, 200, 'the chat completion goes through')
  t.notMatch(text, /ada@example\.com/, 'the email in the reply is masked')
  t.equal(upstream.requests.length, 1)
  t.equal(upstream.requests[0]!.headers.authorization, 'Bearer sk-upstream-secret', 'upstream got the gateway credential')
  t.notMatch(JSON.stringify(upstream.requests[0]!.headers), new RegExp(token.slice(0, 20)), 'the client token never went upstream')

  const anon = await fetch(`http://127.0.0.1:${gw.targets.llm!.port}/v1/chat/completions`, { method: 'POST', body: '{}' })
  t.equal(anon.status, 401, 'no token, no service')
  await anon.text()
})
