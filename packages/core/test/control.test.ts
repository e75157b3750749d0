import t from 'tap'
import { createCore } from '../src/core.ts'
import { MemoryControlStore } from '../src/control/memory.ts'
import type { ControlHealth } from '../src/control/store.ts'
import type { ApprovalRequest } from '../src/types.ts'
import { auditSink, op, setup } from './helpers.ts'

const RULES = `
  - { id: agents-read, when: { groups: [agents], class: [read] }, action: allow }
  - { id: agents-delete, when: { groups: [agents], class: [delete] }, action: approve, approvers: [dba], window: 10m }
  - { id: no-bulk, when: { class: [bulk-delete, schema-change, admin] }, action: block }`

/** the memory store, counting every call the core makes, and able to say it is down */
class WatchedStore extends MemoryControlStore {
  calls: string[] = []
  down = false
  #listeners = new Set<(h: ControlHealth) => void>()
  override health(): ControlHealth {
    return this.down ? { kind: this.kind, ok: false, error: 'unreachable (test)' } : super.health()
  }
  override onHealth(fn: (h: ControlHealth) => void): () => void {
    this.#listeners.add(fn)
    return () => this.#listeners.delete(fn)
  }
  setDown(down: boolean) {
    this.down = down
    for (const fn of this.#listeners) fn(this.health())
  }
}

/** as a shared store: what it holds came from other instances, so it must be read before trusting */
class SharedWatchedStore extends WatchedStore {
  override readonly kind = 'postgres' as const
}
for (const m of ['putRequest', 'getRequest', 'listRequests', 'decide', 'findGrant', 'grants', 'revoke', 'revocations', 'putSessions', 'endSession', 'listSessions', 'kill'] as const) {
  const orig = MemoryControlStore.prototype[m] as (...a: unknown[]) => Promise<unknown>
  ;(WatchedStore.prototype as unknown as Record<string, unknown>)[m] = function (this: WatchedStore, ...args: unknown[]) {
    this.calls.push(m)
    return orig.apply(this, args)
  }
}

async function world(t: { teardown(fn: () => unknown): void }) {
  const s = await setup(t, RULES)
  const store = new WatchedStore()
  const core = await createCore(s.config, { auditStream: auditSink().stream, controlStore: store })
  t.teardown(() => core.close())
  const session = core.openSession(core.config.targets[0], '127.0.0.1:40000')
  await session.authenticate(await s.issuer.mint({ sub: 'agent-1', groups: ['agents'] }))
  const alice = await core.authenticate(await s.issuer.mint({ sub: 'alice', groups: ['dba'] }))
  return { ...s, core, session, store, alice }
}

const READ = op('read', 'SELECT * FROM customers', ['public.customers'])
const DROP = op('schema-change', 'DROP TABLE customers', ['public.customers'])
const DELETE = op('delete', 'DELETE FROM customers WHERE id = $1', ['public.customers'])

t.test('allow, block and a granted window are decided without a call to the control store', async t => {
  const { core, session, store, alice } = await world(t)
  store.calls.length = 0
  t.equal(session.decideNow(READ)?.action, 'allow')
  t.equal(session.decideNow(DROP)?.action, 'block')
  t.equal(session.decideNow(DELETE), undefined, 'approval needed: decideNow says so and asks nobody')
  t.same(store.calls, [], 'no store call on the data path')

  let onPending!: (r: ApprovalRequest) => void
  const pending = new Promise<ApprovalRequest>(r => (onPending = r))
  const decision = session.decide(DELETE, { onPending })
  await core.approvals.approve((await pending).id, alice)
  t.equal((await decision).action, 'allow')
  store.calls.length = 0
  t.match(session.decideNow(DELETE), { action: 'allow', reason: /approved by window/ })
  t.same(store.calls, [], 'the window is read from this process memory')
})

t.test('with the store down, an approval-requiring operation is refused at once as a block that says why; the rest flows', async t => {
  const { session, store } = await world(t)
  store.down = true
  t.equal(session.decideNow(READ)?.action, 'allow')
  let asked = false
  const d = await session.decide(DELETE, { onPending: () => (asked = true) })
  t.match(d, { action: 'block', rule: 'agents-delete', reason: /approval service unavailable/ })
  t.notOk(d.approvalId, 'no request was made')
  t.notOk(asked)
  t.notOk(store.calls.includes('putRequest'))
})

t.test('revocations and kills told by the store reach this process and end its sessions', async t => {
  const { core, session, store, issuer } = await world(t)
  const other = core.openSession(core.config.targets[0], '127.0.0.1:40001')
  await other.authenticate(await issuer.mint({ sub: 'agent-2', groups: ['agents'] }))
  // as another instance would: straight into the store
  await store.revoke({ subject: 'agent-1' })
  t.ok(session.signal.aborted, 'the revoked subject\u2019s session ended')
  t.match(session.signal.reason, { code: 'REVOKED' })
  t.notOk(other.signal.aborted)
  await store.kill({ sessionId: other.id, reason: 'ended elsewhere' })
  t.match(other.signal.reason, { code: 'SESSION_CLOSED', message: 'ended elsewhere' })
  t.ok(core.revocations().some(r => r.subject === 'agent-1'))
})

t.test('the admin side: sessions, kill and revoke through core.control; 503-worthy errors while the store is down', async t => {
  const { core, session, store } = await world(t)
  t.same((await core.control.sessions()).map(s => [s.id, s.instance, s.subject]), [[session.id, core.instance, 'agent-1']])
  t.equal(await core.control.kill('ses_unknown'), false)
  t.equal(await core.control.killSubject('agent-1'), 1)
  store.down = true
  t.same(core.control.health(), { kind: 'memory', ok: false, error: 'unreachable (test)' })
  await t.rejects(core.control.revoke({ subject: 'agent-3' }), { code: 'CONTROL_STORE_UNAVAILABLE' })
  t.ok(core.revocations().some(r => r.subject === 'agent-3'), 'applied here even so: revoking fails safe')
})

t.test('an instance that starts while a shared store is away lets nobody in until it has read the revocations', async t => {
  const s = await setup(t, RULES)
  const store = new SharedWatchedStore()
  await store.revoke({ subject: 'mallory' })
  store.down = true
  const core = await createCore(s.config, { auditStream: auditSink().stream, controlStore: store })
  t.teardown(() => core.close())
  const session = core.openSession(core.config.targets[0], '127.0.0.1:40000')
  await t.rejects(session.authenticate(await s.issuer.mint({ sub: 'mallory', groups: ['agents'] })), {
    code: 'AUTH_FAILED',
    message: /revocation list is not loaded/,
  })
  await t.rejects(core.authenticate(await s.issuer.mint({ sub: 'alice', groups: ['dba'] })), { code: 'AUTH_FAILED' }, 'the admin API too')
  store.setDown(false)
  await new Promise(r => setImmediate(r))
  const again = core.openSession(core.config.targets[0], '127.0.0.1:40001')
  await t.rejects(again.authenticate(await s.issuer.mint({ sub: 'mallory', groups: ['agents'] })), { code: 'AUTH_FAILED', message: /revoked/ }, 'the revocation it read applies')
  const fine = core.openSession(core.config.targets[0], '127.0.0.1:40002')
  t.equal((await fine.authenticate(await s.issuer.mint({ sub: 'agent-1', groups: ['agents'] }))).subject, 'agent-1')
})
