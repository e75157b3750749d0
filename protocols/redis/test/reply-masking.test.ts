// Reply masking on the exact reply bytes Redis 8 sends for vector sets and RediSearch sends for
// FT.SEARCH (no Redis 8 can run here: these are the wire shapes from the Redis docs).
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { compileMaskPlan } from '@portcullis/core'
import { maskReply } from '../src/mask.ts'
import { ReplyFramer } from '../src/reply-framer.ts'

const plan = compileMaskPlan(
  [
    { id: 'vec', keys: ['private:*'], method: 'redact' },
    { id: 'f', fields: ['email'], method: 'hash' },
  ],
  { target: 'cache', subject: 's', groups: [] },
  { hashKey: randomBytes(32) },
)
const args = (...a: string[]) => a.map(x => Buffer.from(x))
const frame = (s: string | Buffer) => new ReplyFramer().push(Buffer.from(s))[0]!

t.test('VSIM and VEMB replies of a key under a rule are masked, others pass as the same bytes', async t => {
  const vsim = frame('*2\r\n$5\r\nalice\r\n$3\r\nbob\r\n')
  t.equal(maskReply(vsim.raw, vsim.type, { name: 'VSIM', args: args('VSIM', 'private:people', 'ELE', 'x') }, plan, 2).raw.toString(),
    '*2\r\n$10\r\n[REDACTED]\r\n$10\r\n[REDACTED]\r\n')
  const same = maskReply(vsim.raw, vsim.type, { name: 'VSIM', args: args('VSIM', 'public', 'ELE', 'x') }, plan, 2)
  t.equal(same.raw, vsim.raw, 'untouched replies are the very same buffer')
  t.equal(same.masked, 0)
  // RESP3 VSIM WITHSCORES is a map of element → double; VEMB an array of doubles
  const scored = frame('%1\r\n$5\r\nalice\r\n,0.98\r\n')
  t.equal(maskReply(scored.raw, scored.type, { name: 'VSIM', args: args('VSIM', 'private:p', 'ELE', 'x', 'WITHSCORES') }, plan, 3).masked, 2)
  const vemb = frame('*2\r\n,0.5\r\n,-1\r\n')
  t.equal(maskReply(vemb.raw, vemb.type, { name: 'VEMB', args: args('VEMB', 'private:p', 'alice') }, plan, 3).raw.toString(),
    '*2\r\n$10\r\n[REDACTED]\r\n$10\r\n[REDACTED]\r\n')
})

t.test('FT.SEARCH field lists are masked by field name; binary vector fields stay intact', async t => {
  const vec = Buffer.from(new Float32Array([1, 2]).buffer)
  const reply = Buffer.concat([
    Buffer.from('*3\r\n:1\r\n$5\r\ndoc:1\r\n*4\r\n$5\r\nemail\r\n$11\r\nann@x.co.uk\r\n$3\r\nvec\r\n$8\r\n'),
    vec,
    Buffer.from('\r\n'),
  ])
  const r = frame(reply)
  const out = maskReply(r.raw, r.type, { name: 'FT.SEARCH', args: args('FT.SEARCH', 'idx', '*') }, plan, 2)
  t.equal(out.masked, 1)
  t.notOk(out.raw.includes('ann@x.co.uk'))
  t.ok(out.raw.includes(Buffer.concat([Buffer.from('$8\r\n'), vec])), 'the vector bytes are untouched')
})
