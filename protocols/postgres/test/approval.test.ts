// What an approver is shown of a held Postgres statement, and what its request binds to: the Bind
// values rendered as SQL literals, masked where a column rule (or doubt) says so, and a hash that
// tells every parameter set apart. Unit level; the end-to-end proof runs the real gateway
// (packages/gateway/test/approvals-e2e.test.ts).
import t from 'tap'
import { randomBytes } from 'node:crypto'
import { compileMaskPlan, EMPTY_MASK_PLAN, type MaskPlan } from '@portcullis/core'
import { sentExecute, sentQuery, sqlLiteral } from '../src/approval.ts'

const ctx = { target: 'db', subject: 'ann', groups: ['agents'] }
const emails: MaskPlan = compileMaskPlan([{ id: 'pii', columns: ['customers.email'], method: 'redact' }], ctx, { hashKey: randomBytes(32) })
const detect: MaskPlan = compileMaskPlan([{ id: 'd', detectors: ['email'], method: 'redact' }], ctx, { hashKey: randomBytes(32) })

/** a Bind message: text values, null for NULL, Buffers sent in binary */
function bind(values: (string | Buffer | null)[]): Buffer {
  const parts: Buffer[] = [Buffer.from('\0\0')]
  const formats = Buffer.alloc(2 + 2 * values.length)
  formats.writeInt16BE(values.length)
  values.forEach((v, i) => formats.writeInt16BE(Buffer.isBuffer(v) ? 1 : 0, 2 + 2 * i))
  parts.push(formats)
  const count = Buffer.alloc(2)
  count.writeInt16BE(values.length)
  parts.push(count)
  for (const v of values) {
    const len = Buffer.alloc(4)
    if (v === null) {
      len.writeInt32BE(-1)
      parts.push(len)
      continue
    }
    const b = Buffer.isBuffer(v) ? v : Buffer.from(v)
    len.writeInt32BE(b.length)
    parts.push(len, b)
  }
  parts.push(Buffer.from([0, 0]))
  const body = Buffer.concat(parts)
  const head = Buffer.alloc(5)
  head.write('B')
  head.writeInt32BE(4 + body.length, 1)
  return Buffer.concat([head, body])
}

const RES = ['public.customers']

t.test('Bind values are shown as SQL literals: numbers bare, text quoted, NULL, control characters escaped, binary as bytea', async t => {
  const s = sentExecute('UPDATE t SET a = $1, b = $2, c = $3, d = $4, e = $5', bind(['20', "O'Brien", null, 'two\nlines', Buffer.from([0, 0x14])]), 'x', EMPTY_MASK_PLAN, ['public.t'])
  t.same(s.parameters, ['20', "'O''Brien'", 'NULL', "E'two\\nlines'", "'\\x0014'::bytea /* binary, 2 bytes */"])
  const big = sentExecute('SELECT $1', bind([Buffer.alloc(100)]), 'x', EMPTY_MASK_PLAN, [])
  t.same(big.parameters, ['<binary 100 bytes>'])
  t.match(sqlLiteral('x'.repeat(300)), /…\(300 chars\)$/, 'long values are cut for display')
  const many = sentExecute('SELECT 1', bind(Array.from({ length: 1000 }, (_, i) => String(i))), 'x', EMPTY_MASK_PLAN, [])
  t.equal(many.parameters!.length, 101, 'at most 100 parameters are shown')
  t.equal(many.parameters![100], '… 900 more parameters')
})

