import t from 'tap'
import { createHmac } from 'node:crypto'
import { compileMaskPlan, EMPTY_MASK_PLAN, DETECTORS, checkMaskingRules, isPortcullisError, type MaskingRuleConfig } from '../src/index.ts'

const hashKey = Buffer.from('masking-test-key-0123456789abcdef')
const agent = { target: 'docs-db', subject: 'alice', groups: ['agents'] }

function planFor(rules: MaskingRuleConfig[], ctx = agent, key = hashKey) {
  return compileMaskPlan(rules, ctx, { hashKey: key })
}

/** masks `text` with one detector and the redact method */
function redactWith(detector: string, text: string) {
  return planFor([{ id: 'd', detectors: [detector], method: 'redact' }]).scan(text)
}

const positives: Record<string, string[]> = {
  email: ['alice@example.com', 'bob.smith+rag@mail.example.co.uk', 'x_y%z@sub-domain.example.org'],
  phone: ['(555) 123-4567', '555-123-4567', '+1 555.123.4567', '+44 20 7946 0958', '+4915112345678'],
  ssn: ['123-45-6789', '078-05-1120'],
  card: ['4111 1111 1111 1111', '5555555555554444', '3782-822463-10005', '6011111111111117'],
  iban: ['DE89 3704 0044 0532 0130 00', 'GB82WEST12345698765432', 'FR1420041010050500013M02606'],
  ip: ['10.0.0.1', '192.168.100.255', '2001:db8::1', 'fe80::1ff:fe23:4567:890a', '::1'],
  jwt: ['eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U'],
  'pem-private-key': [
    '-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx4c+abc/def=\nQUJDREVG\n-----END RSA PRIVATE KEY-----',
    '-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\\n-----END PRIVATE KEY-----',
  ],
  'openai-key': ['sk-proj-abcdefghijklmnopqrstuvwxyz123456', 'sk-ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcd'],
  'aws-key': ['AKIAIOSFODNN7EXAMPLE', 'ASIAIOSFODNN7EXAMPLE'],
  'github-token': ['ghp_' + 'a1B2'.repeat(9), 'github_pat_11ABCDEFG0123456789_abcdefghijklmnop'],
  'slack-token': ['xoxb-1234567890-0987654321-abcdefABCDEF', 'xoxp-1234567890-abc'],
  'stripe-key': ['sk_live_' + 'Zq9'.repeat(8), 'rk_live_' + 'aB3'.repeat(8)],
}

const negatives: Record<string, string[]> = {
  email: ['alice at example dot com', 'user@localhost', '@handle'],
  phone: ['1234567890', 'order 2024-01-15', 'v1.2.3'],
  ssn: ['000-12-3456', '666-12-3456', '123-00-6789', '123456789', '2024-01-15'],
  card: ['4111 1111 1111 1112', '1234567890123456', '4111 1111 111'],
  iban: ['DE89 3704 0044 0532 0130 02', 'XX00 0000 0000'],
  ip: ['256.1.1.1', '1.2.3', 'at 12:30:45 today', '00:1A:2B:3C:4D:5E'],
  jwt: ['eyJhbGciOiJIUzI1NiJ9', 'header.payload.signature'],
  'pem-private-key': ['-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----', '-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----'],
  'openai-key': ['sk-short', 'task-abcdefghijklmnopqrstuvwxyz123456'],
  'aws-key': ['AKIA1234', 'XAKIAIOSFODNN7EXAMPLE'],
  'github-token': ['ghp_short', 'ghx_' + 'a'.repeat(36)],
  'slack-token': ['xoxz-1234567890', 'xoxb-12'],
  'stripe-key': ['sk_test_' + 'a'.repeat(24), 'sk_live_short'],
}

t.test('every detector finds its kind and names it in the redaction', async t => {
  for (const [name, samples] of Object.entries(positives)) {
    for (const sample of samples) {
      const r = redactWith(name, `before ${sample} after`)
      t.equal(r.text, `before [REDACTED:${name}] after`, `${name}: ${JSON.stringify(sample)}`)
      t.equal(r.count, 1)
    }
  }
})

