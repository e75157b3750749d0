// Claim templates and scopes: expanded once per session, quoted for where they land, fail closed.
import t from 'tap'
import { createCore } from '../src/core.ts'
import { parseConfig } from '../src/config/parse.ts'
import { decide } from '../src/policy/decide.ts'
import { matchResource } from '../src/policy/glob.ts'
import { expandScope } from '../src/identity/scope.ts'
import { attachClaims, expandAll, expandOne, globQuote, parseTemplate } from '../src/identity/templates.ts'
import type { Principal } from '../src/types.ts'
import { auditSink, op, setup } from './helpers.ts'

function principal(claims: Record<string, unknown>, groups: string[] = ['agents']): Principal {
  const p: Principal = { subject: String(claims.sub ?? 'agent-1'), groups, issuer: 'test' }
  attachClaims(p, claims)
  return p
}

t.test('templates expand sub, dotted claims and groups; values are quoted for globs', async t => {
  const p = principal({ sub: 'agent-1', org: { tenant: 'acme' } }, ['red', 'blue'])
  t.equal(expandOne('t:${claims.org.tenant}:${sub}', p), 't:acme:agent-1')
  t.same(expandAll('g:${groups}:*', p, globQuote), ['g:red:*', 'g:blue:*'], 'one pattern per group')
  t.equal(expandOne('${groups}', p), 'red,blue')
  const star = principal({ tenant: '*' })
  const [glob] = expandAll('tenant_${claims.tenant}.*', star, globQuote)
  t.equal(glob, 'tenant_\\*.*')
  t.ok(matchResource(glob!, 'tenant_*.docs'), 'the tenant called * matches its own name')
  t.notOk(matchResource(glob!, 'tenant_acme.docs'), 'and nothing else')
  t.throws(() => parseTemplate('${claims.}'), /unknown template reference/)
  t.throws(() => parseTemplate('${nope}'), /unknown template reference/)
  t.throws(() => parseTemplate('a${claims.x'), /unterminated/)
})

t.test('a missing, empty, numeric, object or control-character claim refuses (AUTH_FAILED)', async t => {
  for (const [what, claims] of [
    ['missing', {}],
    ['empty', { tenant: '' }],
    ['a number', { tenant: 42 }],
    ['an object', { tenant: { a: 1 } }],
    ['a list', { tenant: ['a'] }],
    ['a NUL', { tenant: 'a\u0000b' }],
    ['too long', { tenant: 'x'.repeat(300) }],
  ] as const) {
    t.throws(() => expandOne('${claims.tenant}', principal(claims)), { code: 'AUTH_FAILED', details: { reason: 'scope-claim' } }, what)
  }
  t.throws(() => expandOne('${groups}', principal({}, ['a,b'])), /comma/, 'a group with a comma is not one value')
  t.same(expandAll('k:${groups}', principal({}, []), globQuote), [], 'no groups: no pattern, nothing matches')
})

t.test('rule templates: resources expand per principal; a missing claim blocks the caller', async t => {
  const { config } = await setup(t, `
  - { id: own-tenant, when: { groups: [agents], resources: ['tenant_\${claims.tenant}.*'] }, action: allow }`)
  const acme = principal({ tenant: 'acme' })
  t.equal(decide(config.rules, acme, 'docs-db', op('read', 'SELECT', ['tenant_acme.docs'])).action, 'allow')
  t.equal(decide(config.rules, acme, 'docs-db', op('read', 'SELECT', ['tenant_other.docs'])).action, 'block')
  const star = principal({ tenant: '*' })
  t.equal(decide(config.rules, star, 'docs-db', op('read', 'SELECT', ['tenant_acme.docs'])).action, 'block', 'a * tenant is no wildcard')
  const none = decide(config.rules, principal({}), 'docs-db', op('read', 'SELECT', ['tenant_acme.docs']))
  t.equal(none.action, 'block')
  t.match(none.reason, /claim claims.tenant is missing/)
  t.equal(none.rule, 'own-tenant')
})

t.test('check-config names a bad template in a scope or a rule', async t => {
  let err: (Error & { issues?: { path: string; message: string }[] }) | undefined
  try {
      parseConfig(`
targets:
  - { name: db, protocol: postgres, listen: 127.0.0.1:1, upstream: { host: h, port: 1 }, scope: { settings: { app.tenant: '\${claim.tenant}', work_mem: x } } }
rules:
  - { id: r, when: { resources: ['\${tenant}'] }, action: allow }
`)
  } catch (e) {
    err = e as typeof err
  }
  const paths = (err?.issues ?? []).map(i => `${i.path}: ${i.message}`).join('\n')
  t.match(paths, /targets\.0\.scope\.settings\.app\.tenant: unknown template reference/)
  t.match(paths, /targets\.0\.scope\.settings\.work_mem: scope settings must be custom settings/)
  t.match(paths, /rules\.0\.when\.resources\.0: unknown template reference/)
})

