// Reply masking on the exact reply bytes Redis 8 sends for vector sets and RediSearch sends for
// FT.SEARCH (no Redis 8 can run here: these are the wire shapes from the Redis docs).
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { compileMaskPlan } from '@portcullis/core'
import { maskReply } from '../src/mask.ts'
import { searchAliases } from '../src/mask-paths.ts'
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

t.test('FT.SEARCH RETURN … AS: the alias of a masked field is masked (RediSearch 2 syntax)', async t => {
  const cmd = args('FT.SEARCH', 'idx', '*', 'RETURN', '3', 'email', 'AS', 'contact')
  const aliases = searchAliases('FT.SEARCH', cmd, plan)
  t.same([...(aliases ?? new Map())], [['contact', 'hash']])
  const r = frame('*3\r\n:1\r\n$5\r\ndoc:1\r\n*2\r\n$7\r\ncontact\r\n$11\r\nann@x.co.uk\r\n')
  const out = maskReply(r.raw, r.type, { name: 'FT.SEARCH', args: cmd, aliases }, plan, 2)
  t.equal(out.masked, 1)
  t.notOk(out.raw.includes('ann@x.co.uk'))
})

t.test('FT.SEARCH in RESP3 (Redis 8 maps): fields by name, and every value of a document whose key is masked', async t => {
  const doc = (id: string, name: string, email: string) =>
    `%3\r\n$2\r\nid\r\n$${id.length}\r\n${id}\r\n$16\r\nextra_attributes\r\n%2\r\n$4\r\nname\r\n$${name.length}\r\n${name}\r\n$5\r\nemail\r\n$${email.length}\r\n${email}\r\n$6\r\nvalues\r\n*0\r\n`
  const reply = `%4\r\n$10\r\nattributes\r\n*0\r\n$7\r\nresults\r\n*2\r\n${doc('private:1', 'Secret Sam', 'sam@x.io')}${doc('doc:2', 'Open Olga', 'olga@x.io')}$13\r\ntotal_results\r\n:2\r\n$7\r\nwarning\r\n*0\r\n`
  const r = frame(reply)
  const out = maskReply(r.raw, r.type, { name: 'FT.SEARCH', args: args('FT.SEARCH', 'idx', '*') }, plan, 3).raw.toString()
  for (const clear of ['Secret Sam', 'sam@x.io', 'olga@x.io']) t.notOk(out.includes(clear), `${clear} is masked`)
  t.ok(out.includes('Open Olga'), 'an unmasked field of an unmasked document stays')
  t.ok(out.includes('private:1'), 'document ids stay: they are key names')
})

t.test('a command maskFree calls free is neither refused nor masked, under every plan, whatever its reply', async t => {
  const { maskFree } = await import('../src/mask.ts')
  const { maskRefusal } = await import('../src/mask-paths.ts')
  const { classifyCommand } = await import('../src/classify.ts')
  const { BUILTIN_COMMANDS } = await import('../src/commands.ts')
  const plans = [
    compileMaskPlan([{ id: 'k', keys: ['secret:*', 'exact'], method: 'redact' }], { target: 'cache', subject: 's', groups: [] }, { hashKey: randomBytes(32) }),
    plan,
    compileMaskPlan([{ id: 'd', detectors: ['email'], method: 'redact' }], { target: 'cache', subject: 's', groups: [] }, { hashKey: randomBytes(32) }),
  ]
  const replies = ['$11\r\nann@x.co.uk\r\n', ':42\r\n', '*2\r\n$6\r\nsecret\r\n$11\r\nann@x.co.uk\r\n', '%1\r\n$5\r\nemail\r\n$11\r\nann@x.co.uk\r\n', ',1.5\r\n', '_\r\n'].map(frame)
  let free = 0
  let notFree = 0
  for (const base of BUILTIN_COMMANDS.keys()) {
    const name = base.toUpperCase()
    for (const keys of [['k'], ['secret:1'], ['exact'], ['k', 'secret:2'], ['k', 'j']]) {
      for (const extra of [[], ['0'], ['0', '-1'], ['GET'], ['WITHSCORES'], ['STORE', 'secret:x']]) {
        const a = args(name, ...keys, ...extra)
        const op = classifyCommand(a, {})
        for (const p of plans) {
          if (!maskFree(name, op.facts?.command, op.resources, p)) {
            notFree++
            continue
          }
          free++
          t.equal(maskRefusal(name, a, op.resources, p, undefined), undefined, `${a.join(' ')}: not refused`)
          for (const r of replies) {
            const out = maskReply(r.raw, r.type, { name: String(op.facts?.command ?? name), args: a }, p, 3)
            if (out.raw !== r.raw || out.masked !== 0) t.fail(`${a.join(' ')}: ${r.raw} was masked`)
          }
        }
      }
    }
  }
  t.ok(free > 500 && notFree > 500, `${free} free, ${notFree} not`)
  t.notOk(maskFree('GET', 'GET', ['secret:1'], plans[0]!), 'a key under a rule is not free')
  t.notOk(maskFree('GET', 'GET', ['k'], plans[2]!), 'under detectors nothing is free')
  t.ok(maskFree('GET', 'GET', ['k'], plans[0]!))
})

