// The request rewrites of the HTTP scope that the stand-in upstream has no route for (batches,
// prefetches, payload edits): what goes upstream, with the id check answered here.
import t from 'tap'
import type { SessionScope } from '@portcullis/core'
import { scopeHttp, type ScopeRequest } from '../src/scope.ts'

const scope: SessionScope = { filter: { key: 'tenant_id', value: 'acme' }, upsert: 'refuse', allowCode: false, summary: '' }
const cond = { key: 'tenant_id', match: { value: 'acme' } }
const none = async () => ({ status: 200, json: { result: { points: [] } } })
const req = (operation: string, path: string, body: unknown, method = 'POST'): ScopeRequest => ({ profile: 'qdrant', operation, method, path, params: { collection: 'docs' }, body })

t.test('batches and prefetches: every search gets the scope filter', async t => {
  const out = await scopeHttp(req('points.search.batch', '/collections/docs/points/search/batch', { searches: [{ vector: [1], filter: { should: [{ has_id: [3] }] } }, { vector: [2] }] }), scope, none)
  t.same((out as { body: any }).body.searches.map((s: any) => s.filter), [{ must: [cond, { should: [{ has_id: [3] }] }] }, { must: [cond] }])
  const q = await scopeHttp(req('points.query', '/collections/docs/points/query', { query: { fusion: 'rrf' }, prefetch: [{ query: [1] }, { query: [2], filter: { must_not: [cond] } }] }), scope, none)
  t.same((q as { body: any }).body.prefetch.map((p: any) => p.filter), [{ must: [cond] }, { must: [cond, { must_not: [cond] }] }])
})

t.test('upsert: refuse mode refuses a point without the tenant; an id check that cannot run refuses', async t => {
  t.match(await scopeHttp(req('points.upsert', '/collections/docs/points', { points: [{ id: 1, vector: [1] }] }, 'PUT'), scope, none), { refuse: /has no tenant_id/ })
  const down = async () => ({ status: 503, json: undefined })
  t.match(await scopeHttp(req('points.retrieve', '/collections/docs/points', { ids: [1] }), scope, down), { refuse: /could not check/ })
})

t.test('payload edits keep the scope key', async t => {
  const over = await scopeHttp(req('points.payload', '/collections/docs/points/payload', { payload: { a: 1 }, points: [1] }, 'PUT'), scope, none)
  t.same((over as { body: any }).body.payload, { a: 1, tenant_id: 'acme' }, 'an overwrite keeps the tenant')
  t.match(await scopeHttp(req('points.payload', '/collections/docs/points/payload/delete', { keys: ['tenant_id'], points: [1] }), scope, none), { refuse: /deleting tenant_id/ })
  t.match(await scopeHttp(req('points.payload', '/collections/docs/points/payload', { payload: { tenant_id: 'globex' }, filter: {} }), scope, none), { refuse: /outside/ })
  t.match(await scopeHttp(req('points.delete', '/collections/docs/points/delete', { points: [1], filter: {} }), scope, none), { refuse: /ids or by a filter/ })
})

t.test('a scope with nothing for the profile refuses every request (check-config refuses it too)', async t => {
  t.match(await scopeHttp({ ...req('points.search', '/collections/docs/points/search', {}), profile: 'generic' }, scope, none), { refuse: /enforces nothing for the generic profile/ })
  t.match(await scopeHttp({ ...req('query', '/query', {}), profile: 'pinecone' }, scope, none), { refuse: /enforces nothing for the pinecone profile/ })
})
