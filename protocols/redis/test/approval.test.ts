// What an approver is shown of a held Redis command, and what its request binds to. Unit level;
// the end-to-end proof with redis-cli is packages/gateway/test/approvals-e2e.test.ts.
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { compileMaskPlan, EMPTY_MASK_PLAN, type Decision } from '@portcullis/core'
import { pendingReply, sentCommand } from '../src/approval.ts'

const ctx = { target: 'cache', subject: 'ann', groups: ['agents'] }
const args = (...a: string[]) => a.map(x => Buffer.from(x))

t.test('the command and its arguments, keys shown, values masked by a key rule or a field rule', async t => {
  t.same(sentCommand(args('DEL', 'k1', 'k2'), ['k1', 'k2'], EMPTY_MASK_PLAN), { text: 'DEL "k1" "k2"', parameters: ['"k1"', '"k2"'], hash: sentCommand(args('DEL', 'k1', 'k2'), ['k1', 'k2'], EMPTY_MASK_PLAN).hash })
  const keys = compileMaskPlan([{ id: 's', keys: ['session:*'], method: 'redact' }], ctx, { hashKey: randomBytes(32) })
  const set = sentCommand(args('SET', 'session:1', 'secret-value'), ['session:1'], keys)
  t.match(set.text, /^SET "session:1" /)
  t.notMatch(set.text, /secret-value/, 'a value under a key rule is masked')
  const fields = compileMaskPlan([{ id: 'f', fields: ['email'], method: 'redact' }], ctx, { hashKey: randomBytes(32) })
  const hset = sentCommand(args('HSET', 'customer:1', 'email', 'ann@example.com', 'name', 'Ann'), ['customer:1'], fields)
  t.notMatch(hset.text, /ann@example\.com/, 'a value under a field rule is masked')
  t.match(hset.text, /"name" "Ann"/)
})

t.test('the hash tells argument lists apart', async t => {
  const h = (...a: string[]) => sentCommand(args(...a), [], EMPTY_MASK_PLAN).hash
  t.equal(h('DEL', 'k1'), h('del', 'k1'), 'command names are case-insensitive, as in Redis')
  t.not(h('DEL', 'k1'), h('DEL', 'k2'))
  t.not(h('DEL', 'a', 'bc'), h('DEL', 'ab', 'c'))
})

t.test('defer mode answers -PENDING with the request id first', async t => {
  const reply = pendingReply({ action: 'block', rule: 'deletes', reason: 'x', approvalId: 'apr_abc', deferred: true } as Decision).toString()
  t.match(reply, /^-PENDING apr_abc approval pending \(rule deletes\); .*portcullis approvals wait apr_abc.*\r\n$/)
  t.equal(reply.indexOf('\r\n'), reply.length - 2, 'one line')
})
