// Under column rules a text classified by skeleton borrows the lineage (parse tree) of the first
// text of its skeleton until an analysis reads one of its constants (classify/lineage.ts). Whatever
// order texts are classified and analysed in, and across catalog changes, the lineage a text gets
// must be the one its own parse gives: a JSON key, a subscript or a record field named by a
// constant decides what gets masked, and another text's constant would mask the wrong part.
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { isDeepStrictEqual } from 'node:util'
import { compileMaskPlan } from '@portcullis/core'
import type { Operation } from '@portcullis/core/types'
import { classifierCacheStats, classifySql, clearClassifierCache, loadClassifier } from '../src/classify/index.ts'
import { rowLineage, type RowLineage } from '../src/column-lineage.ts'
import type { Catalog, NamedRelation } from '../src/catalog.ts'
import { mulberry32 } from '@portcullis/fixtures/random'

await loadClassifier()

const TABLES: Record<string, string[]> = {
  customers: ['id', 'email', 'name', 'note', 'doc'],
  orders: ['id', 'customer_id', 'total'],
}

/** the part of Catalog column lineage uses, over fixed tables; bump() is a DDL elsewhere */
function fakeCatalog(): Catalog & { bump(): void } {
  const byName = new Map<string, NamedRelation | null>()
  const cat = {
    generation: 0,
    relationByName: (name: string) => byName.get(name),
    async loadRelations(names: string[]) {
      for (const n of names) {
        const table = n.replace(/^public\./, '')
        const cols = TABLES[table]
        byName.set(n, cols ? { columns: cols.map(column => ({ schema: 'public', table, column })), others: [], descendants: [] } : null)
      }
      cat.generation++
    },
    async reloadRelations(names: string[]) {
      for (const n of names) byName.delete(n)
      cat.generation++
      await cat.loadRelations(names)
    },
    bump() {
      byName.clear()
      cat.generation++
    },
  }
  return cat as unknown as Catalog & { bump(): void }
}

const plan = compileMaskPlan([{ id: 'c', columns: ['customers.email', 'customers.doc'], method: 'redact' }], { target: 't', subject: 's', groups: [] }, { hashKey: randomBytes(32) })

async function lineageOf(op: Operation, catalog: Catalog): Promise<RowLineage | undefined> {
  for (let i = 0; i < 8; i++) {
    const l = rowLineage(op, plan, catalog)
    if (!(l instanceof Promise)) return l
    await l
  }
  throw new Error('catalog never settled')
}

/** the lineage of this text's own parse: a classifier with empty caches, a catalog of its own */
async function ownLineage(sql: string): Promise<RowLineage | undefined> {
  clearClassifierCache()
  return lineageOf(classifySql(sql, undefined, { exact: true }), fakeCatalog())
}

// templates: %s a string constant, %d an integer; pairs of instances share a skeleton
const TEMPLATES = [
  'select json_build_object(%s, email, %s, name) from customers where id = %d',
  'select jsonb_build_object(%s, email)->%s from customers',
  'select (array[email, name])[%d] from customers',
  'select (array[name, email, note])[%d:%d] from customers',
  'select row(email, %d, name) from customers where id > %d',
  'select json_build_array(email, %s)->%d from customers',
  'select doc->%s, doc->>%s, doc #> %s from customers',
  'select jsonb_set(doc, %s, to_jsonb(email)) from customers',
  'select case when %d = %d then email else name end from customers',
  'select email from customers where id = %d and name = %s limit 5',
  'select split_part(email, %s, %d), left(name, %d) from customers',
  'select json_object_agg(%s, email) from customers',
  'select to_json(c)->%s from customers c',
  'select row_to_json(c)->>%s from (select id, email from customers where id < %d) c',
  'select json_build_object(%s, (select email from customers limit 1), %s, %d)',
  'select o.total, c.email from orders o join customers c on c.id = o.customer_id where o.total > %d',
  'update customers set note = %s where id = %d returning json_build_object(%s, email)',
  'insert into orders (customer_id, total) values (%d, %d) returning id',
  'select email || %s, %s || name from customers',
  'select (select json_build_object(%s, email) from customers limit %d)->%s',
]
const KEYS = ["'email'", "'name'", "'a'", "'id'", "'{email}'", "'{a}'", "'note'", "'x'", "'@'", "''", "E'email'", "$$email$$"]

