// Blast radius of vector-database deletes, against the HTTP vector-DB fixture (a stand-in for
// Qdrant and Pinecone: fixtures/src/http-upstream.ts): a Qdrant delete by filter is counted with
// /points/count (same filter, exact), a Pinecone deleteAll with describe_index_stats; the counts are
// facts rules match, and a count that cannot be had is read the stricter way.
import t from 'tap'
import type { ApprovalRequest } from '@portcullis/core'
import { startHttpUpstream, embed } from '@portcullis/fixtures/http-upstream'
import { startCoreGateway, CORE_UPSTREAM_KEY, type CoreGateway } from './core-harness.ts'

const ops = { subject: 'olga', groups: ['ops'], issuer: 'test' }

async function pending(gw: CoreGateway, seen: Set<string>): Promise<ApprovalRequest> {
  for (;;) {
    const r = gw.core.approvals.list().find(a => a.status === 'pending' && !seen.has(a.id))
    if (r) {
      seen.add(r.id)
      return r
    }
    await new Promise(res => setTimeout(res, 20))
  }
}

t.test('Qdrant: the points a delete-by-filter hits decide', async t => {
  const upstream = await startHttpUpstream()
  t.teardown(() => upstream.stop())
  const gw = await startCoreGateway(t, {
    upstreamUrl: upstream.url,
    options: '{ profile: qdrant }',
    rules: `
  - { id: agents, when: { groups: [agents], class: [read, write, delete, bulk-delete] }, action: allow }
  - { id: many-points, when: { facts: { points: { gt: 2 } } }, action: approve, approvers: [ops], timeout: 1m }`,
  })
  const seen = new Set<string>()
  const direct = (path: string, method: string, body: unknown) => fetch(`${upstream.url}${path}`, { method, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  await direct('/collections/docs', 'PUT', { vectors: { size: 8 } })
  await direct('/collections/docs/points', 'PUT', {
    points: [1, 2, 3, 4, 5].map(id => ({ id, vector: embed(`doc ${id}`), payload: { tag: id <= 3 ? 'old' : 'new' } })),
  })
  const token = await gw.token()
  const del = (collection: string, filter: unknown) =>
    fetch(`${gw.url}/collections/${collection}/points/delete?wait=true`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ filter }) })
  const left = async () => ((await (await direct('/collections/docs/points/count', 'POST', {})).json()) as any).result.count as number

  const small = await del('docs', { must: [{ key: 'tag', match: { value: 'new' } }] })
  t.equal(small.status, 200, 'two points: allowed')
  t.equal(await left(), 3)
  const count = upstream.requests.find(r => r.path === '/collections/docs/points/count')
  t.ok(count, 'the gateway counted first')
  t.same(JSON.parse(count!.body!), { filter: { must: [{ key: 'tag', match: { value: 'new' } }] }, exact: true }, 'with the same filter, exact')
  t.equal(count!.headers.authorization, `Bearer ${CORE_UPSTREAM_KEY}`, 'on the gateway\'s own credential')

  const held = del('docs', { must: [{ key: 'tag', match: { value: 'old' } }] })
  const req = await pending(gw, seen)
  t.same(req.estimate, { points: 3, source: 'qdrant-count' })
  await gw.core.approvals.deny(req.id, ops, 'keep them')
  t.equal((await held).status, 403)
  t.equal(await left(), 3, 'nothing was deleted')

  // no count to be had (the upstream answers 404): unknown, the stricter rule holds it
  const nowhere = del('missing', { must: [{ key: 'tag', match: { value: 'old' } }] })
  const req2 = await pending(gw, seen)
  t.equal(req2.estimate, null)
  await gw.core.approvals.deny(req2.id, ops)
  t.equal((await nowhere).status, 403)
})

t.test('Pinecone: the namespace\'s vector count decides a deleteAll', async t => {
  const upstream = await startHttpUpstream()
  t.teardown(() => upstream.stop())
  const gw = await startCoreGateway(t, {
    upstreamUrl: upstream.url,
    options: '{ profile: pinecone }',
    rules: `
  - { id: agents, when: { groups: [agents], class: [read, write, delete, bulk-delete] }, action: allow }
  - { id: many-vectors, when: { facts: { vectors: { gt: 2 } } }, action: approve, approvers: [ops], timeout: 1m }`,
  })
  const seen = new Set<string>()
  const direct = (path: string, body: unknown) => fetch(`${upstream.url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) })
  await direct('/vectors/upsert', { namespace: 'a', vectors: [1, 2, 3].map(i => ({ id: `a${i}`, values: embed(`a${i}`) })) })
  await direct('/vectors/upsert', { namespace: 'b', vectors: [{ id: 'b1', values: embed('b1') }] })
  const stats = async () => ((await (await direct('/describe_index_stats', {})).json()) as any).namespaces
  const token = await gw.token()
  const deleteAll = (namespace: string) =>
    fetch(`${gw.url}/vectors/delete`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify({ deleteAll: true, namespace }) })

  t.equal((await deleteAll('b')).status, 200, 'one vector: allowed')
  t.same(await stats(), { a: { vectorCount: 3 } })
  const held = deleteAll('a')
  const req = await pending(gw, seen)
  t.same(req.estimate, { vectors: 3, source: 'pinecone-stats' })
  t.equal(req.rule, 'many-vectors')
  await gw.core.approvals.approve(req.id, ops)
  t.equal((await held).status, 200)
  t.same(await stats(), {}, 'approved, the namespace is emptied')
})