t.test('a bulk string under a key rule that ignores the value: the bytes the full decode and re-encode make', async t => {
  // the fast way (key rules alone) against the full one: the same rules plus a field rule no reply
  // here names, which takes maskReply down the decode → Masker → encode path
  const keyNames = ['GET', 'GETEX', 'GETDEL', 'GETSET', 'GETRANGE', 'SUBSTR', 'SET', 'LINDEX', 'LPOP', 'RPOP', 'SRANDMEMBER', 'SPOP', 'ZSCORE', 'INCRBYFLOAT', 'LMOVE', 'RPOPLPUSH', 'GEODIST', 'VEMB', 'VGETATTR', 'VRANDMEMBER', 'HGET', 'MGET', 'EVAL']
  const values = ['$5\r\nalice\r\n', '$0\r\n\r\n', '$-1\r\n', '$10\r\n[REDACTED]\r\n', `$3\r\n${Buffer.from([0, 0xff, 0x80]).toString('latin1')}\r\n`]
  let compared = 0
  for (const method of ['redact', 'null', 'hash', 'partial'] as const) {
    const rules = [{ id: 'k', keys: ['private:*'], method }]
    const hashKey = randomBytes(32)
    const fast = compileMaskPlan(rules, { target: 'cache', subject: 's', groups: [] }, { hashKey })
    const full = compileMaskPlan([...rules, { id: 'f', fields: ['never-a-field'], method: 'redact' }], { target: 'cache', subject: 's', groups: [] }, { hashKey })
    t.equal(fast.hasFieldRules, false)
    t.equal(full.hasFieldRules, true)
    for (const name of keyNames) for (const key of ['private:a', 'public:a']) for (const v of values) for (const resp of [2, 3]) {
      const r = frame(Buffer.from(v, 'latin1'))
      const ctx = { name, args: args(name, key, 'x') }
      const a = maskReply(r.raw, r.type, ctx, fast, resp)
      const b = maskReply(r.raw, r.type, ctx, full, resp)
      if (!a.raw.equals(b.raw) || a.masked !== b.masked) {
        t.fail(`${method} ${name} ${key} ${JSON.stringify(v)} RESP${resp}`, { fast: a.raw.toString('latin1'), full: b.raw.toString('latin1') })
        return
      }
      compared++
    }
  }
  const g = frame('$5\r\nalice\r\n')
  t.equal(maskReply(g.raw, g.type, { name: 'GET', args: args('GET', 'private:a') }, plan, 2).raw.toString(), '$10\r\n[REDACTED]\r\n')
  t.pass(`${compared} replies alike`)
})

t.test('maskRefusal resolves a command by its name as resolveCommand does from its bytes, whatever the case, and ß is not SS', async t => {
  const { resolvedOf } = await import('../src/mask-paths.ts')
  const { BUILTIN_COMMANDS, resolveCommand, tableFromCommandReply } = await import('../src/commands.ts')
  const upstream = new Map([...BUILTIN_COMMANDS, ...tableFromCommandReply([['json.get', -2, ['readonly'], 1, 1, 1, ['@json']]])])
  const upperLatin1 = (b: Buffer) => b.toString('latin1').toUpperCase()
  let checked = 0
  for (const table of [BUILTIN_COMMANDS, upstream]) {
    for (const [base, meta] of table) {
      const subs = meta.sub ? Object.keys(meta.sub) : []
      for (const spelled of [base, base.toUpperCase(), base[0]!.toUpperCase() + base.slice(1)]) {
        for (const rest of [['k', 'v'], ...subs.map(s => [s.toUpperCase(), 'k'])]) {
          const a = [Buffer.from(spelled, 'latin1'), ...rest.map(r => Buffer.from(r))]
          // twice: the second answer can come from what the first kept
          for (let round = 0; round < 2; round++) {
            t.same(resolvedOf(table, upperLatin1(a[0]!), a), resolveCommand(table, a), `${spelled} ${rest.join(' ')}`)
            checked++
          }
        }
      }
    }
  }
  t.ok(checked > 3000, `${checked} resolutions`)
  // SSCAN kept first: "\xdfcan" (whose Latin-1 upper case is SSCAN) is still no command
  const sscan = [Buffer.from('SSCAN'), Buffer.from('k'), Buffer.from('0')]
  t.equal(resolvedOf(BUILTIN_COMMANDS, 'SSCAN', sscan).meta, BUILTIN_COMMANDS.get('sscan'))
  const eszett = [Buffer.from('\xdfcan', 'latin1'), Buffer.from('k'), Buffer.from('0')]
  t.equal(upperLatin1(eszett[0]!), 'SSCAN')
  t.equal(resolvedOf(BUILTIN_COMMANDS, 'SSCAN', eszett).meta, undefined, 'ßcan resolves to no command')
})
