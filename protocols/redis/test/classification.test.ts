import t from 'tap'
import { classifyCommand, classifyToOperation } from '../src/classify.ts'
import { explainRedis } from '../src/explain.ts'
import { splitCommandLine } from '../src/split-args.ts'

const cls = (line: string, opts = {}) => explainRedis(line, opts)

t.test('classes follow Redis command metadata', async t => {
  const cases: [string, string][] = [
    ['GET user:1', 'read'], ['HGETALL h', 'read'], ['SCAN 0', 'read'], ['XREAD COUNT 2 STREAMS s1 s2 0 0', 'read'],
    ['SET k v', 'write'], ['LPOP q', 'write'], ['ZUNIONSTORE out 2 a b', 'write'], ['PUBLISH ch hi', 'write'],
    ['DEL a b', 'delete'], ['UNLINK a', 'delete'], ['HDEL h f', 'delete'], ['ZREM z m', 'delete'], ['GETDEL k', 'delete'],
    ['FLUSHALL', 'bulk-delete'], ['FLUSHDB ASYNC', 'bulk-delete'],
    ['CONFIG SET maxmemory 1', 'admin'], ['CONFIG GET *', 'admin'], ['DEBUG SLEEP 0', 'admin'], ['SHUTDOWN', 'admin'],
    ['MODULE LIST', 'admin'], ['ACL SETUSER x', 'admin'], ['REPLICAOF NO ONE', 'admin'], ['MIGRATE h 1 k 0 5', 'admin'],
    ['SAVE', 'admin'], ['MONITOR', 'admin'], ['SWAPDB 0 1', 'admin'], ['CLIENT KILL ID 3', 'admin'],
    ['EVAL "return 1" 0', 'admin'], ['EVALSHA abc 0', 'admin'], ['FCALL f 0', 'admin'], ['SCRIPT LOAD x', 'admin'], ['FUNCTION FLUSH', 'admin'],
    ['SORT list', 'read'], ['SORT list BY w STORE dst', 'write'],
    ['PING', 'session'], ['SELECT 1', 'session'], ['MULTI', 'session'], ['CLIENT SETNAME n', 'session'], ['SUBSCRIBE ch', 'read'],
  ]
  for (const [line, want] of cases) t.equal(cls(line).class, want, line)
})

t.test('DEL over the bulk-delete threshold is bulk-delete', async t => {
  const keys = Array.from({ length: 101 }, (_, i) => `k${i}`).join(' ')
  t.equal(cls(`DEL ${keys}`).class, 'bulk-delete')
  t.equal(cls(`UNLINK ${keys}`, { bulkDeleteKeys: 200 }).class, 'delete')
  t.equal(cls('DEL a b c', { bulkDeleteKeys: 2 }).class, 'bulk-delete')
  t.equal(cls('DEL a b c', { bulkDeleteKeys: 2 }).facts.keysTouched, 3)
})

t.test('scripts are writes when the target says so', async t => {
  t.equal(cls('EVAL "return 1" 1 k', { scripts: 'write' }).class, 'write')
  t.equal(cls('EVAL_RO "return 1" 1 k', { scripts: 'write' }).class, 'read')
  t.same(cls('EVAL "return 1" 2 a b').resources, ['a', 'b'])
})

t.test('resources are the keys at the positions Redis describes', async t => {
  t.same(cls('MSET a 1 b 2').resources, ['a', 'b'])
  t.same(cls('XREAD COUNT 2 STREAMS s1 s2 0 0').resources, ['s1', 's2'])
  t.same(cls('ZUNIONSTORE out 2 a b WEIGHTS 1 2').resources, ['out', 'a', 'b'])
  t.same(cls('XGROUP CREATE st g $').resources, ['st'])
  t.same(cls('BLPOP q1 q2 0').resources, ['q1', 'q2'])
  t.same(cls('GET session:42').resources, ['session:42'])
  t.equal(cls('MGET a b c').facts.keysTouched, 3)
})

t.test('statements show keys, never values', async t => {
  t.equal(cls('SET user:1 secret-value EX 10').statement, 'SET user:1 ? ? ?')
  t.equal(cls('CONFIG SET requirepass hunter2').statement, 'CONFIG SET ? ?')
  t.equal(cls('AUTH user token').statement, 'AUTH ? ?')
  t.equal(cls('GET a').fingerprint, cls('get a').fingerprint)
  t.not(cls('GET a').fingerprint, cls('GET b').fingerprint)
})

