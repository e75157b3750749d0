import t from 'tap'
import type { Operation } from '@portcullis/core/types'
import { classifySql, loadClassifier, withTopK } from '../src/classify/index.ts'

await loadClassifier()

const Q = "'[0.1,0.2,0.3]'"

t.test('ORDER BY a distance operator is a vector search whose top-k is the LIMIT', async t => {
  for (const operator of ['<->', '<=>', '<#>', '<+>']) {
    const op = classifySql(`SELECT id, title FROM documents ORDER BY embedding ${operator} ${Q} LIMIT 5`)
    t.equal(op.class, 'read')
    t.same(op.resources, ['documents'])
    t.same(op.statements[0]!.vector, { search: true, operator, topK: 5 }, operator)
    t.equal(op.facts.vectorSearch, true)
    t.equal(op.facts.topK, 5)
    t.equal(op.facts.embeddingExport, undefined)
  }
})

t.test('the distance may sit in an expression, an alias, a select-list position or OPERATOR()', async t => {
  const rows: [string, string, number][] = [
    [`SELECT id FROM documents ORDER BY 1 - (embedding <=> ${Q}) DESC LIMIT 3`, '<=>', 3],
    [`SELECT id, embedding <=> $1 AS distance FROM documents ORDER BY distance LIMIT 4`, '<=>', 4],
    [`SELECT id, embedding <#> ${Q} FROM documents ORDER BY 2 LIMIT 6`, '<#>', 6],
    [`SELECT id FROM documents ORDER BY embedding OPERATOR(public.<->) ${Q} LIMIT 7`, '<->', 7],
    [`SELECT id FROM documents ORDER BY embedding <-> ${Q} FETCH FIRST 8 ROWS ONLY`, '<->', 8],
    [`SELECT id FROM documents WHERE tenant = 1 ORDER BY embedding::halfvec(3) <-> ${Q}::halfvec(3) LIMIT 9`, '<->', 9],
  ]
  for (const [sql, operator, topK] of rows) {
    const v = classifySql(sql).statements[0]!.vector
    t.same(v, { search: true, operator, topK }, sql)
  }
})

t.test('a search without a LIMIT has no top-k; an outer LIMIT bounds an inner search', async t => {
  const open = classifySql(`SELECT id FROM documents ORDER BY embedding <-> ${Q}`)
  t.equal(open.facts.vectorSearch, true)
  t.equal(open.facts.topK, undefined)
  t.equal(open.statements[0]!.vector!.topK, undefined)

  const all = classifySql(`SELECT id FROM documents ORDER BY embedding <-> ${Q} LIMIT ALL`)
  t.equal(all.facts.topK, undefined, 'LIMIT ALL is no limit')

  const outer = classifySql(`SELECT * FROM (SELECT id FROM documents ORDER BY embedding <-> ${Q}) s LIMIT 10`)
  t.equal(outer.facts.topK, 10)

  const inner = classifySql(`SELECT * FROM (SELECT id FROM documents ORDER BY embedding <-> ${Q} LIMIT 2) s LIMIT 10`)
  t.equal(inner.facts.topK, 2)
})

t.test('not a vector search: other orderings, or a distance only in WHERE', async t => {
  for (const sql of [
    'SELECT id FROM documents ORDER BY created_at DESC LIMIT 5',
    `SELECT id FROM documents WHERE embedding <-> ${Q} < 0.5`,
    'SELECT id FROM documents ORDER BY title <> $1 LIMIT 5',
  ]) {
    const op = classifySql(sql)
    t.equal(op.facts.vectorSearch, undefined, sql)
    t.equal(op.statements[0]!.vector, undefined, sql)
  }
})

t.test('LIMIT $n: no top-k yet, facts.topKParam names the parameter, withTopK binds it', async t => {
  const op = classifySql('SELECT id FROM documents ORDER BY embedding <=> $1 LIMIT $2')
  t.equal(op.facts.topK, undefined)
  t.equal(op.facts.topKParam, 2)
  t.equal(op.statements[0]!.vector!.topK, undefined)

  const bound = withTopK(op, 25)
  t.equal(bound.facts.topK, 25)
  t.equal(bound.statements[0]!.vector!.topK, 25)
  t.equal(op.facts.topK, undefined, 'the cached operation is untouched')
  t.ok(Object.isFrozen(bound))
  t.equal(withTopK(op, Number.NaN).facts.topK, undefined, 'not a number: still unbounded')
  t.equal(withTopK(op, -1).facts.topK, undefined)
})

