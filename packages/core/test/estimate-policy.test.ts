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

t.test('a session runs the estimator only when a rule names its facts or the operation is held', async t => {
  const { setup } = await import('./helpers.ts')
  const { createCore } = await import('../src/core.ts')
  const rulesFor = async (yaml: string) => {
    const s = await setup(t, yaml)
    const core = await createCore(s.config, { auditStream: (await import('./helpers.ts')).auditSink().stream })
    t.teardown(() => core.close())
    const session = core.openSession(core.config.targets[0]!, '127.0.0.1:1')
    await session.authenticate(await s.issuer.mint({ sub: 'agent-1', groups: ['agents'] }))
    return { core, session }
  }
  let runs = 0
  const est = (rows: number | null): Estimator => ({
    facts: U,
    run: async () => {
      runs++
      return rows === null ? null : { estimatedRows: rows, source: 'explain' }
    },
  })
  const del = op('delete', 'DELETE FROM t WHERE id > $1')

  // no rule names the fact, nothing is held: never run, decided now
  const plain = await rulesFor(`
  - { id: agents-delete, when: { groups: [agents], class: [delete] }, action: allow }`)
  t.equal(plain.session.estimates?.(U), false)
  t.equal(plain.session.decideNow(del, { estimator: est(5) })?.action, 'allow')
  t.equal((await plain.session.decide(del, { estimator: est(5) })).action, 'allow')
  t.equal(runs, 0, 'the allow path never estimates')

  // a rule names it: decideNow defers, decide() runs it once and decides by it
  const named = await rulesFor(`
  - { id: agents-delete, when: { groups: [agents], class: [delete] }, action: allow }
  - { id: big, when: { class: [delete], facts: { estimatedRows: { gt: 1000 } } }, action: block }`)
  t.equal(named.session.decideNow(del, { estimator: est(5) }), undefined, 'unknown yet: no decision now')
  t.equal(named.session.decideNow(del)?.action, 'allow', 'a codec that cannot estimate: the fact is absent, not unknown')
  runs = 0
  t.equal((await named.session.decide(del, { estimator: est(5) })).action, 'allow')
  t.equal(runs, 1)
  const big = await named.session.decide(del, { estimator: est(50_000) })
  t.equal(big.action, 'block')
  t.equal(big.rule, 'big')
  const failed = await named.session.decide(del, { estimator: est(null) })
  t.equal(failed.action, 'block', 'no estimate: the stricter rule')
  t.match(failed.reason, /unknown: read the stricter way/)
  t.equal(runs, 3)

  // a hold: estimated for the approver, even when no rule names the fact
  const held = await rulesFor(`
  - { id: agents-delete, when: { groups: [agents], class: [delete] }, action: approve, approvers: [dba], timeout: 1m }`)
  t.equal(held.session.estimates?.(U), false, 'no rule names it: decideNow needs no estimator')
  t.equal(held.session.estimates?.(U, 'delete'), true, 'a delete may be held: keep what its estimate needs')
  t.equal(held.session.estimates?.(U, 'read'), false, 'no rule holds a read')
  let request: import('../src/types.ts').ApprovalRequest | undefined
  const dba = { subject: 'dba-1', groups: ['dba'], issuer: 'i' }
  runs = 0
  const waiting = held.session.decide(del, { estimator: est(42), onPending: r => (request = r) })
  while (!request) await new Promise(r => setTimeout(r, 5))
  t.same(request.estimate, { estimatedRows: 42, source: 'explain' })
  t.equal(request.facts.estimatedRows, 42)
  await held.core.approvals.approve(request.id, dba)
  t.equal((await waiting).action, 'allow')
  t.equal(runs, 1)
})

t.test('approvals.slack and approvals.estimate in the config', async t => {
  const { ConfigError } = await import('../src/config/parse.ts')
  const base = `admin: { listen: 127.0.0.1:0 }\ntargets:\n  - { name: db, protocol: postgres, listen: 127.0.0.1:1, upstream: { host: h, port: 5432 } }\nsecrets:\n  bot: { env: BOT }\n  sign: { env: SIGN }\n`
  const ok = parseConfig(
    base +
      `approvals:\n  estimate: { timeout: 500ms }\n  slack: { botToken: { secret: bot }, signingSecret: { secret: sign }, channel: C1, lookupByEmail: true, users: { U024BE7LH: { subject: alice, groups: [dba] }, bob@example.com: { groups: [dba] } } }\n`,
    'p.yaml',
  )
  t.equal(ok.approvals.estimateTimeoutMs, 500)
  t.match(ok.approvals.slack, { channel: 'C1', lookupByEmail: true, apiUrl: 'https://slack.com/api', users: { U024BE7LH: { subject: 'alice' } } })
  const issues = (yaml: string) => {
    try {
      parseConfig(base + yaml, 'p.yaml')
    } catch (err) {
      return (err as InstanceType<typeof ConfigError>).issues.map(i => `${i.path}: ${i.message}`)
    }
    return []
  }
  t.match(issues(`approvals:\n  slack: { botToken: { secret: bot }, signingSecret: { secret: sign }, channel: C1, users: { bob@example.com: { groups: [dba] } } }\n`), [/users\.bob@example\.com: an email key needs lookupByEmail: true/])
  t.match(issues(`approvals:\n  slack: { botToken: { secret: bot }, signingSecret: { secret: nope }, channel: C1, users: { alice: { groups: [dba] } } }\n`), [/signingSecret/, /users\.alice: must be a Slack user id/])
  t.same(issues(`approvals:\n  slack: { botToken: { secret: bot }, signingSecret: { secret: sign }, channel: C1, users: {} }\n`), [], 'with an admin listener: no issue')
  t.match(
    (() => {
      try {
        parseConfig(base.replace('admin: { listen: 127.0.0.1:0 }\n', '') + `approvals:\n  slack: { botToken: { secret: bot }, signingSecret: { secret: sign }, channel: C1, users: {} }\n`, 'p.yaml')
      } catch (err) {
        return (err as Error).message
      }
      return ''
    })(),
    /approvals\.slack: needs admin\.listen/,
  )
  t.match(issues(`approvals:\n  slack: { botToken: xoxb-inline, signingSecret: { secret: sign }, channel: C1, users: {} }\n`), [/botToken/])
})
