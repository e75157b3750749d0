// Scoped retrieval over HTTP: two tenants through one gateway in front of the Qdrant- and
// Pinecone-shaped stand-in (fixtures/src/http-upstream.ts: it evaluates Qdrant filters and keeps
// Pinecone namespaces; no real Qdrant or Pinecone runs here). Asserted on what the client got and
// on what the upstream saw and holds.
import t from 'tap'
import { Agent, request } from 'undici'
import { startHttpUpstream, type HttpUpstream } from '@portcullis/fixtures/http-upstream'
import { startCoreGateway, type CoreGateway } from './core-harness.ts'

const RULES = `
  - { id: agents-all, when: { groups: [agents] }, action: allow }`

type Caller = (method: string, path: string, body?: unknown) => Promise<{ status: number; json: any; text: string }>

async function caller(t: { teardown(fn: () => unknown): void }, gw: CoreGateway, tenant: unknown, sub = 'agent-1'): Promise<Caller> {
  const token = await gw.issuer.mint({ sub, groups: ['agents'], ...(tenant === undefined ? {} : { extra: { tenant } }) })
  // one connection per token: the gateway holds a connection to the token it first saw
  const agent = new Agent({ connections: 1 })
  t.teardown(() => agent.close())
  return async (method, path, body) => {
    const res = await request(gw.url + path, {
      method: method as 'POST',
      dispatcher: agent,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    })
    const text = await res.body.text()
    let json: any
    try {
      json = JSON.parse(text)
    } catch {}
    return { status: res.statusCode, json, text }
  }
}

async function direct(up: HttpUpstream, method: string, path: string, body?: unknown): Promise<any> {
  const res = await request(up.url + path, { method: method as 'POST', headers: { 'content-type': 'application/json' }, ...(body === undefined ? {} : { body: JSON.stringify(body) }) })
  return res.body.json()
}

const ids = (r: any): unknown[] => ((r?.result?.points ?? r?.result ?? []) as any[]).map(p => p.id).sort()