const random = mulberry32(20261202)
function instance(template: string): string {
  return template.replace(/%[sd]/g, k => (k === '%s' ? KEYS[Math.floor(random() * KEYS.length)]! : String(Math.floor(random() * 4))))
}

// the orders a proxy can meet: lender analysed first or last, a borrower analysed before the
// lender, a catalog change between classification and analysis
// and a session that classified its texts before a reload gave it column rules (exact: false)
const ORDERS = ['lender-first', 'borrower-first', 'classify-both-then-analyse', 'catalog-change-between', 'classified-before-column-rules'] as const

t.test('a text classified by skeleton under column rules gets the lineage of its own parse', async t => {
  let compared = 0
  let mismatches = 0
  const hitsBefore = classifierCacheStats().skeletonHits
  for (const template of TEMPLATES) {
    for (let round = 0; round < 12; round++) {
      const texts = [instance(template), instance(template), instance(template)]
      const want = []
      for (const sql of texts) want.push(await ownLineage(sql))
      for (const order of ORDERS) {
        clearClassifierCache()
        const catalog = fakeCatalog()
        const got: (RowLineage | undefined)[] = []
        if (order === 'lender-first') {
          for (const sql of texts) got.push(await lineageOf(classifySql(sql, undefined, { exact: true }), catalog))
        } else if (order === 'borrower-first') {
          const ops = texts.map(sql => classifySql(sql, undefined, { exact: true }))
          for (const i of [2, 1, 0]) got[i] = await lineageOf(ops[i]!, catalog)
        } else if (order === 'classify-both-then-analyse') {
          const ops = texts.map(sql => classifySql(sql, undefined, { exact: true }))
          for (const op of ops) got.push(await lineageOf(op, catalog))
        } else if (order === 'classified-before-column-rules') {
          const ops = texts.map(sql => classifySql(sql))
          for (const i of [1, 0, 2]) got[i] = await lineageOf(ops[i]!, catalog)
        } else {
          const ops = texts.map(sql => classifySql(sql, undefined, { exact: true }))
          got.push(await lineageOf(ops[0]!, catalog))
          catalog.bump()
          got.push(await lineageOf(ops[1]!, catalog))
          catalog.bump()
          got.push(await lineageOf(ops[2]!, catalog))
        }
        for (let i = 0; i < texts.length; i++) {
          compared++
          if (!isDeepStrictEqual(got[i], want[i])) {
            mismatches++
            if (mismatches <= 5) t.fail(`${order}: ${texts[i]}`, { found: got[i], wanted: want[i] })
          }
        }
      }
    }
  }
  t.equal(mismatches, 0, `${compared} lineages compared with the text's own parse`)
  // and the skeleton path was taken (else this compared a parse with a parse)
  t.ok(classifierCacheStats().skeletonHits - hitsBefore > TEMPLATES.length, 'texts were classified by skeleton')
})

t.test('a shape whose lineage reads no constant shares one analysis between its texts', async t => {
  clearClassifierCache()
  const catalog = fakeCatalog()
  const a = classifySql('select email, name from customers where id = 1', undefined, { exact: true })
  const b = classifySql('select email, name from customers where id = 2', undefined, { exact: true })
  t.not(a, b, 'each text has an Operation of its own')
  const la = await lineageOf(a, catalog)
  const lb = await lineageOf(b, catalog)
  t.ok(la && la === lb, 'the second text reuses the first one\'s lineage (no parse, no analysis)')
  t.same(la?.maskedRead.slice().sort(), ['public.customers.doc', 'public.customers.email'])
})