t.test('look-alikes are left alone (a Luhn-invalid number is not a card, a bad mod-97 is not an IBAN)', async t => {
  for (const [name, samples] of Object.entries(negatives)) {
    for (const sample of samples) {
      const text = `before ${sample} after`
      const r = redactWith(name, text)
      t.equal(r.text, text, `${name} leaves ${JSON.stringify(sample)}`)
      t.equal(r.count, 0)
    }
  }
})

t.test('api-key covers every key kind and ip covers both families; each key kind is nameable alone', async t => {
  for (const kind of ['openai-key', 'aws-key', 'github-token', 'slack-token', 'stripe-key']) {
    t.ok(DETECTORS.includes(kind), kind)
    const r = redactWith('api-key', `k=${positives[kind][0]};`)
    t.equal(r.text, 'k=[REDACTED:api-key];', `api-key finds ${kind}`)
  }
  t.equal(redactWith('aws-key', positives['openai-key'][0]).count, 0, 'aws-key alone ignores an OpenAI key')
  t.equal(redactWith('ip', 'a 10.1.2.3 b 2001:db8::8a2e:370:7334').text, 'a [REDACTED:ip] b [REDACTED:ip]')
})

t.test('all detectors run in one pass over mixed text', async t => {
  const plan = planFor([
    { id: 'pii', detectors: ['email', 'phone', 'ssn', 'card', 'iban', 'ip'], method: 'redact' },
    { id: 'secrets', detectors: ['jwt', 'pem-private-key', 'api-key'], method: 'redact' },
  ])
  const text =
    'Mail alice@example.com, call 555-123-4567, SSN 123-45-6789, card 4111111111111111, ' +
    'IBAN GB82WEST12345698765432 from 10.0.0.1 with key AKIAIOSFODNN7EXAMPLE.'
  const r = plan.scan(text)
  t.equal(
    r.text,
    'Mail [REDACTED:email], call [REDACTED:phone], SSN [REDACTED:ssn], card [REDACTED:card], ' +
      'IBAN [REDACTED:iban] from [REDACTED:ip] with key [REDACTED:api-key].',
  )
  t.equal(r.count, 7)
  t.ok(plan.hasDetectors)
  t.equal(plan.detectorMethod, 'redact')
})

t.test('scan returns the very same string when nothing matched', async t => {
  const plan = planFor([{ id: 'all', detectors: [...DETECTORS], method: 'redact' }])
  const text = 'SELECT id, title FROM docs WHERE id = 42 -- nothing to hide: 12:30'
  const r = plan.scan(text)
  t.equal(r.count, 0)
  t.ok(Object.is(r.text, text))
  t.equal(plan.scan('').text, '')
})

t.test('redact, partial, hash and null on whole values', async t => {
  const plan = planFor([{ id: 'c', columns: ['email'], method: 'redact' }])
  t.equal(plan.apply('redact', 'alice@example.com'), '[REDACTED]')
  t.equal(plan.apply('null', 'alice@example.com'), null)
  t.equal(plan.apply('partial', 'alice@example.com'), 'a***@example.com')
  t.equal(plan.apply('partial', '4111 1111 1111 1111'), '**** **** **** 1111')
  t.equal(plan.apply('partial', 'Margaret Hamilton'), 'Ma*************on')
  t.equal(plan.apply('partial', 'secret'), 's****t', 'a 6-character value keeps one at each end')
  t.equal(plan.apply('partial', 'abc'), '***', 'a short value keeps nothing')
  for (const v of ['Margaret Hamilton', 'secret', 'abcdefghijkl', 'ab']) {
    const kept = [...plan.apply('partial', v)!].filter(c => c !== '*').length
    t.ok(kept <= v.length / 3, `partial keeps at most a third of ${JSON.stringify(v)}`)
  }
  const expected = 'hash:' + createHmac('sha256', hashKey).update('alice@example.com').digest('hex').slice(0, 16)
  t.equal(plan.apply('hash', 'alice@example.com'), expected)
})

