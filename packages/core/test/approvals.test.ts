import t from 'tap'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { createCore } from '../src/core.ts'
import { MemoryControlStore } from '../src/control/memory.ts'
import { parseConfig } from '../src/config/parse.ts'
import type { ApprovalRequest, Principal } from '../src/types.ts'
import { auditSink, op, setup } from './helpers.ts'

const RULES = `
  - { id: agents-read, when: { groups: [agents], class: [read] }, action: allow }
  - { id: agents-write, when: { groups: [agents, dba], class: [write] }, action: approve, approvers: [dba] }
  - { id: agents-delete, when: { groups: [agents], class: [delete] }, action: approve, approvers: [dba], window: 10m }
  - { id: quick, when: { groups: [agents], class: [schema-change] }, action: approve, approvers: [dba], timeout: 50ms }`

async function world(t: { teardown(fn: () => unknown): void }, extra = '') {
  const s = await setup(t, RULES, extra)
  const core = await createCore(s.config, { auditStream: auditSink().stream })
  t.teardown(() => core.close())
  const session = core.openSession(core.config.targets[0], '127.0.0.1:40000')
  await session.authenticate(await s.issuer.mint({ sub: 'agent-1', groups: ['agents'] }))
  const alice = await core.authenticate(await s.issuer.mint({ sub: 'alice', groups: ['dba'] }))
  const bob = await core.authenticate(await s.issuer.mint({ sub: 'bob', groups: ['staff'] }))
  return { ...s, core, session, alice, bob }
}

/** starts a decision and resolves with the request once it is pending */
function held(session: Awaited<ReturnType<typeof world>>['session'], o: ReturnType<typeof op>, signal?: AbortSignal) {
  let onPending!: (r: ApprovalRequest) => void
  const pending = new Promise<ApprovalRequest>(r => (onPending = r))
  const decision = session.decide(o, { onPending, ...(signal ? { signal } : {}) })
  return { pending, decision }
}

const UPDATE = op('write', 'UPDATE customers SET name = $1 WHERE id = $2', ['public.customers'])
const DELETE = op('delete', 'DELETE FROM customers WHERE id = $1', ['public.customers'])

t.test('an approved request lets the operation through and names the approver', async t => {
  const { core, session, alice } = await world(t)
  const { pending, decision } = held(session, UPDATE)
  const req = await pending
  t.match(req, {
    id: /^apr_[a-z2-7]{10}$/,
    principal: { subject: 'agent-1' },
    target: 'docs-db',
    protocol: 'postgres',
    class: 'write',
    statement: UPDATE.statement,
    fingerprint: UPDATE.fingerprint,
    resources: ['public.customers'],
    rule: 'agents-write',
    approvers: ['dba'],
    status: 'pending',
  })
  t.equal(req.expires - req.created, 300_000, 'default approvals timeout is 5m')
  t.same(core.approvals.list().map(r => [r.id, r.status]), [[req.id, 'pending']])
  core.approvals.approve(req.id, alice)
  t.match(await decision, { action: 'allow', rule: 'agents-write', approvalId: req.id, reason: 'approved by alice' })
  t.throws(() => core.approvals.approve(req.id, alice), { code: 'APPROVAL_NOT_PENDING' })
})

t.test('a denied request blocks with the approver and reason', async t => {
  const { core, session, alice } = await world(t)
  const { pending, decision } = held(session, UPDATE)
  const req = await pending
  core.approvals.deny(req.id, alice, 'not during business hours')
  t.match(await decision, { action: 'block', approvalId: req.id, reason: 'denied by alice: not during business hours' })
  t.equal(core.approvals.get(req.id)?.status, 'denied')
})

t.test('a request nobody answers times out and blocks naming its id', async t => {
  const { core, session } = await world(t)
  const { pending, decision } = held(session, op('schema-change', 'ALTER TABLE customers ADD COLUMN x int'))
  const req = await pending
  t.equal(req.expires - req.created, 50)
  const d = await decision
  t.match(d, { action: 'block', rule: 'quick', approvalId: req.id, reason: `approval ${req.id} timed out` })
  t.equal(core.approvals.get(req.id)?.status, 'expired')
})