t.test('unknown commands are admin and name themselves so a rule can allow them', async t => {
  const op = cls('FOO.BAR x y')
  t.equal(op.class, 'admin')
  t.equal(op.facts.command, 'FOO.BAR')
  t.equal(op.facts.unknownCommand, true)
})

t.test('RediSearch commands: schema changes, drops, searches with KNN', async t => {
  t.equal(cls('FT.CREATE idx ON HASH PREFIX 1 doc: SCHEMA v VECTOR HNSW 6 TYPE FLOAT32 DIM 4 DISTANCE_METRIC COSINE').class, 'schema-change')
  t.same(cls('FT.CREATE idx SCHEMA t TEXT').resources, ['idx'])
  t.equal(cls('FT.ALTER idx SCHEMA ADD f TEXT').class, 'schema-change')
  t.equal(cls('FT.ALIASADD a idx').class, 'schema-change')
  t.equal(cls('FT.DROPINDEX idx').class, 'schema-change')
  t.equal(cls('FT.DROPINDEX idx DD').class, 'bulk-delete')
  t.equal(cls('FT.DROP idx').class, 'bulk-delete')
  t.equal(cls('FT.DROP idx KEEPDOCS').class, 'schema-change')
  const plain = cls('FT.SEARCH idx "hello world" LIMIT 0 5')
  t.equal(plain.class, 'read')
  t.same(plain.resources, ['idx'])
  t.equal(plain.facts.vectorSearch, undefined)
  const knn = cls('FT.SEARCH idx "*=>[KNN 10 @vec $BLOB AS score]" PARAMS 2 BLOB xxxxxxxx DIALECT 2')
  t.same(knn.statements[0]!.vector, { search: true, topK: 10 })
  t.equal(knn.facts.topK, 10)
  t.match(knn.statement, /^FT\.SEARCH idx "\*=>\[KNN 10 @vec \$BLOB AS score\]" \?/)
  const param = cls('FT.SEARCH idx "(@tag:{a})=>[KNN $K @vec $BLOB]" PARAMS 4 K 250 BLOB xxxx DIALECT 2')
  t.equal(param.facts.topK, 250)
  t.equal(cls('FT.AGGREGATE idx "*=>[KNN 3 @v $B]" PARAMS 2 B x').facts.topK, 3)
  t.equal(cls('FT.SEARCH idx "@v:[VECTOR_RANGE 0.2 $B]" PARAMS 2 B x LIMIT 0 50').facts.topK, 50)
  t.equal(cls('FT.CONFIG SET TIMEOUT 1').class, 'admin')
  t.equal(cls('FT.INFO idx').class, 'read')
})

t.test('vector sets: VADD write, VREM delete, VSIM a vector search with COUNT as top-k', async t => {
  const blob = Buffer.from(new Float32Array([1, 2, 3, 4]).buffer)
  const vadd = classifyToOperation([Buffer.from('VADD'), Buffer.from('vs'), Buffer.from('FP32'), blob, Buffer.from('e1')])
  t.equal(vadd.class, 'write')
  t.same(vadd.resources, ['vs'])
  t.equal(vadd.statement, 'VADD vs ? ? ?')
  t.equal(cls('VREM vs e1').class, 'delete')
  // a blob whose bytes spell COUNT is data, not an option
  const tricky = classifyCommand([Buffer.from('VSIM'), Buffer.from('vs'), Buffer.from('FP32'), Buffer.from('COUNT'), Buffer.from('WITHSCORES'), Buffer.from('COUNT'), Buffer.from('7')])
  t.same(tricky.vector, { search: true, topK: 7 })
  t.equal(cls('VSIM vs ELE e1').facts.topK, 10)
  t.equal(cls('VSIM vs VALUES 3 0.1 0.2 0.3 COUNT 25 EF 200').facts.topK, 25)
  for (const c of ['VEMB vs e1', 'VGETATTR vs e1', 'VCARD vs', 'VINFO vs', 'VLINKS vs e1', 'VRANDMEMBER vs 3']) t.equal(cls(c).class, 'read', c)
  t.equal(cls('VSETATTR vs e1 "{}"').class, 'write')
})

