// The pieces of the Redis scope that need no server: Redis glob matching, pattern containment and
// the RediSearch query rewrite (including the KNN form, which Debian's RediSearch 1.2 cannot run).
import t from 'tap'
import { escapeTag, globRegExp, patternWithin, scopedQuery, scopeVerdict } from '../src/scope.ts'
import type { SessionScope } from '@portcullis/core'

const tag = { field: 'tenant', value: 'acme' }

t.test('the tag filter is AND-ed onto the client query, parenthesised', async t => {
  t.same(scopedQuery('rocket | doomsday', tag), { query: '@tenant:{acme} (rocket | doomsday)' })
  t.same(scopedQuery('*', tag), { query: '@tenant:{acme}' })
  t.same(scopedQuery('*=>[KNN 3 @vec $q]', tag), { query: '(@tenant:{acme})=>[KNN 3 @vec $q]' })
  t.same(scopedQuery('@kind:{doc}=>[KNN 3 @vec $q AS score]', tag), { query: '(@tenant:{acme} (@kind:{doc}))=>[KNN 3 @vec $q AS score]' })
  t.same(scopedQuery('"a ) b" | c', tag), { query: '@tenant:{acme} ("a ) b" | c)' }, 'a ) inside a phrase is text')
  t.same(scopedQuery('@t:{a\\}b}', tag), { query: '@tenant:{acme} (@t:{a\\}b})' })
})

t.test('queries that could escape the parentheses are refused', async t => {
  for (const q of ['x) | (@tenant:{globex}', 'x \\) | (y', '(x', 'x]', '"open', '@t:{open', '*=>[KNN 3 @vec $q] | @tenant:{globex}', '*=>[KNN 1 @v $q]=>[KNN 2 @v $q]'])
    t.ok('refuse' in scopedQuery(q, tag), q)
})

t.test('tag values are escaped: a tenant cannot add syntax', async t => {
  t.equal(escapeTag('ac-me} | @x:{y'), 'ac\\-me\\}\\ \\|\\ \\@x\\:\\{y')
  t.same(scopedQuery('*', { field: 'tenant', value: 'a b' }), { query: '@tenant:{a\\ b}' })
})

t.test('Redis globs and containment', async t => {
  t.ok(globRegExp('tenant:acme:*').test('tenant:acme:doc'))
  t.notOk(globRegExp('tenant:\\*:*').test('tenant:acme:doc'))
  t.ok(globRegExp('tenant:\\*:*').test('tenant:*:doc'))
  t.ok(globRegExp('k[^a]?').test('kbz'))
  t.ok(patternWithin('tenant:acme:doc*', ['tenant:acme:*']))
  t.notOk(patternWithin('tenant:*', ['tenant:acme:*']))
  t.notOk(patternWithin('tenant:acme', ['*:acme:*']), 'a scope pattern not of the prefix* form contains nothing')
})

t.test('scopeVerdict: keys by key-spec, refusals and rewrites', async t => {
  const scope: SessionScope = { keys: ['tenant:acme:*'], channels: ['tenant:acme:*'], indexes: ['docs'], tag, allowCode: false, upsert: 'set', summary: '' }
  t.equal(scopeVerdict(['GET', 'tenant:acme:x'], scope, undefined), undefined)
  t.match(scopeVerdict(['ZUNIONSTORE', 'tenant:acme:d', '2', 'tenant:acme:a', 'tenant:globex:b'], scope, undefined), { refuse: /tenant:globex:b/ })
  t.match(scopeVerdict(['XREAD', 'STREAMS', 'tenant:globex:s', '0'], scope, undefined), { refuse: /outside/ })
  t.match(scopeVerdict(['VSIM', 'tenant:globex:v', 'ELE', 'x'], scope, undefined), { refuse: /outside/ })
  t.match(scopeVerdict(['SCAN', '0'], scope, undefined), { applied: 'MATCH tenant:acme:*' })
  t.match(scopeVerdict(['FT.SEARCH', 'docs', 'x'], scope, undefined), { applied: 'query @tenant:{acme} (x)' })
  t.match(scopeVerdict(['FT.PROFILE', 'docs', 'SEARCH', 'QUERY', 'x'], scope, undefined), { refuse: /FT.PROFILE is refused/ })
  t.match(scopeVerdict(['FCALL', 'f', '1', 'tenant:acme:x'], scope, undefined), { refuse: /script/ })
  t.equal(scopeVerdict(['GET', 'anything'], undefined, undefined), undefined, 'no scope: nothing to check')
})

t.test('keys are matched as bytes: a key whose bytes are not the tenant prefix is outside, whatever it decodes to', async t => {
  const scope: SessionScope = { keys: ['tenant:é:*'], allowCode: false, upsert: 'set', summary: '' }
  t.equal(scopeVerdict(['GET', Buffer.from('tenant:é:doc')], scope, undefined), undefined)
  t.match(scopeVerdict([Buffer.from('GET'), Buffer.from([...Buffer.from('tenant:'), 0xc3, 0x3a, 0x64])], scope, undefined), { refuse: /outside/ })
  const fffd = { keys: ['tenant:\ufffd:*'], allowCode: false, upsert: 'set' as const, summary: '' }
  t.match(scopeVerdict([Buffer.from('GET'), Buffer.from([...Buffer.from('tenant:'), 0xff, 0x3a, 0x64])], fffd, undefined), { refuse: /outside/ }, 'an invalid byte is not U+FFFD')
})

t.test('a scope without key patterns refuses every keyed command', async t => {
  const scope: SessionScope = { allowCode: false, upsert: 'set', summary: '' }
  t.match(scopeVerdict(['GET', 'k'], scope, undefined), { refuse: /outside/ })
  t.equal(scopeVerdict(['PING'], scope, undefined), undefined)
})