t.test('a client that goes away withdraws its request', async t => {
  const { core, session, alice } = await world(t)
  const ac = new AbortController()
  const { pending, decision } = held(session, UPDATE, ac.signal)
  const req = await pending
  ac.abort()
  await t.rejects(decision, { code: 'APPROVAL_WITHDRAWN' })
  t.equal(core.approvals.get(req.id)?.status, 'withdrawn')
  t.throws(() => core.approvals.approve(req.id, alice), { code: 'APPROVAL_NOT_PENDING' })
})

t.test('killing the session withdraws its pending request', async t => {
  const { core, session } = await world(t)
  const { pending, decision } = held(session, UPDATE)
  const req = await pending
  core.kill(session.id)
  await t.rejects(decision, { code: 'APPROVAL_WITHDRAWN' })
  t.equal(core.approvals.get(req.id)?.status, 'withdrawn')
})

t.test('nobody approves their own request, and only approver groups may decide', async t => {
  const { core, issuer, alice, bob } = await world(t)
  // alice is a dba who is also subject to the write rule
  const dbaSession = core.openSession(core.config.targets[0], '127.0.0.1:40001')
  await dbaSession.authenticate(await issuer.mint({ sub: 'alice', groups: ['dba'] }))
  const { pending, decision } = held(dbaSession, UPDATE)
  const req = await pending
  t.throws(() => core.approvals.approve(req.id, alice), { code: 'APPROVAL_FORBIDDEN', message: /own request/ })
  t.throws(() => core.approvals.deny(req.id, alice), { code: 'APPROVAL_FORBIDDEN' })
  t.throws(() => core.approvals.approve(req.id, bob), { code: 'APPROVAL_FORBIDDEN', message: /not an approver.*dba/ })
  t.throws(() => core.approvals.approve('apr_nosuchthing', alice), { code: 'APPROVAL_NOT_FOUND' })
  t.equal(core.approvals.get(req.id)?.status, 'pending')
  const carol: Principal = { subject: 'carol', groups: ['dba'], issuer: issuer.issuer }
  core.approvals.approve(req.id, carol)
  t.equal((await decision).action, 'allow')
})

t.test('a rule with a window lets the same statement by the same subject through without asking again', async t => {
  const { core, session, alice, issuer } = await world(t)
  const first = held(session, DELETE)
  const firstReq = await first.pending
  t.equal(firstReq.window, 600_000, 'the request says what approving it grants')
  core.approvals.approve(firstReq.id, alice)
  const d1 = await first.decision
  t.equal(d1.action, 'allow')
  let asked = false
  const d2 = await session.decide(DELETE, { onPending: () => (asked = true) })
  t.notOk(asked)
  t.match(d2, { action: 'allow', rule: 'agents-delete', approvalId: d1.approvalId })

  // another statement still asks
  const other = held(session, op('delete', 'DELETE FROM orders WHERE id = $1', ['public.orders']))
  core.approvals.deny((await other.pending).id, alice)
  t.equal((await other.decision).action, 'block')

  // another subject still asks
  const s2 = core.openSession(core.config.targets[0], '127.0.0.1:40002')
  await s2.authenticate(await issuer.mint({ sub: 'agent-2', groups: ['agents'] }))
  const third = held(s2, DELETE)
  core.approvals.deny((await third.pending).id, alice)
  t.equal((await third.decision).action, 'block')

  // a rule without a window asks every time
  const w1 = held(session, UPDATE)
  core.approvals.approve((await w1.pending).id, alice)
  await w1.decision
  const w2 = held(session, UPDATE)
  const r2 = await w2.pending
  t.equal(r2.status, 'pending')
  core.approvals.deny(r2.id, alice)
  t.equal((await w2.decision).action, 'block')
})