t.test('a session expands its target scope at authentication; recording and audit carry it', async t => {
  const s = await setup(t, `
  - { id: read, when: { groups: [agents], class: [read] }, action: allow }`)
  s.config.targets[0]!.scope = { settings: { 'app.tenant': '${claims.tenant}' } }
  const audit = auditSink()
  const core = await createCore(s.config, { auditStream: audit.stream })
  t.teardown(() => core.close())
  const session = core.openSession(core.config.targets[0]!, '127.0.0.1:50000')
  await session.authenticate(await s.issuer.mint({ sub: 'agent-1', groups: ['agents'], extra: { tenant: "acme' OR '1'='1" } }))
  t.same(session.scope?.settings, { 'app.tenant': "acme' OR '1'='1" }, 'the value as it is: the codec quotes it')
  t.equal(session.decideNow(op('read', 'SELECT 1'))?.action, 'allow')
  session.audit({ class: 'read', statement: 'SELECT 1', decision: 'allow' })
  await session.close()
  await core.close()
  const lines = audit.lines().filter(l => l.class === 'read')
  t.match(lines[0], { scope: `app.tenant=${JSON.stringify("acme' OR '1'='1")}` }, 'the audit line shows the scope')

  await t.rejects(
    session.authenticate(await s.issuer.mint({ sub: 'agent-1', groups: ['agents'], extra: { tenant: 'other' } })),
    { code: 'SESSION_CLOSED' },
  )
  const core2 = await createCore(s.config, { auditStream: auditSink().stream })
  t.teardown(() => core2.close())
  const s2 = core2.openSession(core2.config.targets[0]!, '127.0.0.1:50001')
  await t.rejects(s2.authenticate(await s.issuer.mint({ sub: 'agent-2', groups: ['agents'] })), { code: 'AUTH_FAILED', details: { reason: 'scope-claim' } }, 'no tenant claim: refused')
  const s3 = core2.openSession(core2.config.targets[0]!, '127.0.0.1:50002')
  await s3.authenticate(await s.issuer.mint({ sub: 'agent-3', groups: ['agents'], extra: { tenant: 'a' } }))
  await t.rejects(s3.authenticate(await s.issuer.mint({ sub: 'agent-3', groups: ['agents'], extra: { tenant: 'b' } })), { code: 'AUTH_FAILED', details: { reason: 'scope-change' } }, 'a session keeps its scope')
})

t.test('expandScope: patterns glob-quoted, single values raw, summary names them', async t => {
  const s = expandScope({ keys: ['tenant:${claims.tenant}:*'], tag: { field: 'tenant', value: '${claims.tenant}' } }, principal({ tenant: 'a*[b]' }))
  t.same(s.keys, ['tenant:a\\*\\[b\\]:*'])
  t.same(s.channels, s.keys, 'channels default to the key patterns')
  t.equal(s.tag?.value, 'a*[b]')
  t.match(s.summary, /keys=tenant:a\\\*/)
})

t.test('check-config refuses a scope field the target does not enforce, or a scope that enforces nothing', async t => {
  const { scopeIssues } = await import('../src/identity/scope.ts')
  t.match(scopeIssues({ keys: ['a:*'] }, { protocol: 'postgres' }).map(([p, m]) => `${p.join('.')}: ${m}`).join('\n'), /keys: is not enforced on a postgres target[\s\S]*enforces nothing/)
  t.match(scopeIssues({ namespace: 'x' }, { protocol: 'http', options: { profile: 'qdrant' } }).map(([, m]) => m).join('\n'), /not enforced on a http target with profile qdrant/)
  t.same(scopeIssues({ filter: { key: 'k', value: '${sub}' } }, { protocol: 'http', options: { profile: 'qdrant' } }), [])
  t.match(scopeIssues({ user: '${sub}' }, { protocol: 'http', options: {} }).map(([, m]) => m).join('\n'), /generic/)
  t.match(scopeIssues({ tag: { field: 'tenant', value: 'x' }, keys: ['a:*'] }, { protocol: 'redis' }).map(([, m]) => m).join('\n'), /needs indexes/)
})

t.test('check-config warns of a scope RLS cannot enforce', async t => {
  const { scopeWarnings } = await import('../src/identity/scope.ts')
  t.match(scopeWarnings({ name: 'db', protocol: 'postgres', upstream: {}, scope: { settings: { 'app.tenant': 'x' } } }).join('\n'), /usually a superuser: Row-Level Security does not apply/)
  t.same(scopeWarnings({ name: 'db', protocol: 'postgres', upstream: { user: 'portcullis_app' }, scope: { settings: { 'app.tenant': 'x' } } }), [])
})