t.test('detector hits take the rule method: partial keeps a little, hash is stable, null redacts inside text', async t => {
  const partial = planFor([{ id: 'p', detectors: ['email', 'card', 'ssn'], method: 'partial' }])
  t.equal(partial.scan('to alice@example.com pay 5555555555554444 ssn 123-45-6789').text, 'to a***@example.com pay ************4444 ssn 1*********9')
  const hashed = planFor([{ id: 'h', detectors: ['email'], method: 'hash' }])
  const a = hashed.scan('alice@example.com wrote to bob@example.com and alice@example.com').text
  const [h1, h2, h3] = a.split(/ wrote to | and /)
  t.match(h1, /^hash:[0-9a-f]{16}$/)
  t.equal(h1, h3, 'equal values hash equal')
  t.not(h1, h2, 'different values hash differently')
  const nulled = planFor([{ id: 'n', detectors: ['email'], method: 'null' }])
  t.equal(nulled.scan('x alice@example.com').text, 'x [REDACTED:email]')
  t.equal(nulled.detectorMethod, 'null')
})

t.test('hash is stable for one key and changes with the key', async t => {
  const rules: MaskingRuleConfig[] = [{ id: 'h', columns: ['email'], method: 'hash' }]
  const one = planFor(rules)
  const again = planFor(rules)
  const other = planFor(rules, agent, Buffer.from('another key'))
  t.equal(one.apply('hash', 'alice@example.com'), again.apply('hash', 'alice@example.com'))
  t.not(one.apply('hash', 'alice@example.com'), other.apply('hash', 'alice@example.com'))
})

t.test('column rules: schema.table.column, table.column and bare names (computed columns too)', async t => {
  const plan = planFor([
    { id: 'full', columns: ['billing.cards.number'], method: 'partial' },
    { id: 'table', columns: ['customers.email'], method: 'hash' },
    { id: 'bare', columns: ['ssn'], method: 'null' },
    { id: 'glob', columns: ['secrets.*'], method: 'redact' },
  ])
  t.equal(plan.forColumn('billing', 'cards', 'number'), 'partial')
  t.equal(plan.forColumn('public', 'cards', 'number'), undefined, 'another schema')
  t.equal(plan.forColumn(undefined, 'cards', 'number'), 'partial', 'an unknown schema is masked (fail closed)')
  t.equal(plan.forColumn('public', 'customers', 'email'), 'hash')
  t.equal(plan.forColumn('public', 'Customers', 'EMAIL'), 'hash', 'identifiers compare case-insensitively')
  t.equal(plan.forColumn('public', 'orders', 'email'), undefined)
  t.equal(plan.forColumn('public', 'people', 'ssn'), 'null')
  t.equal(plan.forColumn(undefined, undefined, 'ssn'), 'null', 'computed column without a table')
  t.equal(plan.forColumn(undefined, undefined, 'email'), undefined)
  t.equal(plan.forColumn('public', 'secrets', 'anything'), 'redact')
  t.notOk(plan.empty)
  t.notOk(plan.hasDetectors)
})

t.test('the strictest method wins when several rules cover one value', async t => {
  const plan = planFor([
    { id: 'soft', columns: ['customers.email'], detectors: ['email'], method: 'partial' },
    { id: 'hard', columns: ['email'], detectors: ['email'], method: 'null' },
  ])
  t.equal(plan.forColumn('public', 'customers', 'email'), 'null')
  t.equal(plan.detectorMethod, 'null')
})

t.test('field rules: dotted paths with * segments and bare last-segment names', async t => {
  const plan = planFor([
    { id: 'path', fields: ['data.*.embedding'], method: 'null' },
    { id: 'bare', fields: ['email'], method: 'redact' },
    { id: 'deep', fields: ['result.points.*.payload.ssn'], method: 'hash' },
  ])
  t.equal(plan.forField('data.0.embedding'), 'null')
  t.equal(plan.forField('data.17.embedding'), 'null')
  t.equal(plan.forField('data.embedding'), undefined)
  t.equal(plan.forField('data.0.meta.embedding'), undefined)
  t.equal(plan.forField('email'), 'redact')
  t.equal(plan.forField('users.3.contact.email'), 'redact')
  t.equal(plan.forField('users.3.contact.Email'), 'redact')
  t.equal(plan.forField('result.points.4.payload.ssn'), 'hash')
  t.equal(plan.forField('result.points.4.payload.ssn'), 'hash', 'cached answer is the same')
  t.equal(plan.forField('emails'), undefined)
  const deep = planFor([{ id: 'any-depth', fields: ['result.**.token'], method: 'redact' }])
  t.equal(deep.forField('result.token'), 'redact', '** may be empty')
  t.equal(deep.forField('result.points.3.payload.token'), 'redact')
  t.equal(deep.forField('other.token'), undefined)
  t.equal(deep.forField('result.points.3.payload.token.id'), undefined)
})

