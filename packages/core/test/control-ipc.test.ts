// The IPC control store of a cluster worker, against the primary's ControlStoreHost over an
// in-process channel pair that behaves like node:cluster's (messages structured-cloned, delivered
// in order, asynchronously; 'disconnect' when the primary goes). The cluster itself, with real
// processes, is tested in packages/gateway/test/multi-worker.test.ts.
import t from 'tap'
import { EventEmitter } from 'node:events'
import { ControlStoreHost, IpcControlStore, type IpcChannel } from '../src/control/ipc.ts'
import { MemoryControlStore } from '../src/control/memory.ts'
import { isShared, type ControlChange } from '../src/control/store.ts'
import { PortcullisError } from '../src/errors.ts'
import type { ApprovalRequest } from '../src/types.ts'

function pair(host: ControlStoreHost, key: string) {
  const toWorker = new EventEmitter()
  let connected = true
  const channel: IpcChannel & { disconnect(): void } = {
    send(m) {
      const copy = structuredClone(m)
      setImmediate(() => host.handle(key, copy))
    },
    on(event: string, fn: (m?: unknown) => void) {
      toWorker.on(event, fn)
    },
    get connected() {
      return connected
    },
    disconnect() {
      connected = false
      toWorker.emit('disconnect')
    },
  }
  host.attach(key, m => {
    const copy = structuredClone(m)
    setImmediate(() => toWorker.emit('message', copy))
  })
  return { store: new IpcControlStore(channel), channel }
}

function request(id: string, instance: string, expires = Date.now() + 60_000): ApprovalRequest {
  return {
    id,
    principal: { subject: 'agent-1', groups: ['agents'], issuer: 'test' },
    target: 'db',
    protocol: 'postgres',
    class: 'write',
    statement: 'UPDATE t SET a = $1',
    fingerprint: 'f1',
    resources: ['public.t'],
    rule: 'write',
    approvers: ['dba'],
    facts: {},
    created: Date.now(),
    expires,
    status: 'pending',
    instance,
  } as ApprovalRequest
}

t.test('two workers share the primary memory store: one decision wins, and each hears every change before its own call returns', async t => {
  const host = new ControlStoreHost(new MemoryControlStore())
  const a = pair(host, 'a')
  const b = pair(host, 'b')
  t.ok(isShared(a.store), 'a worker must not trust its own memory alone')
  t.same(a.store.health(), { kind: 'memory', ok: true })
  await a.store.start({ id: 'wa', host: 'h', pid: 1, started: 0 })
  await b.store.start({ id: 'wb', host: 'h', pid: 2, started: 0 })
  const heardA: ControlChange[] = []
  const heardB: ControlChange[] = []
  a.store.subscribe(c => heardA.push(c))
  b.store.subscribe(c => heardB.push(c))

  await a.store.putRequest(request('apr_1', 'wa'))
  t.match(heardA, [{ kind: 'request', request: { id: 'apr_1', status: 'pending' } }], 'the caller heard its change before the call returned')
  t.match(await b.store.getRequest('apr_1'), { id: 'apr_1', status: 'pending' })
  const grant = { subject: 'agent-1', target: 'db', fingerprint: 'f1', until: Date.now() + 60_000, approvalId: 'apr_1' }
  const [first, second] = await Promise.allSettled([
    b.store.decide('apr_1', { status: 'approved', decidedBy: 'alice', grant }),
    a.store.decide('apr_1', { status: 'denied', decidedBy: 'bob' }),
  ])
  t.match(first, { status: 'fulfilled', value: { status: 'approved', decidedBy: 'alice' } })
  t.match(second, { status: 'rejected', reason: { code: 'APPROVAL_NOT_PENDING' } }, 'the second verdict is refused with its stable code')
  t.ok((second as PromiseRejectedResult).reason instanceof PortcullisError, 'as a PortcullisError')
  t.match(await a.store.findGrant('agent-1', 'db', 'f1'), { approvalId: 'apr_1' }, 'the window is there for the other worker')
  await new Promise(r => setImmediate(r))
  for (const heard of [heardA, heardB]) t.match(heard.map(c => c.kind), ['request', 'grant', 'request'], 'both heard the request, the grant and the decision')

  await a.store.revoke({ subject: 'agent-9' })
  await b.store.kill({ subject: 'agent-9', reason: 'test' })
  await new Promise(r => setImmediate(r))
  t.match(heardB.slice(3).map(c => c.kind), ['revocation', 'kill'])
  t.same(await b.store.revocations(), [{ subject: 'agent-9' }])
})