t.test('the hash tells parameter sets, formats and NULL from empty apart; the same statement hashes the same', async t => {
  const text = 'DELETE FROM documents WHERE id = $1'
  const h = (v: (string | Buffer | null)[]) => sentExecute(text, bind(v), 'x', EMPTY_MASK_PLAN, []).hash
  t.equal(h(['20']), h(['20']))
  t.not(h(['20']), h(['21']))
  t.not(h(['']), h([null]))
  t.not(h(['20']), h([Buffer.from('20')]), 'text and binary formats differ')
  t.not(sentExecute(text, bind(['20']), 'x', EMPTY_MASK_PLAN, [], [23]).hash, sentExecute(text, bind(['20']), 'x', EMPTY_MASK_PLAN, [], [25]).hash, 'declared parameter types differ')
  t.not(sentExecute('SELECT $1, $2', bind(['a', 'bc']), 'x', EMPTY_MASK_PLAN, []).hash, sentExecute('SELECT $1, $2', bind(['ab', 'c']), 'x', EMPTY_MASK_PLAN, []).hash)
  t.not(sentQuery('DELETE FROM documents WHERE id = 20', EMPTY_MASK_PLAN, []).hash, sentQuery('DELETE FROM documents WHERE id = 21', EMPTY_MASK_PLAN, []).hash)
  t.not(sentExecute(undefined, undefined, text, EMPTY_MASK_PLAN, []).hash, sentExecute(undefined, undefined, text, EMPTY_MASK_PLAN, []).hash, 'without the text, no two requests share a hash')
})

t.test('a value compared with, assigned to or inserted into a masked column is masked; others are shown', async t => {
  const cases: [string, (string | null)[], boolean[]][] = [
    ['UPDATE customers SET email = $1 WHERE id = $2', ['a@b.c', '1'], [true, false]],
    ['SELECT name FROM customers c WHERE c.email = $1', ['a@b.c'], [true]],
    ['SELECT name FROM customers WHERE $1 = email', ['a@b.c'], [true]],
    ['SELECT name FROM customers WHERE email IN ($1, $2) AND id = $3', ['a@b.c', 'd@e.f', '7'], [true, true, false]],
    ['SELECT name FROM customers WHERE email = ANY ($1)', ['{a@b.c}'], [true]],
    ['SELECT name FROM customers WHERE email LIKE $1', ['%@b.c'], [true]],
    ['INSERT INTO customers (id, name, email) VALUES ($1, $2, $3), ($4, $5, $6)', ['1', 'Ann', 'a@b.c', '2', 'Bo', 'd@e.f'], [false, false, true, false, false, true]],
    ['SELECT name FROM customers WHERE lower(email) = lower($1)', ['A@B.C'], [true]],
    ['SELECT name FROM customers WHERE id = $1 LIMIT $2', ['3', '10'], [false, false]],
  ]
  for (const [text, values, masked] of cases) {
    const s = sentExecute(text, bind(values), 'x', emails, RES)
    values.forEach((v, i) => {
      if (masked[i]) t.notMatch(s.parameters![i]!, v!, `${text}: $${i + 1} masked`)
      else t.match(s.parameters![i]!, v!, `${text}: $${i + 1} shown`)
    })
  }
})

t.test('literals in the text are masked the same way; comments and quotes do not fool the lexer', async t => {
  const q = sentQuery(`UPDATE customers SET email = 'x@y.z' /* email = 'not a value' */, name = 'It''s' WHERE id = 3`, emails, RES)
  t.notMatch(q.text, /x@y\.z/)
  t.match(q.text, /name = 'It''s' WHERE id = 3/)
  t.match(q.text, /\/\* email = 'not a value' \*\//, 'a comment is left as it was')
  const dollar = sentQuery(`UPDATE customers SET email = $q$x@y.z$q$ WHERE id = 3`, emails, RES)
  t.notMatch(dollar.text, /x@y\.z/, 'a dollar-quoted literal too')
  const e = sentQuery(`UPDATE customers SET email = E'x\\'@y.z' WHERE id = 3`, emails, RES)
  t.notMatch(e.text, /@y\.z/, "an E'' literal with an escaped quote too")
})

t.test('without column rules, detectors still run over the values and the text', async t => {
  const s = sentExecute('INSERT INTO notes (body) VALUES ($1)', bind(['write to ann@example.com']), 'x', detect, ['public.notes'])
  t.notMatch(s.parameters![0]!, /ann@example\.com/)
  t.match(s.parameters![0]!, /write to/)
  t.notMatch(sentQuery(`INSERT INTO notes (body) VALUES ('ann@example.com')`, detect, []).text, /ann@example\.com/)
})

t.test('binary values under a mask are never shown raw', async t => {
  const s = sentExecute('UPDATE customers SET email = $1 WHERE id = $2', bind([Buffer.from('a@b.c'), '1']), 'x', emails, RES)
  t.notMatch(s.parameters![0]!, /a@b\.c|40622e63/)
})
