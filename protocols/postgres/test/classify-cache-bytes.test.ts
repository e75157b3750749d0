// The classifier caches' byte budget (classify/index.ts, classify/weight.ts): filled with big distinct
// statements, the estimated heap of both caches together never goes over the budget, and what the
// caches return is what a fresh parse gives — an exact hit the very object cached, a skeleton hit
// an Operation equal to the fresh one — while the estimate's walk over instrumented trees
// (literal.ts's Proxies and getters) leaves the skeleton path working.
import t from 'tap'
import { isDeepStrictEqual } from 'node:util'
import type { Operation } from '@portcullis/core/types'
import {
  classifierCacheStats,
  classifySql,
  clearClassifierCache,
  loadClassifier,
  setClassifierCacheBytes,
} from '../src/classify/index.ts'
import { estimateBytes } from '../src/classify/weight.ts'

await loadClassifier()
// the reference: a second instance of the classifier with its cache off, so every call parses
const fresh = (await import(new URL('../src/classify/index.ts?fresh-bytes', import.meta.url).href)) as typeof import('../src/classify/index.ts')
await fresh.loadClassifier()
fresh.setClassifierCacheSize(0)

const DEFAULT_BYTES = classifierCacheStats().budgetBytes
t.teardown(() => {
  setClassifierCacheBytes(DEFAULT_BYTES)
  clearClassifierCache()
})

// ~2,500 characters, each with identifiers of its own: a distinct text and a distinct skeleton
function big(i: number): string {
  const columns = Array.from({ length: 120 }, (_, k) => `c${i}_${k} + ${k}`).join(', ')
  const where = Array.from({ length: 60 }, (_, k) => `x${i}_${k} = 'v${k}'`).join(' AND ')
  return `SELECT ${columns} FROM t${i} WHERE ${where}`
}

t.test('the default budget', async t => {
  t.equal(DEFAULT_BYTES, 32 * 1024 * 1024, '32 MiB for both caches together')
})

t.test('big distinct statements: the estimate stays under the budget, hits are the cached answers', async t => {
  const BUDGET = 4 * 1024 * 1024
  clearClassifierCache()
  setClassifierCacheBytes(BUDGET)
  const first = new Map<string, Operation>()
  let most = 0
  let held = 0
  for (let i = 0; i < 150; i++) {
    const sql = big(i)
    const op = classifySql(sql)
    first.set(sql, op)
    const s = classifierCacheStats()
    most = Math.max(most, s.textBytes + s.skeletonBytes)
    held = Math.max(held, s.texts)
    // an entry's own estimate: ~a quarter of a MiB a text, so the budget holds only some of them
    if (i === 0) t.ok(s.textBytes > 100_000, `one ${sql.length}-character text estimates at ${s.textBytes} bytes`)
  }
  t.ok(most <= BUDGET, `estimated bytes of both caches at most ${most} (budget ${BUDGET})`)
  t.ok(held > 1 && held < 150, `the caches kept some texts (at most ${held} at once), not all 150`)
  const now = classifierCacheStats()
  t.ok(now.texts < now.budgetBytes / 100_000, `${now.texts} texts, ${now.skeletons} skeletons held now`)

  // exact hits: the newest texts are still cached, and give the very object cached
  let hits = 0
  for (let i = 149; i >= 0; i--) {
    const sql = big(i)
    const again = classifySql(sql)
    if (again === first.get(sql)) hits++
    t.ok(isDeepStrictEqual(again, fresh.classifySql(sql)), `statement ${i}: the fresh parse's Operation`)
    const s = classifierCacheStats()
    t.ok(s.textBytes + s.skeletonBytes <= BUDGET, `still under the budget after statement ${i} again`) 
  }
  t.ok(hits >= 1, `${hits} of them were exact hits (the same object)`)
})

t.test('a text heavier than the whole budget is classified, not kept', async t => {
  clearClassifierCache()
  setClassifierCacheBytes(64 * 1024)
  const sql = big(1000)
  const a = classifySql(sql)
  t.equal(classifierCacheStats().texts, 0, 'nothing held')
  t.ok(classifierCacheStats().textBytes + classifierCacheStats().skeletonBytes <= 64 * 1024)
  t.ok(isDeepStrictEqual(a, fresh.classifySql(sql)))
  t.ok(isDeepStrictEqual(classifySql(sql), a), 'classified again to the same result')
})

t.test('skeleton hits survive the estimate of an instrumented tree', async t => {
  clearClassifierCache()
  setClassifierCacheBytes(DEFAULT_BYTES)
  const hits = classifierCacheStats().skeletonHits
  const a = classifySql('SELECT id, name FROM bytes_probe WHERE id = 1 AND name = \'a\'')
  const b = classifySql('SELECT id, name FROM bytes_probe WHERE id = 2 AND name = \'b\'')
  t.equal(classifierCacheStats().skeletonHits, hits + 1, 'the second text is a skeleton hit')
  t.ok(isDeepStrictEqual(b, fresh.classifySql('SELECT id, name FROM bytes_probe WHERE id = 2 AND name = \'b\'')))
  t.equal(a.class, 'read')
  // a third text of the skeleton still hits: the estimate marked no constant as read
  classifySql('SELECT id, name FROM bytes_probe WHERE id = 3 AND name = \'c\'')
  t.equal(classifierCacheStats().skeletonHits, hits + 2)
})

t.test('estimateBytes', async t => {
  t.equal(estimateBytes('abcd'), 16 + 8, 'a string: header and 2 bytes a character')
  const shared = { a: 'x' }
  t.equal(estimateBytes([shared, shared]), estimateBytes([shared]) + 8, 'an object reached twice counts once')
  const deep: Record<string, unknown> = {}
  let at = deep
  for (let i = 0; i < 100_000; i++) at = (at.next = {}) as Record<string, unknown>
  t.ok(estimateBytes(deep) > 0, 'a deep chain does not overflow the stack')
})