t.test('key rules: globs on Redis keys', async t => {
  const plan = planFor([
    { id: 'users', keys: ['user:*:email'], method: 'redact' },
    { id: 'session', keys: ['session:?'], method: 'null' },
    { id: 'exact', keys: ['config'], method: 'hash' },
  ])
  t.equal(plan.forKey('user:42:email'), 'redact')
  t.equal(plan.forKey('user:a:b:email'), 'redact', '* spans colons')
  t.equal(plan.forKey('user:42:name'), undefined)
  t.equal(plan.forKey('session:1'), 'null')
  t.equal(plan.forKey('session:12'), undefined)
  t.equal(plan.forKey('config'), 'hash')
  t.equal(plan.forKey('Config'), undefined, 'keys are case-sensitive')
  // the same key asked again, as the same text in a new string, answers as the first time; another
  // key in between is its own answer (the plan remembers the last key it was asked of)
  const keys = ['user:42:email', 'user:42:name', 'session:1', 'config', 'Config', 'session:12']
  const want = keys.map(k => plan.forKey(k))
  for (let i = 0; i < 200; i++) {
    const j = (i * 7) % keys.length
    const k = i % 3 === 0 ? keys[j]! : Buffer.from(keys[j]!).toString()
    if (plan.forKey(k) !== want[j]) t.fail(`${k}, asked after ${keys[((i - 1) * 7) % keys.length]}`)
    if (plan.forKey(k) !== want[j]) t.fail(`${k}, asked twice`)
  }
  t.same(keys.map(k => plan.forKey(k)), ['redact', undefined, 'null', 'hash', undefined, undefined])
})

t.test('rules apply only to their targets, groups and subjects; none applying gives an empty plan', async t => {
  const rules: MaskingRuleConfig[] = [
    { id: 'docs', when: { targets: ['docs-db'] }, columns: ['email'], method: 'redact' },
    { id: 'agents', when: { groups: ['agents'] }, detectors: ['email'], method: 'redact' },
    { id: 'bob', when: { subjects: ['bob'] }, fields: ['ssn'], method: 'null' },
    { id: 'cache', when: { targets: ['cache-*'] }, keys: ['*'], method: 'redact' },
  ]
  const alice = planFor(rules)
  t.equal(alice.forColumn(undefined, 't', 'email'), 'redact')
  t.ok(alice.hasDetectors)
  t.equal(alice.forField('ssn'), undefined)
  t.equal(alice.forKey('k'), undefined)

  const bob = planFor(rules, { target: 'cache-eu', subject: 'bob', groups: ['dba'] })
  t.equal(bob.forColumn(undefined, 't', 'email'), undefined)
  t.notOk(bob.hasDetectors)
  t.equal(bob.forField('ssn'), 'null')
  t.equal(bob.forKey('anything'), 'redact')

  const nobody = planFor(rules, { target: 'other', subject: 'carol', groups: ['dba'] })
  t.ok(nobody.empty)
  t.equal(nobody.maxMatchLength, 0)
})

t.test('the empty plan masks nothing and returns text untouched', async t => {
  t.ok(EMPTY_MASK_PLAN.empty)
  t.notOk(EMPTY_MASK_PLAN.hasDetectors)
  t.equal(EMPTY_MASK_PLAN.forColumn('s', 't', 'c'), undefined)
  t.equal(EMPTY_MASK_PLAN.forField('a.b'), undefined)
  t.equal(EMPTY_MASK_PLAN.forKey('k'), undefined)
  const text = 'alice@example.com'
  t.ok(Object.is(EMPTY_MASK_PLAN.scan(text).text, text))
  t.equal(planFor([]).empty, true)
})

