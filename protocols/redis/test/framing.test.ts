import t from 'tap'
import { RequestFramer } from '../src/request-framer.ts'
import { ReplyFramer } from '../src/reply-framer.ts'
import { decodeReply, encodeReply } from '../src/reply.ts'

const strs = (bs: Buffer[]): string[] => bs.map(b => b.toString('latin1'))

// every way of cutting the bytes in two, and byte by byte, must frame the same
function splits(bytes: Buffer): Buffer[][] {
  const out: Buffer[][] = [[bytes], [...bytes].map(b => Buffer.from([b]))]
  for (let i = 1; i < bytes.length; i++) out.push([bytes.subarray(0, i), bytes.subarray(i)])
  return out
}

// the exact bytes clients send: ioredis/node-redis arrays, redis-cli inline, a FLOAT32 KNN blob
const blob = Buffer.from(new Float32Array([0.5, -1, 13.25, 0]).buffer)
const bulk = (b: Buffer | string): Buffer => Buffer.concat([Buffer.from(`$${Buffer.byteLength(b)}\r\n`), Buffer.from(b), Buffer.from('\r\n')])
export const command = (...args: (Buffer | string)[]): Buffer => Buffer.concat([Buffer.from(`*${args.length}\r\n`), ...args.map(bulk)])
const knnWhole = command('FT.SEARCH', 'idx', '*=>[KNN 10 @vec $BLOB AS s]', 'PARAMS', '2', 'BLOB', blob, 'DIALECT', '2')
const stream = Buffer.concat([
  Buffer.from('*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nv\r\nxx\r\n'),
  Buffer.from('PING\r\n'),
  Buffer.from('set "a b" \'c\\\'d\' "\\x00\\n"\n'),
  Buffer.from('*0\r\n\r\n'),
  knnWhole,
])

t.test('requests frame the same at every split point', async t => {
  for (const parts of splits(stream)) {
    const f = new RequestFramer()
    const got = parts.flatMap(p => f.push(p))
    t.equal(got.length, 4)
    t.same(strs(got[0]!.args), ['SET', 'k', 'v\r\nxx'])
    t.same(strs(got[1]!.args), ['PING'])
    t.ok(got[1]!.inline)
    t.same(strs(got[2]!.args), ['set', 'a b', "c'd", '\x00\n'])
    t.same(got[3]!.args[6], blob, 'the FLOAT32 blob comes through byte for byte')
    t.same(Buffer.concat(got.map(g => g.raw)), Buffer.concat([stream.subarray(0, stream.indexOf('*0')), stream.subarray(stream.indexOf('*0') + 6)]), 'raw is the bytes as sent')
    t.equal(f.buffered, 0)
  }
})

t.test('malformed requests are protocol errors with a reason', async t => {
  const cases: [string | Buffer, RegExp, object?][] = [
    ['*2\r\n:1\r\n', /expected '\$', got ':'/],
    ['*x\r\n', /invalid multibulk length/],
    ['*1\r\n$-5\r\n', /invalid bulk length/],
    ['*1\r\n$3\r\nabcde\r\n', /not terminated/],
    ['*2000001\r\n', /multibulk length 2000001 over the limit/],
    ['*1\r\n$100\r\n', /bulk length 100 over the limit of 10/, { maxBulk: 10 }],
    ['GET "abc\r\n', /unbalanced quotes/],
    ['x'.repeat(70 * 1024), /too big inline request/],
  ]
  for (const [input, why, limits] of cases) {
    const f = new RequestFramer({ maxArray: 1_000_000, ...limits })
    t.throws(() => f.push(Buffer.from(input)), why, String(input).slice(0, 30))
  }
})

const replies = [
  '+OK\r\n',
  '-ERR wrong\r\n',
  ':42\r\n',
  '$-1\r\n',
  '$5\r\nhe\r\nl\r\n',
  '*-1\r\n',
  '*3\r\n$1\r\na\r\n*2\r\n:1\r\n$0\r\n\r\n+x\r\n',
  '%2\r\n+name\r\n$3\r\nbob\r\n+age\r\n:3\r\n',
  '_\r\n', ',3.14\r\n', '#t\r\n', '(123456789012345678901234567890\r\n', '!3\r\nERR\r\n', '=8\r\ntxt:text\r\n',
  '~2\r\n$1\r\na\r\n$1\r\nb\r\n',
  '>3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$2\r\nhi\r\n',
  '|1\r\n+key-popularity\r\n%1\r\n$1\r\na\r\n,0.19\r\n*2\r\n:2\r\n:1\r\n',
]

t.test('replies of every RESP2 and RESP3 type frame the same at every split point', async t => {
  const all = Buffer.from(replies.join(''))
  for (const parts of splits(all)) {
    const f = new ReplyFramer()
    const got = parts.flatMap(p => f.push(p))
    t.same(got.map(r => r.raw.toString()), replies)
  }
  const f = new ReplyFramer()
  const [attr] = f.push(Buffer.from(replies.at(-1)!))
  t.equal(String.fromCharCode(attr!.type), '*', 'an attribute is part of the reply it describes')
})

t.test('decoding and encoding a reply gives back the same bytes', async t => {
  for (const r of replies) t.equal(encodeReply(decodeReply(Buffer.from(r))).toString(), r)
})

t.test('malformed replies and oversized reply bulks are protocol errors', async t => {
  t.throws(() => new ReplyFramer().push(Buffer.from('?what\r\n')), /unexpected reply type/)
  t.throws(() => new ReplyFramer(4).push(Buffer.from('$10\r\n')), /over the limit/)
  t.throws(() => new ReplyFramer().push(Buffer.from('*zz\r\n')), /invalid aggregate length/)
})
