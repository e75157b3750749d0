import t from 'tap'
import { generateKeyPairSync } from 'node:crypto'
import { readdirSync, readlinkSync } from 'node:fs'
import { readdir, readFile, writeFile } from 'node:fs/promises'
import { startHeldJwks } from '@portcullis/fixtures/http-upstream'
import { parseConfig } from '../src/config/parse.ts'
import { join } from 'node:path'
import { readRecording, verifyRecording } from '../src/recording/index.ts'
import { createCore } from '../src/core.ts'
import { isPortcullisError, PortcullisError } from '../src/errors.ts'
import type { ApprovalRequest } from '../src/types.ts'
import { auditSink, op, setup } from './helpers.ts'

const RULES = `
  - { id: agents-read, when: { groups: [agents], class: [read] }, action: allow }
  - { id: agents-write, when: { groups: [agents], class: [write, delete] }, action: approve, approvers: [dba] }
  - { id: no-bulk, when: { class: [bulk-delete, schema-change, admin] }, action: block }`

async function coreFor(t: { teardown(fn: () => unknown): void }, rules = RULES, opts: { now?: () => number } = {}) {
  const s = await setup(t, rules)
  const audit = auditSink()
  const core = await createCore(s.config, { auditStream: audit.stream, ...opts })
  t.teardown(() => core.close())
  return { ...s, core, audit }
}

t.test('an authenticated agent reads, and a schema change is blocked by its rule', async t => {
  const { core, issuer } = await coreFor(t)
  const session = core.openSession(core.config.targets[0], '127.0.0.1:50000')
  const principal = await session.authenticate(await issuer.mint({ sub: 'agent-1', groups: ['agents'] }))
  t.equal(principal.subject, 'agent-1')
  t.same(principal.groups, ['agents'])
  const read = await session.decide(op('read', 'SELECT * FROM customers', ['public.customers']))
  t.equal(read.action, 'allow')
  t.equal(read.rule, 'agents-read')
  const drop = await session.decide(op('schema-change', 'DROP TABLE customers', ['public.customers']))
  t.equal(drop.action, 'block')
  t.equal(drop.rule, 'no-bulk')
  t.same(core.sessions().map(s => [s.id, s.subject]), [[session.id, 'agent-1']])
  await session.close()
  t.same(core.sessions(), [])
})

t.test('deciding before authentication is refused', async t => {
  const { core } = await coreFor(t)
  const session = core.openSession(core.config.targets[0], '127.0.0.1:50001')
  await t.rejects(session.decide(op('read', 'SELECT 1')), { code: 'AUTH_FAILED' })
})

t.test('a token that expires mid-session makes the next operation fail with TOKEN_EXPIRED', async t => {
  let clock = Date.now()
  const { core, issuer } = await coreFor(t, RULES, { now: () => clock })
  const session = core.openSession(core.config.targets[0], '127.0.0.1:50002')
  await session.authenticate(await issuer.mint({ sub: 'agent-1', groups: ['agents'], ttlSeconds: 60 }))
  t.equal((await session.decide(op('read', 'SELECT 1'))).action, 'allow')
  clock += 61_000
  t.throws(() => session.assertAlive(), { code: 'TOKEN_EXPIRED' })
  await t.rejects(session.decide(op('read', 'SELECT 1')), { code: 'TOKEN_EXPIRED' })
  // a fresh token for the same subject lets the session go on
  clock = Date.now()
  await session.authenticate(await issuer.mint({ sub: 'agent-1', groups: ['agents'], ttlSeconds: 60 }))
  t.equal((await session.decide(op('read', 'SELECT 1'))).action, 'allow')
})

t.test('a session cannot switch to another subject by re-authenticating', async t => {
  const { core, issuer } = await coreFor(t)
  const session = core.openSession(core.config.targets[0], '127.0.0.1:50003')
  await session.authenticate(await issuer.mint({ sub: 'agent-1', groups: ['agents'] }))
  await t.rejects(session.authenticate(await issuer.mint({ sub: 'admin', groups: ['dba'] })), { code: 'AUTH_FAILED' })
  t.equal(session.principal?.subject, 'agent-1')
})

