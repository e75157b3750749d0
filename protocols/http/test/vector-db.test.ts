import t from 'tap'
import { QdrantClient } from '@qdrant/js-client-rest'
import { startHttpUpstream, embed } from '@portcullis/fixtures/http-upstream'
import { startGateway, UPSTREAM_KEY, type Policy } from './harness.ts'
import { stubMasks } from './stub-masks.ts'

// agents may read and write; bulk deletes and schema changes are blocked, big exports too
const policy: Policy = op => {
  if (op.class === 'bulk-delete' || op.class === 'schema-change') return { action: 'block', rule: 'no-bulk', reason: `${op.class} is not allowed` }
  if (op.facts.embeddingExport === true) return { action: 'block', rule: 'no-export', reason: 'embedding export' }
  if (typeof op.facts.topK === 'number' && op.facts.topK > 50) return { action: 'block', rule: 'top-k', reason: 'top-k too large' }
  return { action: 'allow', rule: 'agents' }
}

async function setup(t: { teardown(fn: () => unknown): void }, profile: string) {
  const upstream = await startHttpUpstream()
  const gw = await startGateway({ upstreamUrl: upstream.url, options: { profile }, policy, auth: { header: 'api-key', value: '{secret}' }, masks: () => stubMasks() })
  t.teardown(async () => {
    await gw.stop()
    await upstream.stop()
  })
  return { upstream, gw }
}

t.test('the Qdrant client searches and upserts through the gateway; schema changes and bulk deletes are blocked', async t => {
  const { upstream, gw } = await setup(t, 'qdrant')
  // the collection exists upstream already: creating it through the gateway is a schema change
  await fetch(`${upstream.url}/collections/docs`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ vectors: { size: 8 } }) })
  upstream.requests.length = 0
  const q = new QdrantClient({ url: gw.url, headers: { authorization: 'Bearer dev-token-alice' }, checkCompatibility: false })
  await q.upsert('docs', {
    wait: true,
    points: [
      { id: 1, vector: embed('invoice for alice'), payload: { text: 'invoice', contact: 'alice@example.com' } },
      { id: 2, vector: embed('meeting notes'), payload: { text: 'notes', contact: 'bob@example.com' } },
    ],
  })
  const { points: hits } = await q.query('docs', { query: embed('invoice'), limit: 1, with_payload: true })
  t.equal(hits.length, 1)
  t.equal(hits[0].payload?.text, 'invoice')
  t.equal(hits[0].payload?.contact, '[REDACTED]', 'payload PII is masked on the way back')
  t.equal(upstream.requests[0].headers['api-key'], UPSTREAM_KEY, 'the gateway injects the Qdrant api-key')
  t.notOk(JSON.stringify(upstream.requests).includes('dev-token-alice'))

  const err = await q.createCollection('other', { vectors: { size: 8, distance: 'Cosine' } }).then(
    () => undefined,
    (e: any) => e,
  )
  t.equal(err?.status, 403)
  t.equal(err?.data?.error?.code, 'policy_blocked')
  const bulk = await q.delete('docs', { filter: { must: [{ key: 'text', match: { value: 'notes' } }] } }).then(
    () => undefined,
    (e: any) => e,
  )
  t.equal(bulk?.status, 403)
  const del = await q.delete('docs', { points: [2], wait: true })
  t.equal(del.status, 'completed', 'a delete by ids is allowed')
  await gw.settled(5)
  t.match(
    gw.audits.map(a => [a.class, a.decision]),
    [['write', 'allow'], ['read', 'allow'], ['schema-change', 'block'], ['bulk-delete', 'block'], ['delete', 'allow']],
  )
})

t.test('a scroll without a small limit is an embedding export and is blocked', async t => {
  const { gw, upstream } = await setup(t, 'qdrant')
  const res = await fetch(`${gw.url}/collections/docs/points/scroll`, { method: 'POST', headers: { authorization: 'Bearer dev-token-alice', 'content-type': 'application/json' }, body: JSON.stringify({ with_vector: true }) })
  t.equal(res.status, 403)
  t.same(((await res.json()) as any).error.rule, 'no-export')
  t.equal(upstream.requests.length, 0)
})

t.test('pinecone query, upsert and delete: topK and deleteAll are seen by the policy', async t => {
  const { gw } = await setup(t, 'pinecone')
  const call = (path: string, body: unknown) =>
    fetch(`${gw.url}${path}`, { method: 'POST', headers: { authorization: 'Bearer dev-token-alice', 'content-type': 'application/json' }, body: JSON.stringify(body) })
  t.equal((await call('/vectors/upsert', { vectors: [{ id: 'a', values: embed('a'), metadata: { owner: 'carol@example.com' } }] })).status, 200)
  const q = await call('/query', { vector: embed('a'), topK: 3, includeMetadata: true })
  t.equal(q.status, 200)
  const body = (await q.json()) as any
  t.equal(body.matches[0].metadata.owner, '[REDACTED]')
  t.equal((await call('/query', { vector: embed('a'), topK: 500 })).status, 403, 'a top-k over the rule is blocked')
  t.equal((await call('/vectors/delete', { deleteAll: true })).status, 403, 'deleteAll is a bulk delete')
  t.equal((await call('/vectors/delete', { ids: ['a'] })).status, 200)
  await gw.settled(5)
  t.match(gw.audits.map(a => a.class), ['write', 'read', 'read', 'bulk-delete', 'delete'])
})