t.test('maxMatchLength bounds the streaming hold-back of the detectors in the plan', async t => {
  t.equal(planFor([{ id: 'e', detectors: ['email', 'ssn'], method: 'redact' }]).maxMatchLength, 64 + 1 + 8 * 64 + 24)
  t.equal(planFor([{ id: 'k', detectors: ['pem-private-key'], method: 'redact' }]).maxMatchLength, 8192)
  t.equal(planFor([{ id: 'u', patterns: [{ name: 'ticket', regex: 'TCK-[0-9]+' }], method: 'redact' }]).maxMatchLength, 1024)
  const pem = '-----BEGIN PRIVATE KEY-----\n' + ('QUJD'.repeat(16) + '\n').repeat(50) + '-----END PRIVATE KEY-----'
  t.ok(pem.length > 3000 && pem.length < 8192)
  t.equal(redactWith('pem-private-key', `x ${pem} y`).text, 'x [REDACTED:pem-private-key] y', 'a 3 KB key is one match')
})

t.test('an unterminated private key is still masked (fail closed)', async t => {
  const r = redactWith('pem-private-key', 'dump: -----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIB\nabc+/=\n')
  t.equal(r.text, 'dump: [REDACTED:pem-private-key]')
})

t.test('user patterns use re2: named in the redaction, combined with detectors', async t => {
  const plan = planFor([
    { id: 'tickets', patterns: [{ name: 'ticket', regex: 'TCK-[0-9]{4,}' }], method: 'redact' },
    { id: 'mail', detectors: ['email'], method: 'hash' },
  ])
  const r = plan.scan('see TCK-12345 from alice@example.com')
  t.match(r.text, /^see \[REDACTED:ticket\] from hash:[0-9a-f]{16}$/)
  t.equal(r.count, 2)
  t.equal(plan.scan('no tickets').count, 0)
})

t.test('a catastrophic pattern runs in linear time under re2', async t => {
  const plan = planFor([{ id: 'evil', patterns: [{ name: 'evil', regex: '(a+)+$' }, { name: 'evil2', regex: '(x|x)*y' }], method: 'redact' }])
  // under a backtracking engine these inputs would not finish; re2 answers at once
  const r = plan.scan('a'.repeat(50_000) + '!' + 'x'.repeat(50_000))
  t.equal(r.count, 0)
  t.equal(plan.scan('aaaa').text, '[REDACTED:evil]')
})

t.test('an invalid pattern fails the config with a clear message', async t => {
  const bad: MaskingRuleConfig[] = [{ id: 'bad-rule', patterns: [{ name: 'lookahead', regex: 'foo(?=bar)' }], method: 'redact' }]
  let err: unknown
  try {
    planFor(bad)
  } catch (e) {
    err = e
  }
  t.ok(isPortcullisError(err, 'CONFIG_INVALID'))
  t.match((err as Error).message, /masking rule "bad-rule": pattern "lookahead" is not a valid RE2 regular expression/)
  t.throws(() => planFor([{ id: 'b2', patterns: [{ name: 'unclosed', regex: '(abc' }], method: 'redact' }]), /pattern "unclosed"/)
  t.throws(() => planFor([{ id: 'b3', detectors: ['passport'], method: 'redact' }]), /unknown detector "passport"/)
  // a rule for another target still fails at load
  t.throws(() => planFor([{ id: 'b4', when: { targets: ['elsewhere'] }, patterns: [{ name: 'br', regex: '(a)\\1' }], method: 'redact' }]), /pattern "br"/)
})

t.test('checkMaskingRules lists every problem with its key path', async t => {
  const problems = checkMaskingRules([
    { id: 'ok', columns: ['a.b.c'], detectors: ['email'], method: 'redact' },
    { id: 'ok', detectors: ['email', 'nope'], patterns: [{ name: 'p', regex: '[' }], columns: ['a.b.c.d'], method: 'blur' as never },
  ])
  t.same(
    problems.map(p => p.path),
    ['[1].id', '[1].method', '[1].detectors[1]', '[1].patterns[0].regex', '[1].columns[0]'],
  )
  t.same(checkMaskingRules([{ id: 'fine', fields: ['data.*.x'], keys: ['k:*'], method: 'null' }]), [])
})
