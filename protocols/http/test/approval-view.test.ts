// What an approver is shown of a held HTTP request, and what its request binds to. Unit level; the
// end-to-end proof with fetch is packages/gateway/test/approvals-e2e.test.ts.
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { compileMaskPlan, EMPTY_MASK_PLAN } from '@portcullis/core'
import { sentHttp } from '../src/approval.ts'

const plan = compileMaskPlan([{ id: 'pii', fields: ['**.email'], detectors: ['email'], method: 'redact' }], { target: 'llm', subject: 'ann', groups: [] }, { hashKey: randomBytes(32) })

t.test('method, path and JSON body, masked by field rules and detectors; the hash covers the body as sent', async t => {
  const body = Buffer.from(JSON.stringify({ filter: { email: 'ann@example.com' }, note: 'mail bo@example.org' }))
  const s = sentHttp('POST', '/collections/docs/points/delete', body, true, plan)
  t.equal(s.text, 'POST /collections/docs/points/delete')
  t.notMatch(s.parameters![0]!, /ann@example\.com|bo@example\.org/)
  t.equal(s.hash, sentHttp('POST', '/collections/docs/points/delete', Buffer.from(body), true, EMPTY_MASK_PLAN).hash, 'the hash is of what was sent, not of what is shown')
  t.not(s.hash, sentHttp('POST', '/collections/docs/points/delete', Buffer.from('{}'), true, plan).hash, 'another body is another request')
  t.not(sentHttp('DELETE', '/v1/files/a', undefined, false, plan).hash, sentHttp('DELETE', '/v1/files/b', undefined, false, plan).hash)
  t.notMatch(sentHttp('GET', '/v1/x?user=ann@example.com', undefined, false, plan).text, /ann@example\.com/, 'detectors run over the query string')
})

t.test('a streamed body cannot be bound: every such request has a hash of its own', async t => {
  const a = sentHttp('POST', '/v1/files', undefined, true, plan)
  t.not(a.hash, sentHttp('POST', '/v1/files', undefined, true, plan).hash)
  t.same(a.parameters, ['<streamed body, not inspected>'])
})
