// An audit log that cannot be written refuses every request (fail closed): with /dev/full as the
// audit file (open succeeds, every write fails with ENOSPC), a chat completion gets 503
// audit_unavailable and the stand-in upstream (no real LLM can run here) never sees it.
import t from 'tap'
import { startHttpUpstream } from '@portcullis/fixtures/http-upstream'
import { startCoreGateway } from './core-harness.ts'

t.test('while the audit log cannot be written, requests are refused with 503 and nothing goes upstream', async t => {
  const upstream = await startHttpUpstream()
  t.teardown(() => upstream.stop())
  const gw = await startCoreGateway(t, { upstreamUrl: upstream.url, rules: '  - { id: all, when: { groups: [agents] }, action: allow }', auditDestination: '/dev/full' })
  const token = await gw.token()
  const chat = () =>
    fetch(`${gw.url}/v1/chat/completions`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }) })
  // the first request logs in; its audit lines are the first writes to fail
  await (await chat()).text()
  const before = upstream.requests.length
  await gw.core.flushAudit()
  t.match(gw.core.auditFailure()?.message, /ENOSPC|no space/i)
  const res = await chat()
  const body = (await res.json()) as { error: { code: string; message: string } }
  t.equal(res.status, 503)
  t.match(body.error, { code: 'audit_unavailable', message: 'audit log unavailable; operations are refused until it can be written again' })
  t.equal(upstream.requests.length, before, 'nothing went upstream')
})
