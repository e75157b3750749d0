// The in-place JSON masker remembers the keys of the last object met at each path and reads the
// next object of that shape by comparing key text where it stands: objects that change shape, keys
// that need escapes and keys that are prefixes of one another must still each meet their own rule.
import t from 'tap'
import { maskJsonText } from '../src/json-mask.ts'
import { stubMasks } from './stub-masks.ts'

t.test('objects of changing shape at one path each meet the rules of their own keys', async t => {
  const plan = stubMasks({ fields: { 'user.email': 'redact', 'user.e': 'partial' }, detectors: true })
  const docs = [
    { user: { name: 'a', email: 'x' } },
    { user: { email: 'y', name: 'b' } },
    { user: { e: 'zzzz', email: 'w' } },
    { user: { emai: 'kept', email: 'v' } },
    { user: { name: 'mail c@d.io' } },
    { user: { name: 'c', email: 'u', extra: 1 } },
    { user: { name: 'c' } },
  ]
  const wanted = [
    '{"user":{"name":"a","email":"[REDACTED]"}}',
    '{"user":{"email":"[REDACTED]","name":"b"}}',
    '{"user":{"e":"zz***","email":"[REDACTED]"}}',
    '{"user":{"emai":"kept","email":"[REDACTED]"}}',
    '{"user":{"name":"mail [REDACTED]"}}',
    '{"user":{"name":"c","email":"[REDACTED]","extra":1}}',
    '{"user":{"name":"c"}}',
  ]
  for (let round = 0; round < 3; round++) {
    for (let i = 0; i < docs.length; i++) t.equal(maskJsonText(JSON.stringify(docs[i]), plan).text, wanted[i], `doc ${i}, round ${round}`)
  }
})

t.test('a key spelled with escapes meets its rule, and text that only starts like a known key does not borrow it', async t => {
  const plan = stubMasks({ fields: { 'user.email': 'redact' }, detectors: false })
  t.equal(maskJsonText('{"user":{"email":"x"}}', plan).text, '{"user":{"email":"[REDACTED]"}}')
  t.equal(maskJsonText('{"user":{"em\\u0061il":"x"}}', plan).text, '{"user":{"em\\u0061il":"[REDACTED]"}}')
  t.equal(maskJsonText('{"user":{"emailx":"x"}}', plan).text, '{"user":{"emailx":"x"}}')
  t.equal(maskJsonText('{"user":{"email":"x"}}', plan).text, '{"user":{"email":"[REDACTED]"}}')
  t.equal(maskJsonText('{"user":{"e\\"mail":"x","email":"y"}}', plan).text, '{"user":{"e\\"mail":"x","email":"[REDACTED]"}}')
})

t.test('a string remembered at its path is compared whole: a longer or escaped one is scanned again', async t => {
  const plan = stubMasks()
  t.equal(maskJsonText('{"note":"hello"}', plan).text, '{"note":"hello"}')
  t.equal(maskJsonText('{"note":"hello a@b.io"}', plan).text, '{"note":"hello [REDACTED]"}')
  t.equal(maskJsonText('{"note":"hello"}', plan).text, '{"note":"hello"}')
  t.equal(maskJsonText('{"note":"hell\\u006f a@b.io"}', plan).text, '{"note":"hello [REDACTED]"}')
})
