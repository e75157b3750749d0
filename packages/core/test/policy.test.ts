import t from 'tap'
import { decide, DEFAULT_DENY_REASON } from '../src/policy/decide.ts'
import { matchResource } from '../src/policy/glob.ts'
import { fingerprint } from '../src/policy/fingerprint.ts'
import { parseConfig } from '../src/config/parse.ts'
import type { Operation, Principal } from '../src/types.ts'
import { op } from './helpers.ts'

function rules(yaml: string) {
  return parseConfig(`targets:\n  - { name: docs-db, protocol: postgres, listen: 127.0.0.1:1, upstream: { host: h, port: 5432 } }\n  - { name: cache, protocol: redis, listen: 127.0.0.1:2, upstream: { host: h, port: 6379 } }\nrules:\n${yaml}`, 'p.yaml').rules
}

const agent: Principal = { subject: 'agent-1', groups: ['agents'], issuer: 'i' }
const dba: Principal = { subject: 'alice', groups: ['dba', 'staff'], issuer: 'i' }
const svc: Principal = { subject: 'svc-etl', groups: [], issuer: 'i' }

const DEMO = rules(`
  - { id: agents-read, when: { groups: [agents], class: [read] }, action: allow }
  - { id: agents-write, when: { groups: [agents], class: [write, delete] }, action: approve, approvers: [dba], window: 10m, timeout: 2m }
  - { id: no-bulk, when: { class: [bulk-delete, schema-change, admin] }, action: block, reason: bulk and schema changes are not for agents }
  - { id: dba-all, when: { groups: [dba] }, action: allow }`)

t.test('strictest matching rule wins and nothing matched means default deny', async t => {
  const table: [string, Principal, Operation, string, string | null][] = [
    ['agent read allowed', agent, op('read', 'SELECT 1'), 'allow', 'agents-read'],
    ['agent write needs approval', agent, op('write', 'UPDATE t SET a = $1'), 'approve', 'agents-write'],
    ['agent delete needs approval', agent, op('delete', 'DELETE FROM t WHERE id = $1'), 'approve', 'agents-write'],
    ['agent bulk delete blocked', agent, op('bulk-delete', 'DELETE FROM t'), 'block', 'no-bulk'],
    ['dba schema change: block beats allow', dba, op('schema-change', 'DROP TABLE t'), 'block', 'no-bulk'],
    ['dba write allowed', dba, op('write', 'UPDATE t SET a = $1'), 'allow', 'dba-all'],
    ['session class, nobody allows it', agent, op('session', 'SET x = 1'), 'block', null],
    ['unknown caller read', svc, op('read', 'SELECT 1'), 'block', null],
  ]
  for (const [name, p, o, action, rule] of table) {
    const d = decide(DEMO, p, 'docs-db', o)
    t.equal(d.action, action, `${name}: action`)
    t.equal(d.rule, rule, `${name}: rule`)
  }
  t.equal(decide(DEMO, svc, 'docs-db', op('read', 'SELECT 1')).reason, DEFAULT_DENY_REASON)
  t.equal(decide(DEMO, agent, 'docs-db', op('admin', 'DO $$ $$')).reason, 'bulk and schema changes are not for agents')
})

t.test('an approve decision carries approvers, window and timeout', async t => {
  const d = decide(DEMO, agent, 'docs-db', op('write', 'UPDATE t SET a = $1'))
  t.same(d, { action: 'approve', rule: 'agents-write', reason: 'needs approval by rule agents-write', approvers: ['dba'], window: 600_000, timeoutMs: 120_000 })
})

t.test('ties between equally strict rules go to the first in the file', async t => {
  const r = rules(`
  - { id: first, when: { groups: [agents] }, action: allow }
  - { id: second, when: { class: [read] }, action: allow }`)
  t.equal(decide(r, agent, 'docs-db', op('read', 'SELECT 1')).rule, 'first')
})

t.test('an operation that could not be understood is blocked with its own reason', async t => {
  const o = { ...op('read', 'SELEC 1'), error: 'syntax error at or near "SELEC"' }
  t.same(decide(DEMO, dba, 'docs-db', o), { action: 'block', rule: null, reason: 'syntax error at or near "SELEC"' })
})

t.test('rules match on subjects and targets with globs', async t => {
  const r = rules(`
  - { id: svc-cache, when: { subjects: ["svc-*"], targets: [cache] }, action: allow }`)
  t.equal(decide(r, svc, 'cache', op('read', 'GET k')).action, 'allow')
  t.equal(decide(r, svc, 'docs-db', op('read', 'SELECT 1')).action, 'block')
  t.equal(decide(r, agent, 'cache', op('read', 'GET k')).action, 'block')
})

