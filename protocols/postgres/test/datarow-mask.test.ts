// maskDataRowTo, the codec's per-row masking, against a reference that decodes every column, masks
// it and encodes the row again: random rows (NULLs, empty values, any column masked, several, none),
// each a run of them in one read as Postgres sends them, and the malformed rows an upstream could
// send. The end-to-end behaviour through a real Postgres is masking.test.ts; this pins the bytes.
import t from 'tap'
import { mulberry32 } from '@portcullis/fixtures/random'
import { compileMaskPlan } from '@portcullis/core'
import { maskDataRowTo, type RowMask } from '../src/masking.ts'
import { Outbox } from '../src/outbox.ts'

const plan = compileMaskPlan([{ id: 'free', detectors: ['email'], method: 'redact' }], { target: 't', subject: 's', groups: [] }, { hashKey: Buffer.alloc(32, 1) })
const REDACTED = Buffer.from(plan.apply('redact', '')!)

type Column = Buffer | null
type Kind = 'pass' | 'redact' | 'null' | 'scan'

function dataRow(cols: Column[], trailing = Buffer.alloc(0)): Buffer {
  const parts: Buffer[] = []
  for (const c of cols) {
    const l = Buffer.alloc(4)
    l.writeInt32BE(c === null ? -1 : c.length)
    parts.push(l)
    if (c !== null) parts.push(c)
  }
  const body = Buffer.concat([Buffer.from([cols.length >> 8, cols.length & 0xff]), ...parts, trailing])
  const head = Buffer.alloc(5)
  head[0] = 0x44
  head.writeInt32BE(4 + body.length, 1)
  return Buffer.concat([head, body])
}

function rowMask(kinds: Kind[]): RowMask {
  return {
    methods: kinds.map(k => (k === 'redact' ? 'redact' : k === 'null' ? 'null' : undefined)),
    scan: kinds.map(k => k === 'scan'),
    textLike: kinds.map(() => true),
    binary: kinds.map(() => false),
    jsonb: kinds.map(() => false),
    json: kinds.map(() => false),
    fixed: kinds.map(k => (k === 'redact' ? REDACTED : k === 'null' ? null : undefined)),
    parts: kinds.map(() => undefined),
  }
}

/** the row as a decoder would mask it: column by column */
function reference(cols: Column[], kinds: Kind[]): { row: Buffer; masked: number } {
  let masked = 0
  const out = cols.map((c, i) => {
    if (c === null) return c
    if (kinds[i] === 'redact') return masked++, REDACTED
    if (kinds[i] === 'null') return masked++, null
    if (kinds[i] === 'scan') {
      const r = plan.scan(c.toString('utf8'))
      if (r.count > 0) return masked++, Buffer.from(r.text)
    }
    return c
  })
  return { row: dataRow(out), masked }
}

const VALUES = ['', '1', 'user7@example.com', 'no address here', 'x'.repeat(63), 'y'.repeat(64), 'z'.repeat(65), 'ü'.repeat(100), 'write to ada@example.org today', 'q'.repeat(400)]
const KINDS: Kind[] = ['pass', 'pass', 'redact', 'null', 'scan']

t.test('random rows, a run of them in one read: the bytes and counts a column-by-column mask gives', async t => {
  const r = mulberry32(5)
  let rows = 0
  for (let k = 0; k < 300; k++) {
    const n = Math.floor(r() * 7)
    const kinds = Array.from({ length: n }, () => KINDS[Math.floor(r() * KINDS.length)])
    const mask = rowMask(kinds)
    const batch: Column[][] = Array.from({ length: 1 + Math.floor(r() * 20) }, () =>
      kinds.map(() => (r() < 0.15 ? null : Buffer.from(VALUES[Math.floor(r() * VALUES.length)]))),
    )
    const all = Buffer.concat(batch.map(cols => dataRow(cols)))
    const out = new Outbox()
    let masked = 0
    for (let off = 0; off < all.length; ) {
      const end = off + 1 + all.readInt32BE(off + 1)
      masked += maskDataRowTo(all, off, end, mask, plan, out)
      off = end
    }
    const want = batch.map(cols => reference(cols, kinds))
    const got = out.take() ?? Buffer.alloc(0)
    if (!got.equals(Buffer.concat(want.map(w => w.row))) || masked !== want.reduce((a, w) => a + w.masked, 0)) {
      t.fail(`kinds ${kinds.join(',')}`, { got: got.toString('hex'), want: Buffer.concat(want.map(w => w.row)).toString('hex') })
      return
    }
    rows += batch.length
  }
  t.pass(`${rows} rows`)
})

t.test('bytes after the last column (a malformed row) go out as they came, inside the length the header says', async t => {
  const row = dataRow([Buffer.from('a'), Buffer.from('secret@example.com'), Buffer.from('b')], Buffer.from('TAIL'))
  const out = new Outbox()
  t.equal(maskDataRowTo(row, 0, row.length, rowMask(['pass', 'redact', 'pass']), plan, out), 1)
  const got = out.take()!
  t.equal(got.readInt32BE(1), got.length - 1, 'the header counts every byte sent')
  t.equal(got.subarray(got.length - 4).toString(), 'TAIL')
  t.notOk(got.includes('secret@example.com'))
})

t.test('a row whose lengths run past it, or whose column count is beyond what it holds, is a protocol error', async t => {
  const mask = rowMask(['redact', 'pass'])
  const good = dataRow([Buffer.from('v@example.com'), Buffer.from('w')])
  const cut = Buffer.from(good)
  cut.writeInt32BE(good.length, 1 + 4 + 2) // the first value claims the whole message and more
  t.throws(() => maskDataRowTo(cut, 0, cut.length, mask, plan, new Outbox()), { code: 'PROTOCOL_ERROR' })
  for (const count of [3, 0x7fff, 0x8000, 0xffff]) {
    const many = Buffer.from(good)
    many.writeUInt16BE(count, 5)
    // a count with the high bit set is not read as a negative number of columns (no column masked)
    t.throws(() => maskDataRowTo(many, 0, many.length, mask, plan, new Outbox()), { code: 'PROTOCOL_ERROR' }, `column count ${count}`)
  }
  t.throws(() => maskDataRowTo(good, 0, 6, mask, plan, new Outbox()), { code: 'PROTOCOL_ERROR' }, 'shorter than its header')
})