t.test('revoking a subject aborts its live session and refuses its tokens', async t => {
  const { core, issuer } = await coreFor(t)
  const session = core.openSession(core.config.targets[0], '127.0.0.1:50004')
  const other = core.openSession(core.config.targets[0], '127.0.0.1:50005')
  const token = await issuer.mint({ sub: 'agent-1', groups: ['agents'] })
  await session.authenticate(token)
  await other.authenticate(await issuer.mint({ sub: 'agent-2', groups: ['agents'] }))
  core.revoke({ subject: 'agent-1' })
  t.ok(session.signal.aborted)
  t.ok(isPortcullisError(session.signal.reason, 'REVOKED'))
  t.notOk(other.signal.aborted)
  await t.rejects(session.decide(op('read', 'SELECT 1')), { code: 'REVOKED' })
  await t.rejects(session.authenticate(await issuer.mint({ sub: 'agent-1', groups: ['agents'] })), { code: 'REVOKED' }, 'no way back in on the same session')
  const fresh = core.openSession(core.config.targets[0], '127.0.0.1:50006')
  await t.rejects(fresh.authenticate(token), { code: 'AUTH_FAILED', details: { reason: 'revoked' } })
})

t.test('revoking a token id aborts only the session that used it', async t => {
  const { core, issuer } = await coreFor(t)
  const a = core.openSession(core.config.targets[0], '127.0.0.1:50007')
  const b = core.openSession(core.config.targets[0], '127.0.0.1:50008')
  await a.authenticate(await issuer.mint({ sub: 'agent-1', groups: ['agents'], jti: 'tok-a' }))
  await b.authenticate(await issuer.mint({ sub: 'agent-1', groups: ['agents'], jti: 'tok-b' }))
  core.revoke({ jti: 'tok-a' })
  t.ok(a.signal.aborted)
  t.notOk(b.signal.aborted)
})

t.test('an admin kill aborts the session signal with SESSION_CLOSED', async t => {
  const { core, issuer } = await coreFor(t)
  const a = core.openSession(core.config.targets[0], '127.0.0.1:50009')
  await a.authenticate(await issuer.mint({ sub: 'agent-1', groups: ['agents'] }))
  t.equal(core.kill('ses_unknown'), false)
  t.equal(core.kill(a.id, 'bye'), true)
  t.ok(isPortcullisError(a.signal.reason, 'SESSION_CLOSED'))
  t.equal((a.signal.reason as PortcullisError).message, 'bye')
  const b = core.openSession(core.config.targets[1], '127.0.0.1:50010')
  await b.authenticate(await issuer.mint({ sub: 'agent-2', groups: ['agents'] }))
  t.equal(core.killSubject('agent-2'), 1)
  t.ok(b.signal.aborted)
})

t.test('a write waits for approval by a dba and then goes through', async t => {
  const { core, issuer } = await coreFor(t)
  const session = core.openSession(core.config.targets[0], '127.0.0.1:50011')
  await session.authenticate(await issuer.mint({ sub: 'agent-1', groups: ['agents'] }))
  const dba = await core.authenticate(await issuer.mint({ sub: 'alice', groups: ['dba'] }))
  let seen: ApprovalRequest | undefined
  const pending = session.decide(op('write', "UPDATE customers SET name = $1 WHERE id = $2", ['public.customers']), {
    onPending: r => {
      seen = r
      setImmediate(() => core.approvals.approve(r.id, dba))
    },
  })
  const d = await pending
  t.equal(d.action, 'allow')
  t.match(d.approvalId, /^apr_[a-z2-7]{10}$/)
  t.equal(seen?.id, d.approvalId)
  t.equal(core.approvals.get(d.approvalId!)?.status, 'approved')
  t.equal(core.approvals.get(d.approvalId!)?.decidedBy, 'alice')
})