t.test('EXECUTE of a prepared search takes its top-k from the argument', async t => {
  const body = classifySql('SELECT id FROM documents ORDER BY embedding <-> $1 LIMIT $2')
  const prepared = new Map<string, Operation>([['knn', body]])
  const op = classifySql(`EXECUTE knn(${Q}, 3)`, { prepared })
  t.equal(op.class, 'read')
  t.equal(op.facts.vectorSearch, true)
  t.equal(op.facts.topK, 3)
  t.same(op.statements[0]!.vector, { search: true, operator: '<->', topK: 3 })
  const unbound = classifySql(`EXECUTE knn(${Q}, $1)`, { prepared })
  t.equal(unbound.facts.topK, undefined)
})

t.test('selecting embedding columns without a LIMIT is an embedding export', async t => {
  const exports = [
    'SELECT id, embedding FROM documents',
    'SELECT d.embedding FROM documents d WHERE d.tenant = 1',
    'SELECT id, "Embedding" FROM documents',
    'SELECT id, text_embedding FROM chunks',
    'SELECT id, vector FROM items',
    'SELECT id, title_vec FROM items',
    'SELECT embedding::text FROM documents',
    'SELECT payload::vector FROM staging',
    'SELECT x::sparsevec FROM staging',
    'WITH v AS (SELECT id, embedding FROM documents) SELECT * FROM v',
    'SELECT * FROM (SELECT id, embedding FROM documents) s',
    'SELECT s.* FROM documents d JOIN (SELECT id, embedding FROM documents) s USING (id)',
    'SELECT id FROM documents UNION ALL SELECT embedding FROM documents',
    `SELECT id, embedding FROM documents ORDER BY embedding <-> ${Q}`,
  ]
  for (const sql of exports) {
    const op = classifySql(sql)
    t.equal(op.facts.embeddingExport, true, sql)
    t.equal(op.statements[0]!.vector?.export, true, sql)
  }
  const copy = classifySql('COPY (SELECT id, embedding FROM documents) TO STDOUT')
  t.equal(copy.facts.embeddingExport, true, 'COPY TO STDOUT of embeddings')
  t.equal(copy.facts.copy, 'to-stdout')
  const copySearch = classifySql(`COPY (SELECT id FROM documents ORDER BY embedding <-> ${Q} LIMIT 3) TO STDOUT`)
  t.same(copySearch.statements[0]!.vector, { search: true, operator: '<->', topK: 3 }, 'one search, counted once')
})

t.test('a LIMIT, a distance, an aggregate or no embedding column is not an export', async t => {
  const fine = [
    'SELECT id, embedding FROM documents LIMIT 10',
    'SELECT id, embedding FROM documents LIMIT $1',
    `SELECT id, embedding FROM documents ORDER BY embedding <-> ${Q} LIMIT 5`,
    `SELECT id, embedding <-> ${Q} AS distance FROM documents`,
    'SELECT count(embedding) FROM documents',
    'SELECT id, title FROM documents',
    'SELECT * FROM (SELECT id, embedding FROM documents LIMIT 5) s',
    'WITH v AS (SELECT id, embedding FROM documents) SELECT id FROM v',
    'SELECT embedding INTO copy_of_embeddings FROM documents',
    // documented limit of the heuristic: without the catalog, `*` straight from a table is not known to hold vectors
    'SELECT * FROM documents',
  ]
  for (const sql of fine) t.equal(classifySql(sql).facts.embeddingExport, undefined, sql)
})

t.test('multi-statement: topK is the largest, and absent when any search is unbounded', async t => {
  const two = classifySql(`SELECT id FROM a ORDER BY embedding <-> ${Q} LIMIT 5; SELECT id FROM b ORDER BY embedding <=> ${Q} LIMIT 50`)
  t.equal(two.facts.topK, 50)
  t.same(two.resources, ['a', 'b'])
  const mixed = classifySql(`SELECT id FROM a ORDER BY embedding <-> ${Q} LIMIT 5; SELECT id FROM b ORDER BY embedding <=> ${Q}`)
  t.equal(mixed.facts.vectorSearch, true)
  t.equal(mixed.facts.topK, undefined)
  const exportAndSearch = classifySql(`SELECT id FROM a ORDER BY embedding <-> ${Q} LIMIT 5; SELECT embedding FROM b`)
  t.equal(exportAndSearch.facts.embeddingExport, true)
  t.equal(exportAndSearch.facts.topK, 5)
})

t.test('the vector literal never reaches the statement text', async t => {
  const op = classifySql(`SELECT id FROM documents ORDER BY embedding <-> ${Q} LIMIT 5`)
  t.equal(op.statement, 'SELECT id FROM documents ORDER BY embedding <-> $1 LIMIT $2')
  t.notMatch(JSON.stringify(op), /0\.1,0\.2/)
})
