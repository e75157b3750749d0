import t from 'tap'
import { explainHttp } from '../src/index.ts'
import { classifyHttp, routeRules } from '../src/classify.ts'

t.test('openai chat completions are read, with model, max tokens, stream and tools as facts', async t => {
  const op = explainHttp({
    method: 'POST',
    path: '/v1/chat/completions',
    profile: 'openai',
    body: { model: 'gpt-4o', max_tokens: 300, stream: true, tools: [{ type: 'function' }], messages: [] },
  })
  t.equal(op.protocol, 'http')
  t.equal(op.class, 'read')
  t.equal(op.statement, 'POST /v1/chat/completions')
  t.same(op.resources, ['gpt-4o'])
  t.match(op.facts, { operation: 'chat.completions', model: 'gpt-4o', maxTokens: 300, stream: true, tools: 1, method: 'POST', path: '/v1/chat/completions' })
  t.match(op.fingerprint, /^[0-9a-f]{32}$/)
})

t.test('openai embeddings, models, files and vector stores take their classes', async t => {
  t.equal(explainHttp({ method: 'POST', path: '/v1/embeddings', profile: 'openai', body: { model: 'e' } }).class, 'read')
  t.equal(explainHttp({ method: 'GET', path: '/v1/models', profile: 'openai' }).class, 'read')
  t.equal(explainHttp({ method: 'POST', path: '/v1/files', profile: 'openai' }).class, 'write')
  t.equal(explainHttp({ method: 'DELETE', path: '/v1/files/file-1', profile: 'openai' }).class, 'delete')
  t.equal(explainHttp({ method: 'POST', path: '/v1/fine_tuning/jobs', profile: 'openai', body: {} }).class, 'admin')
  t.equal(explainHttp({ method: 'DELETE', path: '/v1/vector_stores/vs_1', profile: 'openai' }).class, 'schema-change')
  t.equal(explainHttp({ method: 'POST', path: '/v1/responses', profile: 'openai', body: { model: 'o', max_output_tokens: 9 } }).facts.maxTokens, 9)
})

t.test('qdrant: collections are schema, upsert writes, delete by ids or filter, search top-k, scroll export', async t => {
  const q = (method: string, path: string, body?: unknown) => explainHttp({ method, path, body, profile: 'qdrant' })
  t.equal(q('PUT', '/collections/docs', { vectors: { size: 4 } }).class, 'schema-change')
  t.equal(q('DELETE', '/collections/docs').class, 'schema-change')
  const up = q('PUT', '/collections/docs/points?wait=true', { points: [{ id: 1 }] })
  t.equal(up.class, 'write')
  t.same(up.resources, ['docs'])
  t.equal(q('POST', '/collections/docs/points/delete', { points: [1, 2] }).class, 'delete')
  t.equal(q('POST', '/collections/docs/points/delete', { filter: { must: [] } }).class, 'bulk-delete')
  t.equal(q('POST', '/collections/docs/points/delete', { points: [1], filter: { must: [] } }).class, 'bulk-delete', 'ids plus a filter is read strictly')
  const s = q('POST', '/collections/docs/points/search', { vector: [1], limit: 5 })
  t.equal(s.class, 'read')
  t.match(s.facts, { vectorSearch: true, topK: 5 })
  t.same(s.statements[0].vector, { search: true, topK: 5 })
  t.equal(q('POST', '/collections/docs/points/search/batch', { searches: [{ limit: 3 }, { limit: 40 }] }).facts.topK, 40)
  t.equal(q('POST', '/collections/docs/points/scroll', {}).facts.embeddingExport, true)
  t.equal(q('POST', '/collections/docs/points/scroll', { limit: 5000 }).statements[0].vector?.export, true)
  t.equal(q('POST', '/collections/docs/points/scroll', { limit: 10 }).facts.embeddingExport, false)
  t.equal(q('POST', '/collections/docs/snapshots').class, 'admin')
})