t.test('decideNow answers at once what needs no wait, and leaves an approval to decide()', async t => {
  const RULES_WINDOW = RULES.replace('approvers: [dba] }', 'approvers: [dba], window: 60s }')
  const { core, issuer } = await coreFor(t, RULES_WINDOW)
  const session = core.openSession(core.config.targets[0], '127.0.0.1:50012')
  t.throws(() => session.decideNow(op('read', 'SELECT 1')), { code: 'AUTH_FAILED' })
  await session.authenticate(await issuer.mint({ sub: 'agent-1', groups: ['agents'] }))
  t.match(session.decideNow(op('read', 'SELECT * FROM customers', ['public.customers'])), { action: 'allow', rule: 'agents-read' })
  t.match(session.decideNow(op('admin', 'ALTER SYSTEM SET fsync = off')), { action: 'block', rule: 'no-bulk' })
  const write = op('write', 'UPDATE customers SET name = $1 WHERE id = $2', ['public.customers'])
  t.equal(session.decideNow(write), undefined, 'an approval is never answered without a wait')
  t.equal(core.approvals.list().length, 0, 'and decideNow asks for none')
  const dba = await core.authenticate(await issuer.mint({ sub: 'alice', groups: ['dba'] }))
  const approved = await session.decide(write, { onPending: r => setImmediate(() => core.approvals.approve(r.id, dba)) })
  t.equal(approved.action, 'allow')
  // the window granted by that approval now answers the same statement at once
  t.match(session.decideNow(write), { action: 'allow', approvalId: approved.approvalId })
  const file = session.recorder!.path
  await session.close()
  const decisions = []
  for await (const e of readRecording(file)) if (e.type === 'decision') decisions.push((e.payload as { action: string }).action)
  t.same(decisions, ['allow', 'block', 'allow', 'allow'], 'each answer is recorded like a decide()')
})

