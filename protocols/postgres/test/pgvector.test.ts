import t from 'tap'
import pg from 'pg'
import { startPglite } from '@portcullis/fixtures/pglite'
import { startGateway, DEFAULT_RULES } from './harness.ts'

// PGlite + pgvector stands in for a Postgres with the vector extension (not installed for PG 15 here)
t.test('pgvector through the gateway (PGlite)', async t => {
  const lite = await startPglite()
  t.teardown(() => lite.stop())
  const gw = await startGateway({
    pg: { ...lite, dataDir: '', socketDir: '', stop: async () => {} },
    rules: [
      { id: 'no-export', when: { facts: { embeddingExport: { eq: true } } }, action: 'block', reason: 'embeddings may not leave in bulk' },
      { id: 'top-k-cap', when: { facts: { topK: { gt: 5 } } }, action: 'block', reason: 'top-k above 5' },
      ...DEFAULT_RULES,
    ],
    masking: [{ id: 'hide-vectors', when: { targets: ['db'] }, columns: ['documents.embedding', 'customers.email'], method: 'redact' }],
  })
  t.teardown(() => gw.stop())
  const c = new pg.Client({ connectionString: await gw.url() })
  c.on('error', () => {})
  await c.connect()
  t.teardown(() => c.end())

  t.test('a vector search with a small top-k runs; a masked vector column comes back NULL', async t => {
    const r = await c.query('select id, title, embedding from documents order by embedding <-> (select embedding from documents where id = 1) limit 3')
    t.equal(r.rows.length, 3)
    t.equal(r.rows[0].id, 1, 'nearest is itself')
    t.ok(r.rows.every(row => row.embedding === null), 'vectors are nulled')
    t.ok(r.rows.every(row => typeof row.title === 'string' && row.title.length > 0), 'other columns pass')
  })

  t.test('a search above the top-k cap is refused', async t => {
    const e = await c.query('select id from documents order by embedding <=> (select embedding from documents where id = 1) limit 50').catch(e => e)
    t.equal(e.code, '42501')
    t.match(e.message, /top-k-cap/)
  })

  t.test('a top-k bound as a parameter is checked at Bind', async t => {
    const q = 'select id from documents order by embedding <-> (select embedding from documents where id = 1) limit $1'
    const e = await c.query({ text: q, values: [50] }).catch(e => e)
    t.equal(e.code, '42501')
    t.match(e.message, /top-k-cap/)
    const ok = await c.query({ text: q, values: [2] })
    t.equal(ok.rows.length, 2)
  })

  t.test('an unbounded embedding export is refused', async t => {
    const e = await c.query('select id, embedding from documents').catch(e => e)
    t.equal(e.code, '42501')
    t.match(e.message, /no-export/)
  })

  t.test('masked text columns through the extended protocol', async t => {
    const r = await c.query({ text: 'select name, email from customers where id = $1', values: [1] })
    t.equal(r.rows[0].email, '[REDACTED]')
    t.ok(r.rows[0].name)
  })
})