t.test('Qdrant: the tenant filter is AND-ed into every request; ids of the other tenant are refused', async t => {
  const up = await startHttpUpstream()
  t.teardown(() => up.stop())
  const gw = await startCoreGateway(t, { upstreamUrl: up.url, rules: RULES, options: '{ profile: qdrant }', scope: `{ filter: { key: tenant_id, value: '\${claims.tenant}' } }` })
  await direct(up, 'PUT', '/collections/docs', { vectors: { size: 2, distance: 'Cosine' } })
  await direct(up, 'PUT', '/collections/docs/points', {
    points: [
      { id: 1, vector: [1, 0], payload: { tenant_id: 'acme', text: 'acme one' } },
      { id: 2, vector: [0.9, 0.1], payload: { tenant_id: 'acme', text: 'acme two' } },
      { id: 3, vector: [1, 0.01], payload: { tenant_id: 'globex', text: 'globex secret' } },
      { id: 4, vector: [0, 1], payload: { tenant_id: 'globex', text: 'globex other' } },
    ],
  })
  const acme = await caller(t, gw, 'acme')

  t.test('search, query, scroll, count see only the tenant', async t => {
    const s = await acme('POST', '/collections/docs/points/search', { vector: [1, 0.01], limit: 10 })
    t.equal(s.status, 200)
    t.same(ids(s.json), [1, 2])
    t.notMatch(s.text, /globex/, 'not one byte of the other tenant')
    t.same(ids((await acme('POST', '/collections/docs/points/query', { query: [1, 0.01], limit: 10 })).json), [1, 2])
    t.same(ids((await acme('POST', '/collections/docs/points/scroll', { limit: 100 })).json), [1, 2])
    t.same((await acme('POST', '/collections/docs/points/count', {})).json.result, { count: 2 })
    const seen = up.requests.filter(r => r.path === '/collections/docs/points/search').at(-1)
    t.same(JSON.parse(seen!.body!).filter, { must: [{ key: 'tenant_id', match: { value: 'acme' } }] }, 'the upstream got the scope filter')
  })

  t.test('a filter with should / must_not / match any cannot widen the scope', async t => {
    for (const filter of [
      { should: [{ key: 'tenant_id', match: { value: 'globex' } }] },
      { must_not: [{ key: 'tenant_id', match: { value: 'acme' } }] },
      { must: [{ key: 'tenant_id', match: { any: ['acme', 'globex'] } }] },
      { should: [{ key: 'tenant_id', match: { value: 'acme' } }, { has_id: [3, 4] }] },
    ]) {
      const r = await acme('POST', '/collections/docs/points/search', { vector: [1, 0.01], limit: 10, filter })
      t.notOk(ids(r.json).some(id => id === 3 || id === 4), JSON.stringify(filter))
      t.notMatch(r.text, /globex/)
      const seen = up.requests.filter(r => r.path === '/collections/docs/points/search').at(-1)
      t.same(JSON.parse(seen!.body!).filter, { must: [{ key: 'tenant_id', match: { value: 'acme' } }, filter] }, 'the client filter whole, inside the AND')
    }
  })

  t.test('points by id: another tenant’s id is refused, its own passes', async t => {
    const before = up.requests.length
    const r = await acme('POST', '/collections/docs/points', { ids: [1, 3] })
    t.equal(r.status, 403)
    t.match(r.json, { error: { code: 'scope_refused', message: /point 3 is outside/ } })
    t.notOk(up.requests.slice(before).some(x => x.path === '/collections/docs/points'), 'the retrieve never reached the upstream')
    t.same(ids((await acme('POST', '/collections/docs/points', { ids: [1, 2] })).json), [1, 2])
    t.equal((await acme('GET', '/collections/docs/points/3')).status, 403)
    t.equal((await acme('GET', '/collections/docs/points/1')).status, 200)
    t.equal((await acme('POST', '/collections/docs/points/recommend', { positive: [3], limit: 5 })).status, 403, 'an example id of the other tenant')
    t.equal((await acme('POST', '/collections/docs/points/search/groups', { vector: [1, 0], group_by: 'text', with_lookup: { collection: 'other' } })).status, 403, 'with_lookup')
    t.equal((await acme('POST', '/collections/docs/points/query', { query: [1, 0], prefetch: [{ query: [1, 0], lookup_from: { collection: 'other' } }] })).status, 403, 'lookup_from in a prefetch')
  })

  t.test('delete by id or by filter stays inside the tenant', async t => {
    t.equal((await acme('POST', '/collections/docs/points/delete', { points: [3] })).status, 403)
    const byFilter = await acme('POST', '/collections/docs/points/delete', { filter: { should: [{ key: 'tenant_id', match: { value: 'globex' } }] } })
    t.equal(byFilter.status, 200)
    t.same(ids(await direct(up, 'POST', '/collections/docs/points/scroll', { limit: 100 })), [1, 2, 3, 4], 'the widening delete matched nothing')
    t.equal((await acme('POST', '/collections/docs/points/delete', { filter: { must: [{ has_id: [2, 4] }] } })).status, 200)
    t.same(ids(await direct(up, 'POST', '/collections/docs/points/scroll', { limit: 100 })), [1, 3, 4], 'its own point 2 went, globex 4 stayed')
  })

  t.test('upserts carry the tenant: set when absent, refused when another, refused over another tenant’s id', async t => {
    t.equal((await acme('PUT', '/collections/docs/points', { points: [{ id: 10, vector: [1, 1], payload: { text: 'new' } }] })).status, 200)
    const stored = await direct(up, 'POST', '/collections/docs/points', { ids: [10] })
    t.same(stored.result[0].payload, { text: 'new', tenant_id: 'acme' })
    const planted = await acme('PUT', '/collections/docs/points', { points: [{ id: 11, vector: [1, 1], payload: { tenant_id: 'globex', text: 'planted' } }] })
    t.match(planted, { status: 403, json: { error: { message: /tenant_id="globex"/ } } })
    const overwrite = await acme('PUT', '/collections/docs/points', { points: [{ id: 3, vector: [1, 1], payload: { text: 'defaced' } }] })
    t.match(overwrite, { status: 403, json: { error: { message: /point 3 is outside/ } } })
    const three = await direct(up, 'POST', '/collections/docs/points', { ids: [3, 11] })
    t.same(three.result.map((p: any) => [p.id, p.payload.text]), [[3, 'globex secret']], 'globex 3 untouched, nothing planted')
    t.equal((await acme('POST', '/collections/docs/points/payload/clear', { points: [1] })).status, 403, 'clearing the payload would drop the tenant')
  })

  t.test('a tenant with no claim cannot call; a collection delete and unknown routes are refused', async t => {
    const none = await caller(t, gw, undefined, 'agent-2')
    t.match(await none('POST', '/collections/docs/points/scroll', {}), { status: 401, json: { error: { message: /claim claims\.tenant is missing/ } } })
    t.equal((await acme('DELETE', '/collections/docs')).status, 403)
    t.equal((await acme('POST', '/collections/docs/points/batch', { operations: [] })).status, 403)
  })

  t.test('the recording shows the scope applied', async t => {
    const lines = gw.audit().filter(l => l.scope !== undefined)
    t.ok(lines.some(l => l.scope === 'tenant_id="acme"'), 'audit lines carry the scope')
  })
})

