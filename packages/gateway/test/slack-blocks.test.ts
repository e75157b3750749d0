// What the Slack message shows, and that a statement cannot speak Slack's markup: mentions, links
// and code fences in it are shown as text, and every block stays within Slack's limits.
import t from 'tap'
import type { ApprovalRequest } from '@portcullis/core'
import { blastRadius, outcomeBlocks, pendingBlocks } from '../src/slack/blocks.ts'
import { verifySlackSignature } from '../src/slack/signature.ts'
import { slackSignature } from '@portcullis/fixtures/slack'

const request = (statement: string, extra: Partial<ApprovalRequest> = {}): ApprovalRequest => ({
  id: 'apr_abcdefghijklmnop',
  principal: { subject: 'agent-<@U1>', groups: ['agents'], issuer: 'i' },
  target: 'db',
  protocol: 'postgres',
  class: 'delete',
  statement,
  fingerprint: 'f',
  resources: ['public.docs'],
  rule: 'big-deletes',
  approvers: ['dba'],
  facts: {},
  created: 0,
  expires: 60_000,
  status: 'pending',
  ...extra,
})

t.test('a statement is text on the message, never markup', async t => {
  const blocks = JSON.stringify(pendingBlocks(request("DELETE FROM docs WHERE body = '<!channel> <https://evil.example|click>' ``` done")))
  t.notOk(blocks.includes('<!channel>'), 'no @channel')
  t.notOk(blocks.includes('<https://evil'), 'no link')
  t.match(blocks, /&lt;!channel&gt;/)
  t.notOk(blocks.includes("``` done"), 'a fence inside the statement does not end the code block')
  t.notOk(blocks.includes('agent-<@U1>'), 'the subject cannot mention anyone either')
  const long = pendingBlocks(request('SELECT ' + 'x, '.repeat(5000) + '1')) as { type: string; text?: { text: string } }[]
  for (const b of long) if (b.text) t.ok(b.text.text.length <= 3000, `${b.type} within Slack's 3000 characters`)
  t.match(JSON.stringify(long), /portcullis_approve.*portcullis_deny/)
})

t.test('the blast radius in words', async t => {
  t.equal(blastRadius({ estimatedRows: 49990, tables: ['public.docs'], source: 'explain' }), '~49,990 rows (planner estimate) · tables public.docs (explain)')
  t.equal(blastRadius({ keys: 5, source: 'exists' }), '5 keys (exists)')
  t.match(blastRadius(null), /unknown/)
  t.match(blastRadius(undefined), /not estimated/)
  const done = JSON.stringify(outcomeBlocks(request('DELETE FROM docs', { status: 'denied', decidedBy: 'alice', reason: 'no <b>' })))
  t.match(done, /Denied\* by alice: no &lt;b&gt;/)
  t.notOk(done.includes('portcullis_approve'), 'no buttons once decided')
})

t.test('signatures: Slack\'s v0 scheme, five minutes either way', async t => {
  const body = Buffer.from('payload=%7B%7D')
  const now = 1_700_000_000_000
  const ts = String(now / 1000)
  const sig = slackSignature('s3cret', Number(ts), body.toString())
  t.same(verifySlackSignature('s3cret', ts, sig, body, now), { ok: true })
  t.match(verifySlackSignature('other', ts, sig, body, now), { ok: false, why: 'signature mismatch' })
  t.match(verifySlackSignature('s3cret', ts, sig, Buffer.from('payload=%7B%7D '), now), { ok: false })
  t.match(verifySlackSignature('s3cret', ts, sig, body, now + 301_000), { ok: false, why: /five-minute/ })
  t.match(verifySlackSignature('s3cret', ts, sig, body, now - 301_000), { ok: false, why: /five-minute/ })
  t.same(verifySlackSignature('s3cret', ts, sig, body, now + 299_000), { ok: true })
  t.match(verifySlackSignature('s3cret', ts, sig.toUpperCase(), body, now), { ok: false })
  t.match(verifySlackSignature('s3cret', undefined, sig, body, now), { ok: false })
  t.match(verifySlackSignature('s3cret', '1e9', sig, body, now), { ok: false })
})