t.test('decisions held for a round trip are one record of runs, read back (and replayed) as the decisions they stand for', async t => {
  const { core, issuer } = await coreFor(t)
  const { decisionsOfRuns, formatTranscript, readTranscript } = await import('../src/recording/index.ts')
  const session = core.openSession(core.config.targets[0], '127.0.0.1:50013')
  await session.authenticate(await issuer.mint({ sub: 'agent-1', groups: ['agents'] }))
  const ops = [
    op('read', 'SELECT * FROM customers', ['public.customers']),
    op('read', 'SELECT * FROM orders', ['public.orders']),
    op('admin', 'ALTER SYSTEM SET fsync = off'),
    op('read', 'SELECT 1'),
  ]
  // one by one, as a round trip of one command each: the reference
  const single = []
  for (const o of ops) single.push(session.decideNow(o))
  session.holdDecisions!()
  const held = ops.map(o => session.decideNow(o))
  session.releaseDecisions!()
  t.same(held, single, 'the same answers, held or not')
  // one held decision is the record it always was
  session.holdDecisions!()
  session.decideNow(ops[0]!)
  session.releaseDecisions!()
  const file = session.recorder!.path
  await session.close()
  const records = []
  for await (const e of readRecording(file)) if (e.type === 'decision') records.push(e.payload as Record<string, unknown>)
  t.equal(records.length, 4 + 1 + 1, 'four records, then one for the held four, then one for the held one')
  const batch = records[4]!
  t.same(batch.runs, [
    { action: 'allow', rule: 'agents-read', reason: 'allowed by rule agents-read', statements: ['SELECT * FROM customers', 'SELECT * FROM orders'], classes: ['read', 'read'], fingerprints: [ops[0]!.fingerprint, ops[1]!.fingerprint], resources: [['public.customers'], ['public.orders']] },
    { action: 'block', rule: 'no-bulk', reason: 'blocked by rule no-bulk', statements: ['ALTER SYSTEM SET fsync = off'], classes: ['admin'], fingerprints: [ops[2]!.fingerprint], resources: [[]] },
    { action: 'allow', rule: 'agents-read', reason: 'allowed by rule agents-read', statements: ['SELECT 1'], classes: ['read'], fingerprints: [ops[3]!.fingerprint], resources: [[]] },
  ], 'runs of one answer, the operations in columns')
  t.same(decisionsOfRuns(batch.runs as Record<string, unknown>[]), records.slice(0, 4), 'expanded: field for field the records of one decision each')
  t.same(records[5], records[0])
  // the transcript (portcullis replay) shows the held ones as it shows the single ones
  const lines = (await readTranscript(file)).entries.filter(e => e.type === 'decision').map(e => e.lines)
  t.same(lines[4], lines.slice(0, 4).flat(), 'one line per decision, the same lines')
  t.match(await formatTranscript(file), /decision +block by rule no-bulk \(blocked by rule no-bulk\) \{"statement":"ALTER SYSTEM SET fsync = off"/)
  t.equal((await verifyRecording(file)).status, 'intact')
})

t.test('a held request is recorded inside the decision that answers it, and alone when anything else comes first', async t => {
  const { core, issuer } = await coreFor(t)
  const { formatTranscript, heldRequest, readTranscript } = await import('../src/recording/index.ts')
  const session = core.openSession(core.config.targets[0], '127.0.0.1:50014')
  await session.authenticate(await issuer.mint({ sub: 'agent-1', groups: ['agents'] }))
  const dba = await core.authenticate(await issuer.mint({ sub: 'alice', groups: ['dba'] }))
  const read = op('read', 'SELECT * FROM customers', ['public.customers'])
  // decided at once: one record for the request and its decision
  session.holdRequest!({ type: 'Q', statement: 'SELECT * FROM customers' })
  t.equal(session.decideNow(read)?.action, 'allow')
  // something else is recorded before the decision: the request goes first, on its own
  session.holdRequest!({ type: 'Q', statement: 'SELECT * FROM customers -- 2' })
  session.record('event', { event: 'in-between' })
  session.decideNow(read)
  // a decision that waits for an approver: the request is written before the wait
  session.holdRequest!({ type: 'Q', statement: 'UPDATE customers SET name = 1' })
  const write = op('write', 'UPDATE customers SET name = $1', ['public.customers'])
  const approved = await session.decide(write, { onPending: r => setImmediate(() => core.approvals.approve(r.id, dba)) })
  t.equal(approved.action, 'allow')
  // two held in a row: the first is written when the second is held
  session.holdRequest!({ type: 'Q', statement: 'refused before any decision' })
  session.holdRequest!({ type: 'Q', statement: 'SELECT 1' })
  session.decideNow(op('read', 'SELECT 1'))
  // held and never decided: written before the session's end
  session.holdRequest!({ type: 'Q', statement: 'left unanswered' })
  const file = session.recorder!.path
  await session.close()
  const records: { type: string; payload: Record<string, unknown> }[] = []
  for await (const e of readRecording(file)) if (e.type !== 'session-start' && e.type !== 'seal') records.push({ type: e.type, payload: e.payload })
  const shown = records.filter(r => r.type !== 'event' || r.payload.event === 'in-between').map(r => (r.type === 'decision' && heldRequest(r.payload) ? `decision+request ${heldRequest(r.payload)!.statement}` : r.type === 'request' ? `request ${r.payload.statement}` : r.type))
  t.same(shown, [
    'decision+request SELECT * FROM customers',
    'request SELECT * FROM customers -- 2',
    'event',
    'decision',
    'request UPDATE customers SET name = 1',
    'decision',
    'request refused before any decision',
    'decision+request SELECT 1',
    'request left unanswered',
    'session-end',
  ])
  t.match(records.find(r => r.type === 'decision')!.payload, { request: { type: 'Q', statement: 'SELECT * FROM customers' }, action: 'allow', rule: 'agents-read', statement: 'SELECT * FROM customers', class: 'read', fingerprint: read.fingerprint, resources: ['public.customers'] })
  // the transcript reads it as the request record and the decision record it stands for
  const entries = (await readTranscript(file)).entries
  const first = entries.findIndex(e => e.type === 'request')
  t.same(entries.slice(first, first + 2).map(e => [e.type, e.lines]), [
    ['request', ['SELECT * FROM customers {"type":"Q"}']],
    ['decision', ['allow by rule agents-read (allowed by rule agents-read) {"statement":"SELECT * FROM customers","class":"read","fingerprint":"' + read.fingerprint + '","resources":["public.customers"]}']],
  ])
  t.equal(entries[first]!.index, entries[first + 1]!.index, 'one record, two entries')
  t.notMatch(await formatTranscript(file), /"request"/, 'the held request is not shown again inside the decision')
  t.equal((await verifyRecording(file)).status, 'intact')
})

t.test('audit lines carry session, principal, target and decision, and never the token or password', async t => {
  process.env.PORTCULLIS_TEST_PG_PASSWORD = 'hunter2-secret'
  t.teardown(() => delete process.env.PORTCULLIS_TEST_PG_PASSWORD)
  const { core, issuer, audit } = await coreFor(t)
  const session = core.openSession(core.config.targets[0], '127.0.0.1:50012')
  const token = await issuer.mint({ sub: 'agent-1', groups: ['agents'] })
  await session.authenticate(token)
  t.equal(await session.secret(core.config.targets[0].upstream.password!), 'hunter2-secret')
  const d = await session.decide(op('read', 'SELECT email FROM customers', ['public.customers']))
  session.audit({ class: 'read', resources: ['public.customers'], decision: d.action, rule: d.rule, rows: 3, bytes: 120, durationMs: 4 })
  const bad = core.openSession(core.config.targets[0], '127.0.0.1:50013')
  await t.rejects(bad.authenticate(token + 'x'))
  await session.close()
  const lines = audit.lines()
  const op1 = lines.find(l => l.decision === 'allow')!
  t.match(op1, {
    session: session.id,
    principal: { sub: 'agent-1', groups: ['agents'] },
    target: 'docs-db',
    protocol: 'postgres',
    class: 'read',
    rule: 'agents-read',
    rows: 3,
    bytes: 120,
  })
  t.match(op1.time, /^\d{4}-\d\d-\d\dT/)
  t.ok(lines.some(l => l.session === bad.id && typeof l.error === 'string' && /authentication failed/.test(l.error as string)))
  t.notOk(audit.text().includes(token), 'no token in the audit log')
  t.notOk(audit.text().includes(token.split('.')[2]), 'no token signature in the audit log')
  t.notOk(audit.text().includes('hunter2-secret'), 'no password in the audit log')
  const metrics = core.metrics.render()
  t.match(metrics, /portcullis_operations_total\{class="read",decision="allow"\} 1/)
  t.match(metrics, /portcullis_bytes_total\{direction="out"\} 120/)
  t.match(metrics, /portcullis_sessions 1/)
})

t.test('a session recording holds the decisions, verifies intact, and never holds the token', async t => {
  const { core, issuer } = await coreFor(t)
  const session = core.openSession(core.config.targets[0], '127.0.0.1:50020')
  const token = await issuer.mint({ sub: 'agent-1', groups: ['agents'] })
  await session.authenticate(token)
  session.record('request', { sql: 'SELECT email FROM customers' })
  await session.decide(op('read', 'SELECT email FROM customers', ['public.customers']))
  await session.decide(op('schema-change', 'DROP TABLE customers', ['public.customers']))
  const file = session.recorder!.path
  await session.close('client left')
  t.same(await verifyRecording(file).then(r => r.status), 'intact')
  const entries = []
  for await (const e of readRecording(file)) entries.push(e)
  t.same(
    entries.map(e => e.type),
    ['session-start', 'event', 'request', 'decision', 'decision', 'session-end', 'seal'],
  )
  t.match(entries[0].payload, { sessionId: session.id, target: 'docs-db', principal: { subject: 'agent-1', groups: ['agents'] } })
  t.match(entries[3].payload, { action: 'allow', rule: 'agents-read', statement: 'SELECT email FROM customers', class: 'read' })
  t.match(entries[4].payload, { action: 'block', rule: 'no-bulk' })
  t.match(entries[5].payload, { reason: 'client left' })
  const bytes = await readFile(file)
  t.equal(bytes.indexOf(token.split('.')[2]), -1, 'no token signature in the recording')
  t.equal(bytes.indexOf(token.split('.')[1]), -1, 'no token payload in the recording')
})

t.test('when the recording cannot be written and onFailure is block, operations are refused', async t => {
  for (const onFailure of ['block', 'allow'] as const) {
    const s = await setup(t, RULES)
    const notADir = join(s.dir, 'file')
    await writeFile(notADir, 'x')
    const config = { ...s.config, recording: { dir: join(notADir, 'recordings'), onFailure } }
    const core = await createCore(config, { auditStream: auditSink().stream })
    t.teardown(() => core.close())
    const session = core.openSession(core.config.targets[0], '127.0.0.1:50021')
    await session.authenticate(await s.issuer.mint({ sub: 'agent-1', groups: ['agents'] }))
    while (!session.recorder!.failed) await new Promise(r => setTimeout(r, 5))
    if (onFailure === 'block') await t.rejects(session.decide(op('read', 'SELECT 1')), { code: 'RECORDING_FAILED' })
    else t.equal((await session.decide(op('read', 'SELECT 1'))).action, 'allow')
  }
})

t.test('the mask plan is compiled for the principal and target from the masking rules', async t => {
  const s = await setup(
    t,
    RULES,
    `masking:
  - { id: pii, when: { targets: [docs-db], groups: [agents] }, columns: ["customers.email"], detectors: [email], method: redact }`,
  )
  const core = await createCore(s.config, { auditStream: auditSink().stream })
  t.teardown(() => core.close())
  const session = core.openSession(core.config.targets[0], '127.0.0.1:50022')
  t.ok(session.masks.empty, 'nothing is masked before authentication')
  await session.authenticate(await s.issuer.mint({ sub: 'agent-1', groups: ['agents'] }))
  t.notOk(session.masks.empty)
  t.equal(session.masks.forColumn('public', 'customers', 'email'), 'redact')
  t.equal(session.masks.forColumn('public', 'customers', 'name'), undefined)
  const d = await session.decide(op('read', 'SELECT email FROM customers'))
  t.equal(d.masks, session.masks)
  const cache = core.openSession(core.config.targets[1], '127.0.0.1:50023')
  await cache.authenticate(await s.issuer.mint({ sub: 'agent-1', groups: ['agents'] }))
  t.ok(cache.masks.empty, 'the rule names another target')
})

t.test('a reload applies to new operations of live sessions, which keep running', async t => {
  const { core, issuer, config } = await coreFor(t)
  const session = core.openSession(core.config.targets[0], '127.0.0.1:50024')
  await session.authenticate(await issuer.mint({ sub: 'agent-1', groups: ['agents'] }))
  t.equal((await session.decide(op('read', 'SELECT 1'))).action, 'allow')
  core.reload({ ...config, rules: [{ id: 'lockdown', when: {}, action: 'block', reason: 'maintenance' }] })
  t.notOk(session.signal.aborted)
  t.match(await session.decide(op('read', 'SELECT 1')), { action: 'block', rule: 'lockdown', reason: 'maintenance' })
  t.equal(core.config.rules[0].id, 'lockdown')
  const p = await core.authenticate(await issuer.mint({ sub: 'agent-2', groups: ['agents'] }))
  t.equal(core.wouldDecide(p, 'docs-db', op('read', 'SELECT 1')).rule, 'lockdown')
})

t.test('a reload that revokes a subject ends its live sessions', async t => {
  const { core, issuer, config } = await coreFor(t)
  const session = core.openSession(core.config.targets[0], '127.0.0.1:50025')
  await session.authenticate(await issuer.mint({ sub: 'agent-1', groups: ['agents'] }))
  core.reload({ ...config, identity: { ...config.identity, revocations: [{ subject: 'agent-1' }] } })
  t.ok(isPortcullisError(session.signal.reason, 'REVOKED'))
})

t.test('close seals every open session and refuses new ones', async t => {
  const { core, issuer } = await coreFor(t)
  const session = core.openSession(core.config.targets[0], '127.0.0.1:50026')
  await session.authenticate(await issuer.mint({ sub: 'agent-1', groups: ['agents'] }))
  const file = session.recorder!.path
  await core.close()
  t.equal((await verifyRecording(file)).status, 'intact')
  t.same(core.sessions(), [])
  t.throws(() => core.openSession(core.config.targets[0], 'x'), { code: 'SHUTDOWN' })
  const m = core.metrics.render()
  t.match(m, /portcullis_sessions 0/)
  t.match(m, /# TYPE portcullis_operation_duration_seconds histogram/)
  t.match(m, /portcullis_recorder_backlog 0/)
})

t.test('recordings are sealed with the configured HMAC and Ed25519 keys', async t => {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  process.env.PORTCULLIS_TEST_SEAL_HMAC = 'seal-hmac-key-for-tests'
  process.env.PORTCULLIS_TEST_SEAL_ED = privateKey.export({ type: 'pkcs8', format: 'pem' }) as string
  t.teardown(() => {
    delete process.env.PORTCULLIS_TEST_SEAL_HMAC
    delete process.env.PORTCULLIS_TEST_SEAL_ED
  })
  const s = await setup(
    t,
    RULES,
    `  - { id: spare, when: { subjects: [nobody] }, action: allow }
`,
  )
  const text = s.yaml
    .replace('secrets:\n', 'secrets:\n  hm: { env: PORTCULLIS_TEST_SEAL_HMAC }\n  ed: { env: PORTCULLIS_TEST_SEAL_ED }\n')
    .replace('onFailure: block }', 'onFailure: block, sign: { hmacKey: { secret: hm }, ed25519Key: { secret: ed } } }')
  const core = await createCore(parseConfig(text, 'signed.yaml'), { auditStream: auditSink().stream })
  t.teardown(() => core.close())
  const session = core.openSession(core.config.targets[0], '127.0.0.1:50030')
  await session.authenticate(await s.issuer.mint({ sub: 'agent-1', groups: ['agents'] }))
  await session.decide(op('read', 'SELECT 1'))
  const file = session.recorder!.path
  await session.close()
  t.equal((await verifyRecording(file, { hmacKey: Buffer.from('seal-hmac-key-for-tests'), publicKey })).status, 'intact')
  t.equal((await verifyRecording(file, { hmacKey: Buffer.from('another-key') })).status, 'tampered')
})

t.test('a reload that cannot be applied leaves the running config untouched', async t => {
  const { core, issuer, config } = await coreFor(t)
  const session = core.openSession(core.config.targets[0], '127.0.0.1:50031')
  await session.authenticate(await issuer.mint({ sub: 'agent-1', groups: ['agents'] }))
  const bad = {
    ...config,
    identity: { issuers: [{ ...config.identity.issuers[0], jwksFile: undefined, jwks: 'http://' }], revocations: [{ subject: 'agent-1' }] },
    rules: [],
  }
  t.throws(() => core.reload(bad))
  t.equal(core.config, config)
  t.notOk(session.signal.aborted, 'the revocation in the refused config did not apply')
  t.equal((await session.decide(op('read', 'SELECT 1'))).action, 'allow')
  t.equal((await core.authenticate(await issuer.mint({ sub: 'agent-1', groups: ['agents'] }))).subject, 'agent-1')
})

/** the files under `dir` this process holds open (every thread's descriptors are in /proc/self/fd) */
function openUnder(dir: string): string[] {
  const out: string[] = []
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(`/proc/self/fd/${fd}`)
      if (target.startsWith(dir)) out.push(target)
    } catch {
      // the descriptor readdir itself used, closed by now
    }
  }
  return out
}

