// Blast radius on real Redis: how many of a DEL's keys exist (EXISTS on a connection of the
// gateway's own) and how many documents FT.DROPINDEX … DD deletes (FT.INFO num_docs) are facts
// rules match; a session on another database gets no estimate, read the stricter way.
import t from 'tap'
import { Redis } from 'ioredis'
import type { ApprovalRequest } from '@portcullis/core'
import { startGateway, type Gateway } from './harness.ts'

const RULES = `
  - { id: agents, when: { groups: [agents], class: [session, read, write, delete, bulk-delete, schema-change] }, action: allow }
  - { id: many-keys, when: { class: [delete, bulk-delete], facts: { keys: { gt: 3 } } }, action: approve, approvers: [ops], timeout: 1m }
  - { id: big-drop, when: { facts: { documents: { gt: 2 } } }, action: block, reason: dropping an index with its documents }`
const ops = { subject: 'olga', groups: ['ops'], issuer: 'test' }

async function pending(gw: Gateway, seen: Set<string>): Promise<ApprovalRequest> {
  for (;;) {
    const r = gw.core.approvals.list().find(a => a.status === 'pending' && !seen.has(a.id))
    if (r) {
      seen.add(r.id)
      return r
    }
    await new Promise(res => setTimeout(res, 20))
  }
}

t.test('DEL: the keys that exist decide, not the keys named', async t => {
  const gw = await startGateway(t, { rules: RULES })
  const direct = new Redis({ port: gw.redis.port, username: 'gateway', password: 'gw-secret-pw', lazyConnect: true })
  await direct.connect()
  t.teardown(() => direct.disconnect())
  const r = new Redis({ port: gw.port, password: await gw.token(), lazyConnect: true, enableReadyCheck: false, maxRetriesPerRequest: 0 })
  t.teardown(() => r.disconnect())
  await r.connect()
  const seen = new Set<string>()

  await direct.mset('a', 1, 'b', 1, 'k1', 1, 'k2', 1, 'k3', 1, 'k4', 1, 'k5', 1)
  t.equal(await r.del('a', 'b', 'c'), 2, 'three keys named, two exist: allowed')
  t.equal(await r.del('k1', 'k2', 'n1', 'n2', 'n3', 'n4', 'n5', 'n6', 'k1', 'k2'), 2, 'ten named, two distinct exist: allowed')
  t.notOk(gw.core.approvals.list().length, 'nothing was held')

  await direct.mset('k1', 1, 'k2', 1)
  const held = r.del('k1', 'k2', 'k3', 'k4', 'k5')
  const req = await pending(gw, seen)
  t.equal(req.rule, 'many-keys')
  t.same(req.estimate, { keys: 5, source: 'exists' })
  t.equal(req.facts.keysTouched, 5)
  await gw.core.approvals.deny(req.id, ops, 'no')
  await t.rejects(held, /^ERR approval \S+ denied by olga: no/)
  t.equal(await direct.exists('k1', 'k2', 'k3', 'k4', 'k5'), 5, 'nothing was deleted')

  // another database: EXISTS on a fresh connection would count database 0's keys
  const other = new Redis({ port: gw.port, password: await gw.token(), db: 1, lazyConnect: true, enableReadyCheck: false, maxRetriesPerRequest: 0 })
  t.teardown(() => other.disconnect())
  await other.connect()
  const unknown = other.del('x', 'y')
  const req2 = await pending(gw, seen)
  t.equal(req2.estimate, null, 'no estimate: the stricter rule holds it')
  t.match(gw.core.approvals.get(req2.id), { rule: 'many-keys' })
  await gw.core.approvals.approve(req2.id, ops)
  t.equal(await unknown, 0)
})

// The bootstrap's RediSearch (Debian redis-redisearch) is 1.x: documents are added with FT.ADD, an
// index is dropped with its documents by FT.DROP (KEEPDOCS keeps them); FT.DROPINDEX came with 2.0.
// Both are estimated from FT.INFO's num_docs, which 1.x answers.
t.test('FT.DROP / FT.DROPINDEX … DD: the index\'s document count decides', async t => {
  const gw = await startGateway(t, { rules: RULES, redis: { search: true } })
  if (!gw.redis.hasSearch) {
    t.fail('RediSearch (redis-redisearch) is not loadable: /usr/lib/redis/modules/redisearch.so missing')
    return
  }
  const direct = new Redis({ port: gw.redis.port, username: 'gateway', password: 'gw-secret-pw', lazyConnect: true })
  await direct.connect()
  t.teardown(() => direct.disconnect())
  const r = new Redis({ port: gw.port, password: await gw.token(), lazyConnect: true, enableReadyCheck: false, maxRetriesPerRequest: 0 })
  t.teardown(() => r.disconnect())
  await r.connect()
  for (const idx of ['big', 'small']) await direct.call('FT.CREATE', idx, 'SCHEMA', 't', 'TEXT')
  for (let i = 0; i < 5; i++) await direct.call('FT.ADD', 'big', `big:${i}`, '1.0', 'FIELDS', 't', `doc ${i}`)
  await direct.call('FT.ADD', 'small', 'small:0', '1.0', 'FIELDS', 't', 'only one')
  const docs = async (idx: string) => {
    const info = (await direct.call('FT.INFO', idx)) as unknown[]
    return Number(info[info.indexOf('num_docs') + 1])
  }
  t.equal(await docs('big'), 5)

  await t.rejects(r.call('FT.DROP', 'big'), /^NOPERM blocked by rule big-drop: dropping an index with its documents/)
  await t.rejects(r.call('FT.DROPINDEX', 'big', 'DD'), /^NOPERM blocked by rule big-drop/)
  t.equal(await docs('big'), 5, 'the index and its documents are still there')
  t.equal(await direct.exists('big:0', 'big:1', 'big:2', 'big:3', 'big:4'), 5)
  // one document: allowed, and forwarded (this RediSearch has no FT.DROPINDEX: its own error says it ran upstream)
  await t.rejects(r.call('FT.DROPINDEX', 'small', 'DD'), /unknown command/i)
  t.equal(await r.call('FT.DROP', 'small'), 'OK', 'one document: allowed')
  t.equal(await direct.exists('small:0'), 0, 'dropped with its document')
  // KEEPDOCS: the documents stay, nothing to count, decided as before
  t.equal(await r.call('FT.DROP', 'big', 'KEEPDOCS'), 'OK')
  t.equal(await direct.exists('big:0'), 1)
})