t.test('resource globs: * stops at dots, ** does not, a bare name matches the last segment', async t => {
  const table: [string, string, boolean][] = [
    ['customers', 'public.customers', true],
    ['customers', 'customers', true],
    ['customers', 'public.customers_archive', false],
    ['public.*', 'public.customers', true],
    ['public.*', 'public.x.y', false],
    ['public.**', 'public.x.y', true],
    ['session:*', 'session:abc', true],
    ['session:*', 'user:abc', false],
    ['cust*', 'public.customers', true],
    ['*.orders', 'sales.orders', true],
    ['*.orders', 'orders', false],
    ['docs/**', 'docs/a/b', true],
  ]
  for (const [glob, resource, expected] of table) t.equal(matchResource(glob, resource), expected, `${glob} ~ ${resource}`)

  const r = rules(`
  - { id: pii, when: { resources: [customers, "secrets.*"] }, action: block }
  - { id: read, when: { class: [read] }, action: allow }`)
  t.equal(decide(r, agent, 'docs-db', op('read', 'SELECT', ['public.orders', 'public.customers'])).rule, 'pii', 'any resource matching is enough')
  t.equal(decide(r, agent, 'docs-db', op('read', 'SELECT', ['secrets.api'])).rule, 'pii')
  t.equal(decide(r, agent, 'docs-db', op('read', 'SELECT', ['public.orders'])).rule, 'read')
  t.equal(decide(r, agent, 'docs-db', op('read', 'SELECT', [])).rule, 'read', 'a resource rule needs a resource')
})

t.test('statement patterns use re2 over the normalized statement', async t => {
  const r = rules(`
  - { id: no-pg-catalog, when: { statement: "(?i)\\\\bpg_(shadow|authid)\\\\b" }, action: block }
  - { id: read, when: { class: [read] }, action: allow }`)
  t.equal(decide(r, agent, 'docs-db', op('read', 'SELECT * FROM PG_SHADOW')).rule, 'no-pg-catalog')
  t.equal(decide(r, agent, 'docs-db', op('read', 'SELECT * FROM shadows')).rule, 'read')
})

t.test('numeric, string and boolean facts gate rules', async t => {
  const r = rules(`
  - { id: big-knn, when: { facts: { topK: { gt: 100 } } }, action: approve, approvers: [dba] }
  - { id: many-keys, when: { facts: { keysTouched: { gte: 10 } } }, action: block }
  - { id: gpt, when: { facts: { model: "gpt-*" } }, action: block }
  - { id: export, when: { facts: { embeddingExport: true } }, action: block }
  - { id: range, when: { facts: { estimatedRows: { gt: 1000, lte: 100000 } } }, action: approve, approvers: [dba] }
  - { id: read, when: { class: [read] }, action: allow }`)
  const knn = (topK: number | undefined, exp = false): Operation => ({
    ...op('read', 'SELECT id FROM docs ORDER BY embedding <-> $1 LIMIT $2', ['public.docs']),
    statements: [{ class: 'read', resources: ['public.docs'], statement: 's', vector: { search: true, topK, export: exp } }],
  })
  t.equal(decide(r, agent, 'docs-db', knn(10)).rule, 'read')
  t.equal(decide(r, agent, 'docs-db', knn(100)).rule, 'read', 'gt is strict')
  t.equal(decide(r, agent, 'docs-db', knn(101)).rule, 'big-knn')
  t.equal(decide(r, agent, 'docs-db', knn(undefined)).rule, 'big-knn', 'an unbounded search counts as a huge top-k')
  t.equal(decide(r, agent, 'docs-db', knn(5, true)).rule, 'export')
  t.equal(decide(r, agent, 'cache', op('read', 'MGET', [], { keysTouched: 9 })).rule, 'read')
  t.equal(decide(r, agent, 'cache', op('read', 'MGET', [], { keysTouched: 10 })).rule, 'many-keys')
  t.equal(decide(r, agent, 'docs-db', op('read', 'POST /v1/chat', [], { model: 'gpt-4o' })).rule, 'gpt')
  t.equal(decide(r, agent, 'docs-db', op('read', 'POST /v1/chat', [], { model: 'llama3' })).rule, 'read')
  t.equal(decide(r, agent, 'docs-db', op('read', 'SELECT', [], { estimatedRows: 1000 })).rule, 'read')
  t.equal(decide(r, agent, 'docs-db', op('read', 'SELECT', [], { estimatedRows: 5000 })).rule, 'range')
  t.equal(decide(r, agent, 'docs-db', op('read', 'SELECT', [], { estimatedRows: 200000 })).rule, 'read')
  t.equal(decide(r, agent, 'docs-db', op('read', 'SELECT', [], { estimatedRows: 'many' })).rule, 'read', 'a non-number never passes a numeric test')
})

t.test('operations match the operation or command fact, case-insensitively', async t => {
  const r = rules(`
  - { id: no-flush, when: { operations: [flushall, "config*"] }, action: block }
  - { id: all, when: { groups: [agents] }, action: allow }`)
  t.equal(decide(r, agent, 'cache', op('admin', 'FLUSHALL', [], { command: 'FLUSHALL' })).rule, 'no-flush')
  t.equal(decide(r, agent, 'cache', op('admin', 'CONFIG SET', [], { command: 'CONFIG' })).rule, 'no-flush')
  t.equal(decide(r, agent, 'cache', op('read', 'GET', [], { command: 'GET' })).rule, 'all')
})

t.test('fingerprints ignore whitespace layout and are 16 hex characters', async t => {
  t.match(fingerprint('SELECT 1'), /^[0-9a-f]{16}$/)
  t.equal(fingerprint('SELECT  *\n FROM t'), fingerprint('SELECT * FROM t'))
  t.not(fingerprint('SELECT * FROM t'), fingerprint('SELECT * FROM u'))
})