t.test('a client that leaves (or is killed) while its token is verified leaves no recording and no open file', async t => {
  const s = await setup(t, RULES)
  // an identity provider that answers only when the test says: verification stays in flight
  const jwks = await startHeldJwks(JSON.parse(await readFile(s.issuer.jwksFile, 'utf8')))
  t.teardown(() => jwks.stop())
  const yaml = s.yaml.replace(`jwksFile: "${s.issuer.jwksFile}"`, `jwks: "${jwks.url}"`)
  t.not(yaml, s.yaml)
  const core = await createCore(parseConfig(yaml, 'held-jwks.yaml'), { auditStream: auditSink().stream })
  t.teardown(() => core.close())
  const recordings = join(s.dir, 'recordings')
  const token = await s.issuer.mint({ sub: 'agent-1', groups: ['agents'] })

  const sessions = Array.from({ length: 20 }, (_, i) => core.openSession(core.config.targets[0], `127.0.0.1:${51000 + i}`))
  const outcomes = sessions.map(x => x.authenticate(token).then(() => 'accepted', (e: { code: string }) => e.code))
  while (jwks.requests === 0) await new Promise(r => setTimeout(r, 5))
  // half of them hang up, the other half are killed by an administrator, all before the keys arrive
  await Promise.all(sessions.slice(0, 10).map(x => x.close('client left')))
  for (const x of sessions.slice(10)) core.kill(x.id, 'killed mid-handshake')
  jwks.release()
  t.same(await Promise.all(outcomes), Array(20).fill('SESSION_CLOSED'), 'every late verification is refused')
  await Promise.all(sessions.map(x => x.close()))
  t.same(sessions.filter(x => x.recorder !== undefined).length, 0, 'no session opened a recorder')
  t.same(sessions.filter(x => x.principal !== undefined).length, 0, 'no session holds a principal')
  t.same(core.sessions(), [])
  t.same(await readdir(recordings).catch(() => []), [], 'no recording file was created')
  t.same(openUnder(recordings), [], 'no descriptor open under the recordings dir')

  // the same token on a session that stays: accepted, recorded, sealed, its file closed
  const live = core.openSession(core.config.targets[0], '127.0.0.1:51100')
  await live.authenticate(token)
  const file = live.recorder!.path
  await live.close('done')
  t.equal((await verifyRecording(file)).status, 'intact')
  t.same(openUnder(recordings), [], 'the sealed recording is closed')
})