t.test('command lines split like redis-cli', async t => {
  t.same(splitCommandLine('set "a b" \'it\\\'s\' "\\x41\\t"'), ['set', 'a b', "it's", 'A\t'])
  t.same(splitCommandLine('  get   k  '), ['get', 'k'])
  t.equal(splitCommandLine('get "open'), undefined)
  t.equal(splitCommandLine('get "a"b'), undefined)
  t.match(explainRedis('get "open'), { error: /unbalanced quotes/ })
})

t.test('the per-shape shortcut classifies every built-in command exactly as the full path does', async t => {
  const { classifyFull, fingerprintOf } = await import('../src/classify.ts')
  const { BUILTIN_COMMANDS } = await import('../src/commands.ts')
  const { hash } = await import('node:crypto')
  // values that take every branch of how a statement shows a key: plain, spaces, quotes, tabs,
  // control bytes, non-ASCII, invalid UTF-8, empty, long, and words commands give meaning to
  const values = ['k', 'user:1', 'a b', 'a  b', ' lead', 'trail ', 'q"uote', 'tab\there', 'nl\nx', '\x01ctl', 'café', '\u00a0nbsp', '',
    'x'.repeat(130), 'STORE', 'STREAMS', 'COUNT', '2', '0', '-1', 'WITHSCORES', 'GET', '#'].map(v => Buffer.from(v))
  values.push(Buffer.from([0xff, 0xfe, 0x41]))
  let n = 0
  for (const name of BUILTIN_COMMANDS.keys()) {
    for (const spelled of [name, name.toUpperCase()]) {
      for (let argc = 1; argc <= 30; argc += argc < 8 ? 1 : 7) {
        for (let v = 0; v < values.length; v += 3) {
          const args = [Buffer.from(spelled), ...Array.from({ length: argc - 1 }, (_, i) => values[(v + i * 5) % values.length]!)]
          for (const opts of [{}, { bulkDeleteKeys: 2 }, { scripts: 'write' as const }]) {
            const want = classifyFull(args, opts)
            // twice: the shape is worked out on the first call and reused on the second
            for (let round = 0; round < 2; round++) {
              const got = classifyCommand(args, opts)
              if (JSON.stringify(got) !== JSON.stringify(want)) t.same(got, want, `${spelled} with ${argc - 1} arguments (${JSON.stringify(opts)})`)
              n++
            }
          }
        }
      }
    }
  }
  t.ok(n > 100_000, `${n} classifications compared`)
  // the fingerprint skips normalizing text that is already normal, and only that
  for (const s of ['GET a', 'GET a  b', ' GET a', 'GET a ', 'GET\ta', 'GET "a\u00a0b"', 'SET k ? ?', 'GET "a  b"'])
    t.equal(fingerprintOf(s), hash('sha256', s.trim().replace(/\s+/g, ' '), 'hex').slice(0, 16), JSON.stringify(s))
})

t.test('commands cached under one operation key classify alike: a cached SET of a new value is the same operation', async t => {
  const { classifyFull, operationKey } = await import('../src/classify.ts')
  const { BUILTIN_COMMANDS } = await import('../src/commands.ts')
  const values = ['k', 'user:1', 'a b', 'q"uote', 'nl\nx', 'café', '', 'x'.repeat(130), 'STORE', 'STREAMS', 'COUNT', '2', '0', '-1', 'GET', 'BY']
    .map(v => Buffer.from(v))
  values.push(Buffer.from([0xff, 0xfe, 0x41]))
  let same = 0
  let differ = 0
  for (const name of BUILTIN_COMMANDS.keys()) {
    for (const spelled of [name, name.toUpperCase()]) {
      for (let argc = 1; argc <= 12; argc++) {
        for (const opts of [{}, { bulkDeleteKeys: 2 }]) {
          const args = [Buffer.from(spelled), ...Array.from({ length: argc - 1 }, (_, i) => values[(argc + i * 5) % values.length]!)]
          const key = operationKey(args, opts, 256)
          if (key === undefined) continue
          const want = JSON.stringify(classifyFull(args, opts))
          // every argument changed in turn: the same key must mean the same classification
          for (let i = 1; i < argc; i++) {
            for (const v of [values[0]!, values[9]!, values[16]!]) {
              const other = [...args]
              other[i] = v
              if (operationKey(other, opts, 256) !== key) {
                differ++
                continue
              }
              const got = JSON.stringify(classifyFull(other, opts))
              if (got !== want) t.equal(got, want, `${spelled} ${other.slice(1).map(String).join(' ')} shares the key of ${args.slice(1).map(String).join(' ')}`)
              same++
            }
          }
        }
      }
    }
  }
  t.ok(same > 10_000 && differ > 1_000, `${same} commands shared a key and classified alike; ${differ} got a key of their own`)
  t.equal(operationKey([Buffer.from('SET'), Buffer.from('k'), Buffer.from('v1')], {}, 256), operationKey([Buffer.from('set'), Buffer.from('k'), Buffer.from('v2')], {}, 256), 'SET k: one key whatever the value')
  t.not(operationKey([Buffer.from('GET'), Buffer.from('1:a')], {}, 256), operationKey([Buffer.from('GET'), Buffer.from('1')], {}, 256))
  t.equal(operationKey([Buffer.from('GET'), Buffer.alloc(300)], {}, 256), undefined, 'keys past the bound are not cached by keys')
  t.equal(operationKey([Buffer.from('EVAL'), Buffer.from('return 1'), Buffer.from('0')], {}, 256), undefined, 'a command whose arguments decide its class has no key')
})

