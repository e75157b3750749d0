// Rules on an estimate (blast radius) fact: matched once the estimate is known, read the stricter
// way while it is not (see policy/decide.ts).
import t from 'tap'
import { decide } from '../src/policy/decide.ts'
import { parseConfig } from '../src/config/parse.ts'
import { runEstimate, unknownFacts, withEstimate } from '../src/approvals/estimate.ts'
import type { Estimator, Principal } from '../src/types.ts'
import { op } from './helpers.ts'

function rules(yaml: string) {
  return parseConfig(`targets:\n  - { name: db, protocol: postgres, listen: 127.0.0.1:1, upstream: { host: h, port: 5432 } }\nrules:\n${yaml}`, 'p.yaml').rules
}
const agent: Principal = { subject: 'agent-1', groups: ['agents'], issuer: 'i' }
const U = ['estimatedRows']

t.test('a delete of a few rows is allowed, one of many is held, by the estimate', async t => {
  const rs = rules(`
  - { id: small-deletes, when: { groups: [agents], class: [delete] }, action: allow }
  - { id: big-deletes, when: { class: [delete], facts: { estimatedRows: { gt: 1000 } } }, action: approve, approvers: [dba] }`)
  const del = op('delete', 'DELETE FROM t WHERE id > $1')
  t.equal(decide(rs, agent, 'db', withEstimate(del, { estimatedRows: 3, source: 'explain' })).action, 'allow')
  t.equal(decide(rs, agent, 'db', withEstimate(del, { estimatedRows: 50_000, source: 'explain' })).action, 'approve')
  // unknown: the stricter rule (approve) counts, and says why
  const d = decide(rs, agent, 'db', del, U)
  t.equal(d.action, 'approve')
  t.equal(d.rule, 'big-deletes')
  t.match(d.reason, /estimatedRows unknown: read the stricter way/)
  t.same(d.unknown, { rule: 'big-deletes', facts: ['estimatedRows'] })
  // without `unknown` (a codec that cannot estimate this operation): an absent fact does not match
  t.equal(decide(rs, agent, 'db', del).action, 'allow')
})

t.test('an unknown estimate never lets more through: a looser rule on it does not count', async t => {
  const rs = rules(`
  - { id: tiny, when: { class: [delete], facts: { estimatedRows: { lte: 10 } } }, action: allow }
  - { id: hold-deletes, when: { class: [delete] }, action: approve, approvers: [dba] }`)
  const del = op('delete', 'DELETE FROM t WHERE id = $1')
  t.equal(decide(rs, agent, 'db', withEstimate(del, { estimatedRows: 1, source: 'explain' })).action, 'approve', 'strictest wins when both match')
  const d = decide(rs, agent, 'db', del, U)
  t.equal(d.action, 'approve')
  t.notOk(d.unknown, 'the allow could not change the answer: no estimate needed for it')
  // only an allow on the estimate: unknown stays default deny, but the answer may change
  const only = rules(`  - { id: tiny, when: { class: [delete], facts: { estimatedRows: { lte: 10 } } }, action: allow }`)
  const e = decide(only, agent, 'db', del, U)
  t.equal(e.action, 'block')
  t.equal(e.rule, null)
  t.same(e.unknown, { rule: 'tiny', facts: ['estimatedRows'] })
  t.equal(decide(only, agent, 'db', withEstimate(del, { estimatedRows: 50_000, source: 'explain' })).action, 'block')
  t.equal(decide(only, agent, 'db', withEstimate(del, { estimatedRows: 2, source: 'explain' })).action, 'allow')
})

t.test('block on a big estimate beats approve; a condition that is surely false stays false', async t => {
  const rs = rules(`
  - { id: deletes, when: { class: [delete] }, action: approve, approvers: [dba] }
  - { id: huge, when: { class: [delete], groups: [dba], facts: { estimatedRows: { gt: 100000 } } }, action: block }
  - { id: huge-agents, when: { class: [delete], groups: [agents], facts: { estimatedRows: { gt: 100000 } } }, action: block }`)
  const del = op('delete', 'DELETE FROM t')
  const d = decide(rs, agent, 'db', del, U)
  t.equal(d.action, 'block')
  t.equal(d.rule, 'huge-agents', 'the rule whose other conditions fail (groups: [dba]) is not unknown')
  t.equal(decide(rs, agent, 'db', withEstimate(del, { estimatedRows: 10, source: 'explain' })).action, 'approve')
})

t.test('an estimate does not replace a fact the classifier had exactly', async t => {
  const o = { ...op('delete', 'POST /collections/c/points/delete'), facts: { points: 2 } }
  t.equal(withEstimate(o, { points: 900, source: 'qdrant-count' }).facts.points, 2)
  t.equal(o.facts.points, 2, 'the shared operation is not changed')
  t.same(unknownFacts({ facts: ['keys', 'documents'], run: async () => null }, { keys: 3, source: 'exists' }), ['documents'])
})

t.test('an estimate that hangs or throws is unknown within its timeout', async t => {
  let aborted = false
  const hang: Estimator = {
    facts: U,
    run: signal =>
      new Promise(() => {
        signal.addEventListener('abort', () => (aborted = true))
      }),
  }
  t.equal(await runEstimate(hang, 20), null)
  t.ok(aborted, 'the estimator is told to stop')
  t.equal(await runEstimate({ facts: U, run: async () => Promise.reject(new Error('boom')) }, 1000), null)
  t.same(await runEstimate({ facts: U, run: async () => ({ estimatedRows: 5, source: 'explain' }) }, 1000), { estimatedRows: 5, source: 'explain' })
  const gone = new AbortController()
  gone.abort()
  t.equal(await runEstimate({ facts: U, run: async () => ({ estimatedRows: 5, source: 'explain' }) }, 1000, gone.signal), null)
})