t.test('auditOperation writes the line audit() writes, and counts the bytes in the session info as audit() does', async t => {
  const { core, issuer, audit } = await coreFor(t)
  const a = core.openSession(core.config.targets[0], '127.0.0.1:50100')
  const b = core.openSession(core.config.targets[0], '127.0.0.1:50101')
  const token = await issuer.mint({ sub: 'agent-1', groups: ['agents'] })
  await a.authenticate(token)
  await b.authenticate(token)
  const o = op('read', 'SELECT email FROM customers WHERE id = $1', ['public.customers'])
  const rest = { decision: 'allow', rule: 'agents-read', rows: 1, bytes: 321, masked: 0, durationMs: 2 } as const
  a.audit({ class: o.class, resources: o.resources, fingerprint: o.fingerprint, statement: o.statement, ...rest })
  b.auditOperation!(o, rest)
  b.auditOperation!(o, rest)
  const info = new Map(core.sessions().map(s => [s.id, s]))
  t.equal(info.get(a.id)!.bytes, 321, 'audit() counts the bytes')
  t.equal(info.get(b.id)!.bytes, 642, 'auditOperation counts them too (the Postgres Execute and Redis paths use it)')
  const strip = (l: Record<string, unknown>) => {
    const { time: _t, session: _s, ...restOf } = l
    return restOf
  }
  const lineA = audit.lines().filter(l => l.session === a.id && l.decision === 'allow')
  const linesB = audit.lines().filter(l => l.session === b.id && l.decision === 'allow')
  t.equal(lineA.length, 1)
  t.equal(linesB.length, 2)
  t.same(strip(linesB[0]), strip(lineA[0]), 'the same fields, whichever path wrote them')
  t.same(strip(linesB[1]), strip(lineA[0]), 'and again from the cached operation text')
  await a.close()
  await b.close()
})

t.test('while the audit log cannot be written, every operation is refused (fail closed)', async t => {
  // /dev/full: open() succeeds, every write fails with ENOSPC
  const s = await setup(t, RULES, 'audit: { destination: /dev/full }')
  const core = await createCore(s.config)
  t.teardown(() => core.close())
  const session = core.openSession(core.config.targets[0], '127.0.0.1:50100')
  await session.authenticate(await s.issuer.mint({ sub: 'agent-1', groups: ['agents'] }))
  await core.flushAudit()
  t.match(core.auditFailure()?.message, /ENOSPC|no space/i)
  t.throws(() => session.decideNow(op('read', 'SELECT 1')), { code: 'AUDIT_FAILED', message: 'audit log unavailable; operations are refused until it can be written again' })
  await t.rejects(session.decide(op('read', 'SELECT * FROM customers', ['public.customers'])), { code: 'AUDIT_FAILED' })
  await session.close()
})