t.test('the serve loop\'s cached operations are the classifier\'s: by shape and keys, and a name whose upper case is longer is not another command', async t => {
  const { classifyCommand, toOperation } = await import('../src/classify.ts')
  const { CommandNames, operationOf } = await import('../src/operations.ts')
  const names = new CommandNames()
  const target = {}
  const frames: Buffer[][] = [
    ['SET', 'k', 'v1'], ['set', 'k', 'v2'], ['GET', 'k'], ['GET', '1:a'], ['GET', '1'], ['MGET', 'a', 'b'], ['MGET', 'a b', ''],
    ['MGET', 'ab', ''], ['DEL', 'x', 'y', 'z'], ['SSCAN', 's', '0'], ['\xdfcan', 's', '0'], ['HGET', 'h', 'f'], ['EVAL', 'return 1', '0'],
  ].map(f => f.map(a => Buffer.from(a, 'latin1')))
  for (let round = 0; round < 2; round++) {
    for (const args of frames) {
      const raw = Buffer.concat([Buffer.from(`*${args.length}\r\n`), ...args.flatMap(a => [Buffer.from(`$${a.length}\r\n`), a, Buffer.from('\r\n')])])
      const name = names.of(args[0]!)
      const got = operationOf(target, { args, raw }, {}, names.lower(args[0]!, name))
      const want = toOperation([classifyCommand(args, {})])
      t.same({ ...got, fingerprint: got.fingerprint }, want, `${args.map(a => a.toString('latin1')).join(' ')} (round ${round})`)
    }
  }
  t.equal(names.lower(Buffer.from('\xdfcan', 'latin1'), names.of(Buffer.from('\xdfcan', 'latin1'))), undefined, 'ßcan has no lower-case name of SSCAN')
})

t.test('the cached operations keep a working set of up to two generations, and no more', async t => {
  const { classifyCommand, toOperation } = await import('../src/classify.ts')
  const { OP_GENERATION, operationOf } = await import('../src/operations.ts')
  const target = {}
  const get = (i: number) => {
    const args = [Buffer.from('GET'), Buffer.from(`key:${i}`)]
    return operationOf(target, { args, raw: Buffer.alloc(0) }, {}, 'get')
  }
  // 1.5 generations of keys, read twice: the second pass is answered by the first pass's objects
  const n = OP_GENERATION + (OP_GENERATION >> 1)
  const first = Array.from({ length: n }, (_, i) => get(i))
  let same = 0
  for (let i = 0; i < n; i++) if (get(i) === first[i]) same++
  t.equal(same, n, `all ${n} of a working set over one generation are hits`)
  t.same(get(0), toOperation([classifyCommand([Buffer.from('GET'), Buffer.from('key:0')], {})]), 'an answer from the older generation is the classifier\'s')
  // two more generations of new keys: the first ones are gone, not kept without bound
  for (let i = n; i < n + 2 * OP_GENERATION; i++) get(i)
  t.not(get(1), first[1], 'past two generations of other keys, a key is classified again')
  t.same(get(1), first[1], 'to the same Operation')
})