t.test('new requests are announced to a webhook as JSON or Slack text', async t => {
  const bodies: unknown[] = []
  const server = createServer((req, res) => {
    let b = ''
    req.on('data', c => (b += c))
    req.on('end', () => {
      bodies.push({ path: req.url, type: req.headers['content-type'], body: JSON.parse(b) })
      res.end('ok')
    })
  })
  await new Promise<void>(r => server.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise(r => server.close(r)))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`

  for (const format of ['json', 'slack'] as const) {
    bodies.length = 0
    const { core, session, alice } = await world(t, `approvals: { webhook: { url: "${url}/${format}", format: ${format} } }`)
    const { pending, decision } = held(session, UPDATE)
    const req = await pending
    while (bodies.length === 0) await new Promise(r => setTimeout(r, 10))
    core.approvals.approve(req.id, alice)
    await decision
    const got = bodies[0] as { path: string; type: string; body: Record<string, unknown> }
    t.equal(got.path, `/${format}`)
    t.equal(got.type, 'application/json')
    if (format === 'json')
      t.match(got.body, { type: 'approval.requested', request: { id: req.id, subject: 'agent-1', target: 'docs-db', class: 'write', rule: 'agents-write', approvers: ['dba'] } })
    else {
      t.same(Object.keys(got.body), ['text'])
      t.match(got.body.text, new RegExp(`${req.id}.*agent-1`))
      t.match(got.body.text, /UPDATE customers/)
    }
  }
})

t.test('an unreachable webhook never holds up the decision', async t => {
  const { core, session, alice } = await world(t, 'approvals: { webhook: { url: "http://127.0.0.1:1/hook" } }')
  const { pending, decision } = held(session, UPDATE)
  core.approvals.approve((await pending).id, alice)
  t.equal((await decision).action, 'allow')
})

t.test('a webhook URL given as a secret reference is resolved when announcing', async t => {
  let hits = 0
  const server = createServer((req, res) => {
    if (req.url === '/T000/B000/hidden') hits++
    req.resume()
    res.end('ok')
  })
  await new Promise<void>(r => server.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise(r => server.close(r)))
  process.env.PORTCULLIS_TEST_HOOK = `http://127.0.0.1:${(server.address() as AddressInfo).port}/T000/B000/hidden`
  t.teardown(() => delete process.env.PORTCULLIS_TEST_HOOK)
  const s = await setup(t, RULES, 'approvals: { webhook: { url: { secret: hook }, format: slack } }'.replace('hook }', 'pg }'))
  const config = parseConfig(
    s.yaml.replace('secrets:\n', 'secrets:\n  hook: { env: PORTCULLIS_TEST_HOOK }\n').replace('{ secret: pg }, format', '{ secret: hook }, format'),
    'hook.yaml',
  )
  t.same(config.approvals.webhook, { url: { secret: 'hook' }, format: 'slack' })
  const audit = auditSink()
  const core = await createCore(config, { auditStream: audit.stream })
  t.teardown(() => core.close())
  const session = core.openSession(core.config.targets[0], '127.0.0.1:40010')
  await session.authenticate(await s.issuer.mint({ sub: 'agent-1', groups: ['agents'] }))
  const alice = await core.authenticate(await s.issuer.mint({ sub: 'alice', groups: ['dba'] }))
  const { pending, decision } = held(session, UPDATE)
  const req = await pending
  while (hits === 0) await new Promise(r => setTimeout(r, 10))
  core.approvals.approve(req.id, alice)
  await decision
  t.equal(hits, 1)
  t.notOk(audit.text().includes('hidden'), 'the URL is not logged')
})

t.test('the in-memory store keeps pending requests and drops the oldest decided ones past its bound', async t => {
  let clock = 50
  const store = new MemoryControlStore({ max: 3, now: () => clock })
  const base: ApprovalRequest = {
    id: 'apr_0',
    principal: { subject: 's', groups: [], issuer: 'i' },
    target: 't',
    protocol: 'postgres',
    class: 'write',
    statement: 'UPDATE',
    fingerprint: 'f',
    resources: [],
    rule: 'r',
    approvers: ['dba'],
    facts: {},
    created: 0,
    expires: 1,
    status: 'pending',
  }
  await store.putRequest({ ...base, id: 'apr_1' })
  await store.putRequest({ ...base, id: 'apr_2', status: 'denied' })
  await store.putRequest({ ...base, id: 'apr_3', status: 'approved' })
  await store.putRequest({ ...base, id: 'apr_4' })
  t.same((await store.listRequests()).map(r => r.id), ['apr_1', 'apr_3', 'apr_4'])
  const copy = (await store.getRequest('apr_1'))!
  copy.status = 'approved'
  t.equal((await store.getRequest('apr_1'))!.status, 'pending', 'callers get copies')

  await store.putRequest({ ...base, id: 'apr_5', expires: 1000 })
  await store.decide('apr_5', { status: 'approved', decidedBy: 'alice', grant: { subject: 's', target: 't', fingerprint: 'f', until: 100, approvalId: 'apr_5' } })
  clock = 99
  t.equal((await store.findGrant('s', 't', 'f'))?.approvalId, 'apr_5')
  clock = 100
  t.equal(await store.findGrant('s', 't', 'f'), undefined, 'a window ends at its end')
  t.equal(await store.findGrant('s', 't', 'g'), undefined)
})