t.test('a worker that leaves (close or death) is an ended instance: its pending requests read withdrawn, its sessions leave the registry', async t => {
  const memory = new MemoryControlStore()
  const host = new ControlStoreHost(memory)
  const a = pair(host, 'a')
  const b = pair(host, 'b')
  await a.store.start({ id: 'wa', host: 'h', pid: 1, started: 0 })
  await b.store.start({ id: 'wb', host: 'h', pid: 2, started: 0 })
  await a.store.putRequest(request('apr_a', 'wa'))
  await b.store.putRequest(request('apr_b', 'wb'))
  const session = { target: 'db', protocol: 'postgres' as const, remote: '127.0.0.1:1', started: 0, lastActivity: 0, subject: 's' }
  await a.store.putSessions([{ ...session, id: 'sa', instance: 'wa' }])
  await b.store.putSessions([{ ...session, id: 'sb', instance: 'wb' }])

  await host.detach('a')
  t.match(await b.store.getRequest('apr_a'), { status: 'withdrawn', reason: /worker .* ended/ }, "the dead worker's request")
  t.match(await b.store.getRequest('apr_b'), { status: 'pending' }, "the live worker's request is untouched")
  t.same((await b.store.listSessions()).map(s => s.id), ['sb'])

  await b.store.close()
  t.match(await memory.getRequest('apr_b'), { status: 'withdrawn' }, 'close() gives the lease back the same way')
  t.same(await memory.listSessions(), [])
})

t.test('the primary gone: health says so, calls in flight and new calls fail as CONTROL_STORE_UNAVAILABLE', async t => {
  const host = new ControlStoreHost(new MemoryControlStore())
  const a = pair(host, 'a')
  const told: boolean[] = []
  a.store.onHealth(h => told.push(h.ok))
  await a.store.start({ id: 'wa', host: 'h', pid: 1, started: 0 })
  const inFlight = a.store.listRequests()
  a.channel.disconnect()
  await t.rejects(inFlight, { code: 'CONTROL_STORE_UNAVAILABLE' })
  await t.rejects(a.store.putRequest(request('apr_x', 'wa')), { code: 'CONTROL_STORE_UNAVAILABLE' })
  t.same(told, [false])
  t.match(a.store.health(), { kind: 'memory', ok: false, error: /primary/ })
  await a.store.close()
  t.pass('close() after the primary is gone does not hang')
})

t.test('a scope’s upstream objects: what one worker records as a scope’s, another reads; the first owner keeps an id', async t => {
  const host = new ControlStoreHost(new MemoryControlStore())
  const a = pair(host, 'a').store
  const b = pair(host, 'b').store
  await a.putObjects('llm', 'user="acme"', 'file', ['file-1'])
  await b.putObjects('llm', 'user="globex"', 'file', ['file-1', 'file-2'])
  t.same(await b.ownedObjects('llm', 'user="acme"', 'file', ['file-1', 'file-2']), ['file-1'])
  t.same(await a.ownedObjects('llm', 'user="globex"', 'file', ['file-1', 'file-2']), ['file-2'])
  await a.dropObjects('llm', 'user="globex"', 'file', ['file-1'])
  t.same(await b.ownedObjects('llm', 'user="acme"', 'file', ['file-1']), ['file-1'], 'another scope’s drop leaves it')
  await b.dropObjects('llm', 'user="acme"', 'file', ['file-1'])
  t.same(await a.ownedObjects('llm', 'user="acme"', 'file', ['file-1']), [])
})