t.test('pinecone: upsert writes, delete by ids / filter / deleteAll, query top-k, indexes are schema', async t => {
  const p = (method: string, path: string, body?: unknown) => explainHttp({ method, path, body, profile: 'pinecone' })
  t.equal(p('POST', '/vectors/upsert', { vectors: [], namespace: 'ns1' }).class, 'write')
  t.same(p('POST', '/vectors/upsert', { vectors: [], namespace: 'ns1' }).resources, ['ns1'])
  t.equal(p('POST', '/vectors/delete', { ids: ['a'] }).class, 'delete')
  t.equal(p('POST', '/vectors/delete', { filter: { genre: 'x' } }).class, 'bulk-delete')
  t.equal(p('POST', '/vectors/delete', { deleteAll: true }).class, 'bulk-delete')
  t.match(p('POST', '/query', { vector: [1], topK: 7 }).facts, { vectorSearch: true, topK: 7 })
  t.equal(p('POST', '/indexes', { name: 'i' }).class, 'schema-change')
  t.equal(p('DELETE', '/indexes/docs').class, 'schema-change')
  t.same(p('DELETE', '/indexes/docs').resources, ['docs'])
})

t.test('generic: GET read, POST write, DELETE delete, unless a route rule says more', async t => {
  t.equal(explainHttp({ method: 'GET', path: '/anything' }).class, 'read')
  t.equal(explainHttp({ method: 'PATCH', path: '/anything' }).class, 'write')
  t.equal(explainHttp({ method: 'DELETE', path: '/anything' }).class, 'delete')
  const routes = routeRules([{ method: 'POST', path: '/admin/*', operation: 'admin.call', class: 'admin' }])
  const op = classifyHttp({ method: 'POST', path: '/admin/reindex', routes })
  t.equal(op.class, 'admin')
  t.equal(op.facts.operation, 'admin.call')
})

t.test('a body that is not JSON is reported as an error for the policy to block', async t => {
  const op = explainHttp({ method: 'POST', path: '/v1/chat/completions', profile: 'openai', body: '{nope' })
  t.equal(op.error, 'request body is not valid JSON')
})

t.test('the fingerprint covers the body: the same request twice matches, a different filter does not', async t => {
  const a = classifyHttp({ method: 'POST', path: '/vectors/delete', profile: 'pinecone', body: { filter: { a: 1 } }, rawBody: Buffer.from('{"filter":{"a":1}}') })
  const b = classifyHttp({ method: 'POST', path: '/vectors/delete', profile: 'pinecone', body: { filter: { a: 1 } }, rawBody: Buffer.from('{"filter":{"a":1}}') })
  const c = classifyHttp({ method: 'POST', path: '/vectors/delete', profile: 'pinecone', body: { filter: { a: 2 } }, rawBody: Buffer.from('{"filter":{"a":2}}') })
  t.equal(a.fingerprint, b.fingerprint)
  t.not(a.fingerprint, c.fingerprint)
})

t.test('paths are classified as the upstream decodes them; ambiguous paths are refused', async t => {
  const op = explainHttp({ method: 'POST', path: '/collections/docs/points/%64elete?wait=true', profile: 'qdrant', body: { filter: {} } })
  t.equal(op.class, 'bulk-delete', 'a percent-encoded letter does not hide a delete')
  t.equal(op.statement, 'POST /collections/docs/points/delete')
  t.same(explainHttp({ method: 'GET', path: '/collections/my%20docs', profile: 'qdrant' }).resources, ['my docs'])
  for (const path of ['/v1/models/../files/x', '/v1/./models', '//collections/docs', '/collections/a%2Fb', '/v1/%zz', 'http://evil/v1/models'])
    t.ok(explainHttp({ method: 'DELETE', path, profile: 'openai' }).error, `${path} is refused`)
  t.notOk(explainHttp({ method: 'GET', path: '/v1/models/', profile: 'openai' }).error, 'a trailing slash is fine')
})