t.test('the in-memory store decides a request once, and never one that has expired', async t => {
  let clock = 0
  const store = new MemoryControlStore({ now: () => clock })
  const changes: string[] = []
  store.subscribe(c => changes.push(c.kind === 'request' ? `${c.request.id}:${c.request.status}` : c.kind))
  const base: ApprovalRequest = {
    id: 'apr_a',
    principal: { subject: 's', groups: [], issuer: 'i' },
    target: 't',
    protocol: 'postgres',
    class: 'write',
    statement: 'UPDATE',
    fingerprint: 'f',
    resources: [],
    rule: 'r',
    approvers: ['dba'],
    facts: {},
    created: 0,
    expires: 10,
    status: 'pending',
  }
  await store.putRequest(base)
  await store.putRequest({ ...base, id: 'apr_b' })
  t.match(await store.decide('apr_a', { status: 'denied', decidedBy: 'alice', reason: 'no' }), { status: 'denied', decidedBy: 'alice', reason: 'no' })
  await t.rejects(store.decide('apr_a', { status: 'approved', decidedBy: 'bob' }), { code: 'APPROVAL_NOT_PENDING' })
  await t.rejects(store.decide('apr_nope', { status: 'approved' }), { code: 'APPROVAL_NOT_FOUND' })
  clock = 10
  await t.rejects(store.decide('apr_b', { status: 'approved', decidedBy: 'bob' }), { code: 'APPROVAL_NOT_PENDING', message: /expired/ })
  t.match(await store.decide('apr_b', { status: 'expired' }), { status: 'expired' })
  t.same(changes, ['apr_a:pending', 'apr_b:pending', 'apr_a:denied', 'apr_b:expired'])
})

t.test('defer: answered at once with the request; pending, the same statement gets the same id; approved, it runs once', async t => {
  const { core, session, alice } = await world(t)
  const sent = (v: string) => () => ({ text: 'UPDATE customers SET name = $1 WHERE id = $2', parameters: [v, '1'], hash: `hash-${v}` })
  const first = await session.decide(UPDATE, { defer: true, sent: sent("'a'") })
  t.match(first, { action: 'block', deferred: true, rule: 'agents-write' })
  const id = first.approvalId!
  t.match(core.approvals.get(id), { mode: 'defer', statementHash: "hash-'a'", sent: { parameters: ["'a'", '1'] }, status: 'pending' })
  t.equal((await session.decide(UPDATE, { defer: true, sent: sent("'a'") })).approvalId, id, 'no second request while pending')
  await core.approvals.approve(id, alice)
  const other = await session.decide(UPDATE, { defer: true, sent: sent("'b'") })
  t.not(other.approvalId, id, 'another parameter set is another request')
  t.equal(other.deferred, true)
  const run = await session.decide(UPDATE, { defer: true, sent: sent("'a'") })
  t.match(run, { action: 'allow', approvalId: id })
  t.ok(core.approvals.get(id)!.released, 'released')
  const again = await session.decide(UPDATE, { defer: true, sent: sent("'a'") })
  t.equal(again.deferred, true, 'once')
  t.not(again.approvalId, id)
})

t.test('a request shows the session statements before it, its rule reason and its policy version', async t => {
  const { session } = await world(t)
  session.decideNow(op('read', 'SELECT name FROM customers', ['public.customers']))
  const { pending, decision } = held(session, UPDATE)
  const r = await pending
  t.match(r.recent, [{ statement: 'SELECT name FROM customers', action: 'allow', class: 'read' }])
  t.equal(r.ruleReason, 'needs approval by rule agents-write')
  t.match(r.policyVersion, /^[0-9a-f]{16}$/)
  t.match(r.statementHash, /^[0-9a-f]{64}$/, 'without a statement as sent, still a hash (unique: never released by a retry)')
  t.equal(r.minApprovals, 1)
  void decision.catch(() => {})
})