t.test('Pinecone: the namespace comes from the token; another is refused; deleteAll stays inside', async t => {
  const up = await startHttpUpstream()
  t.teardown(() => up.stop())
  const gw = await startCoreGateway(t, { upstreamUrl: up.url, rules: RULES, options: '{ profile: pinecone }', scope: `{ namespace: 'tenant-\${claims.tenant}' }` })
  await direct(up, 'POST', '/vectors/upsert', { namespace: 'tenant-globex', vectors: [{ id: 'g1', values: [1, 0], metadata: { text: 'globex secret' } }] })
  const acme = await caller(t, gw, 'acme')
  t.equal((await acme('POST', '/vectors/upsert', { vectors: [{ id: 'a1', values: [1, 0], metadata: { text: 'acme one' } }] })).status, 200)
  const q = await acme('POST', '/query', { vector: [1, 0], topK: 10, includeMetadata: true })
  t.same(q.json.matches.map((m: any) => m.id), ['a1'])
  t.equal(q.json.namespace, 'tenant-acme')
  t.notMatch(q.text, /globex/)
  t.match(await acme('POST', '/query', { vector: [1, 0], topK: 10, namespace: 'tenant-globex' }), { status: 403, json: { error: { code: 'scope_refused' } } })
  t.match(await acme('POST', '/query', { vector: [1, 0], topK: 10, namespace: '' }), { status: 403 }, 'the default namespace is another namespace')
  t.equal((await acme('GET', '/vectors/fetch?ids=g1&namespace=tenant-globex')).status, 403)
  const fetched = await acme('GET', '/vectors/fetch?ids=g1&ids=a1')
  t.same(Object.keys(fetched.json.vectors), ['a1'], 'fetch runs in the tenant namespace')
  t.equal((await acme('POST', '/vectors/delete', { deleteAll: true })).status, 200)
  const left = await direct(up, 'POST', '/query', { namespace: 'tenant-globex', vector: [1, 0], topK: 10 })
  t.same(left.matches.map((m: any) => m.id), ['g1'], 'deleteAll emptied the tenant namespace only')
  t.equal((await acme('POST', '/describe_index_stats', {})).status, 403)
  const seen = up.requests.filter(r => r.path === '/vectors/delete').at(-1)
  t.equal(JSON.parse(seen!.body!).namespace, 'tenant-acme')
})

t.test('OpenAI-compatible: user is set from the identity', async t => {
  const up = await startHttpUpstream()
  t.teardown(() => up.stop())
  const gw = await startCoreGateway(t, { upstreamUrl: up.url, rules: RULES, scope: `{ user: '\${sub}' }` })
  const alice = await caller(t, gw, 'acme', 'alice')
  const r = await alice('POST', '/v1/chat/completions', { model: 'gpt-4o-mini', user: 'someone-else', messages: [{ role: 'user', content: 'hi' }] })
  t.equal(r.status, 200)
  const seen = up.requests.filter(x => x.path === '/v1/chat/completions').at(-1)
  t.equal(JSON.parse(seen!.body!).user, 'alice')
  // stored objects the scope does not track (files, vector stores, batches: scope-openai.test.ts)
  for (const [method, path] of [['GET', '/v1/files/file-1/content'], ['POST', '/v1/vector_stores/vs_1/search'], ['GET', '/v1/batches/b1'], ['GET', '/v1/chat/completions'], ['GET', '/v1/responses/resp_1'], ['GET', '/v1/fine_tuning/jobs']]) {
    const before = up.requests.length
    const r = await alice(method!, path!, method === 'POST' ? { query: 'x' } : undefined)
    t.match(r, { status: 403, json: { error: { code: 'scope_refused' } } }, `${method} ${path}`)
    t.equal(up.requests.length, before, 'never reached the upstream')
  }
})
