// Vector-set and KNN commands as real client libraries put them on the wire (their own command
// builders and encoders, offline: no Redis 8 / Redis Stack can run here), through our framer and
// classifier, split at every byte.
import t from 'tap'
import { createRequire } from 'node:module'
import { Command } from 'ioredis'
import { RequestFramer } from '../src/request-framer.ts'
import { classifyToOperation } from '../src/classify.ts'

const require = createRequire(import.meta.url)
type Parser = { redisArgs: (string | Buffer)[] }
const { BasicCommandParser } = require('@redis/client/dist/lib/client/parser.js') as { BasicCommandParser: new () => Parser }
const encode = (require('@redis/client/dist/lib/RESP/encoder.js') as { default: (a: (string | Buffer)[]) => (string | Buffer)[] }).default
const nodeRedis = (cmd: string, ...args: unknown[]): Buffer => {
  const mod = require(`@redis/client/dist/lib/commands/${cmd}.js`) as { default: { parseCommand(p: Parser, ...a: unknown[]): void } }
  const p = new BasicCommandParser()
  mod.default.parseCommand(p, ...args)
  return Buffer.concat(encode(p.redisArgs).map(x => Buffer.from(x)))
}
const redisSearch = (cmd: string, ...args: unknown[]): Buffer => {
  const mod = require(`@redis/search/dist/lib/commands/${cmd}.js`) as { default: { parseCommand(p: Parser, ...a: unknown[]): void } }
  const p = new BasicCommandParser()
  mod.default.parseCommand(p, ...args)
  return Buffer.concat(encode(p.redisArgs).map(x => Buffer.from(x)))
}
const ioredis = (name: string, ...args: (string | Buffer | number)[]): Buffer => {
  const w = new Command(name, args).toWritable({} as object)
  return Buffer.isBuffer(w) ? w : Buffer.from(w)
}

const blob = Buffer.from(new Float32Array([0.25, -1.5, 3, 1e-3]).buffer)

function frameEverySplit(t: { fail(m: string): unknown }, bytes: Buffer): Buffer[] {
  let first: Buffer[] | undefined
  for (let i = 1; i < bytes.length; i++) {
    const f = new RequestFramer()
    const reqs = [...f.push(bytes.subarray(0, i)), ...f.push(bytes.subarray(i))]
    if (reqs.length !== 1) {
      t.fail(`split at ${i} gave ${reqs.length} requests`)
      return []
    }
    first ??= reqs[0]!.args
    if (!reqs[0]!.args.every((a, j) => a.equals(first![j]!))) t.fail(`split at ${i} changed the arguments`)
  }
  return first!
}

t.test('node-redis VADD / VSIM / VEMB / VREM', async t => {
  const vadd = frameEverySplit(t, nodeRedis('VADD', 'vs', [0.1, 0.2, 0.3], 'doc:1', { SETATTR: { lang: 'en' } }))
  t.match(classifyToOperation(vadd), { class: 'write', resources: ['vs'], statement: 'VADD vs ? ? ? ? ? ? ? ?' })
  const vsim = frameEverySplit(t, nodeRedis('VSIM', 'vs', [0.1, 0.2, 0.3], { COUNT: 25, EF: 100 }))
  t.match(classifyToOperation(vsim), { class: 'read', facts: { topK: 25, vectorSearch: true } })
  t.same(classifyToOperation(frameEverySplit(t, nodeRedis('VSIM', 'vs', 'doc:1'))).statements[0]!.vector, { search: true, topK: 10 })
  t.match(classifyToOperation(frameEverySplit(t, nodeRedis('VEMB', 'vs', 'doc:1'))), { class: 'read', resources: ['vs'] })
  t.match(classifyToOperation(frameEverySplit(t, nodeRedis('VREM', 'vs', 'doc:1'))), { class: 'delete', resources: ['vs'] })
})

t.test('ioredis VADD with a FP32 blob and VSIM by blob keep the blob byte for byte', async t => {
  const vadd = frameEverySplit(t, ioredis('VADD', 'vs', 'FP32', blob, 'doc:2'))
  t.same(vadd[3], blob)
  t.match(classifyToOperation(vadd), { class: 'write', resources: ['vs'] })
  const vsim = frameEverySplit(t, ioredis('VSIM', 'vs', 'FP32', blob, 'WITHSCORES', 'COUNT', 3))
  t.same(vsim[3], blob)
  t.match(classifyToOperation(vsim), { class: 'read', facts: { topK: 3 } })
})

t.test('@redis/search FT.SEARCH with a KNN query and a FLOAT32 blob parameter', async t => {
  const bytes = redisSearch('SEARCH', 'idx:docs', '*=>[KNN 7 @embedding $BLOB AS dist]', {
    PARAMS: { BLOB: blob }, RETURN: ['title', 'dist'], SORTBY: 'dist', DIALECT: 2,
  })
  const args = frameEverySplit(t, bytes)
  t.ok(args.some(a => a.equals(blob)), 'the blob arrives untouched')
  const op = classifyToOperation(args)
  t.match(op, { class: 'read', resources: ['idx:docs'], facts: { topK: 7, vectorSearch: true } })
  t.notMatch(op.statement, /\x00/, 'the blob is not in the statement')
  const create = frameEverySplit(t, redisSearch('CREATE', 'idx:docs', {
    embedding: { type: 'VECTOR', ALGORITHM: 'HNSW', TYPE: 'FLOAT32', DIM: 4, DISTANCE_METRIC: 'COSINE' }, title: 'TEXT',
  }, { ON: 'HASH', PREFIX: 'doc:' }))
  t.match(classifyToOperation(create), { class: 'schema-change', resources: ['idx:docs'] })
  t.match(classifyToOperation(frameEverySplit(t, redisSearch('DROPINDEX', 'idx:docs', { DD: true }))), { class: 'bulk-delete' })
  const agg = frameEverySplit(t, redisSearch('AGGREGATE', 'idx:docs', '*=>[KNN $K @embedding $BLOB]', { PARAMS: { K: '40', BLOB: blob }, DIALECT: 2 }))
  t.match(classifyToOperation(agg), { class: 'read', facts: { topK: 40 } })
})
