import t from 'tap'
import { Framer, STARTUP_LIMIT } from '../src/framer.ts'
import { BufferReader } from '../src/buffer-reader.ts'
import { isPortcullisError } from '@portcullis/core/errors'
import {
  parseBindMessage,
  parseParseMessage,
  parseQueryMessage,
  parseStartupPacket,
  serializeQuery,
  serializeParse,
  serializeStartupMessage,
  serializeSSLRequest,
  sniffStartup,
} from '../src/frontend.ts'
import { BufferWriter } from '../src/buffer-writer.ts'
import { parseDataRow, parseNoticeFields, parseRowDescription, serializeDataRow, serializeErrorResponse } from '../src/backend.ts'

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn()
  } catch (e) {
    return isPortcullisError(e) ? e.code : 'other'
  }
  return undefined
}

const stream = Buffer.concat([
  serializeQuery('select 1'),
  serializeParse('s1', 'select $1::int'),
  Buffer.from([0x53, 0, 0, 0, 4]), // Sync
  serializeQuery('select ' + 'x'.repeat(300)),
])

t.test('messages split at every byte boundary come out whole and in order', async t => {
  for (let cut = 1; cut < stream.length; cut++) {
    const f = new Framer(1 << 20)
    const frames = [...f.push(stream.subarray(0, cut)), ...f.push(stream.subarray(cut))]
    if (frames.map(x => String.fromCharCode(x.code)).join('') !== 'QPSQ' || Buffer.concat(frames.map(x => x.raw)).compare(stream) !== 0) {
      t.fail(`split at ${cut} lost framing`)
      return
    }
  }
  t.pass('every split framed')
})

t.test('messages fed one byte at a time come out whole', async t => {
  const f = new Framer(1 << 20)
  const frames = []
  for (let i = 0; i < stream.length; i++) frames.push(...f.push(stream.subarray(i, i + 1)))
  t.equal(frames.length, 4)
  t.equal(parseQueryMessage(new BufferReader(frames[3].raw, 5)), 'select ' + 'x'.repeat(300))
})

t.test('a whole message is handed out without a copy', async t => {
  const f = new Framer(1 << 20)
  const [frame] = f.push(stream)
  t.equal(frame.raw.buffer, stream.buffer, 'same memory as the chunk')
})

t.test('an oversized length is refused from the header, before the body arrives', async t => {
  const f = new Framer(1000)
  const header = Buffer.from([0x51, 0, 0, 0x10, 0])
  t.equal(codeOf(() => f.push(header)), 'MESSAGE_TOO_LARGE')
  t.throws(() => new Framer(1000).push(header), /exceeds the limit of 1000/)
  t.equal(codeOf(() => new Framer(1000).push(Buffer.from([0x51, 0, 0, 0, 2]))), 'PROTOCOL_ERROR')
})

t.test('startup packets: the first message has no code byte and a 10 KiB bound', async t => {
  const startup = serializeStartupMessage({ user: 'u', database: 'd' })
  for (let cut = 1; cut < startup.length; cut++) {
    const f = new Framer(1 << 20, { startup: true })
    const frames = [...f.push(startup.subarray(0, cut)), ...f.push(startup.subarray(cut))]
    if (frames.length !== 1) return t.fail(`split at ${cut}`)
    const p = parseStartupPacket(new BufferReader(frames[0].raw, 4))
    if (p.kind !== 'startup' || p.parameters.user !== 'u') return t.fail('bad parse')
  }
  const big = Buffer.alloc(8)
  big.writeInt32BE(STARTUP_LIMIT + 1, 0)
  t.equal(codeOf(() => new Framer(1 << 20, { startup: true }).push(big)), 'MESSAGE_TOO_LARGE')
  // after an SSLRequest the framer hands back control before reading what follows
  const f = new Framer(1 << 20, { startup: true })
  const frames = f.push(Buffer.concat([serializeSSLRequest(), Buffer.from([0x16, 3, 1])]))
  t.equal(frames.length, 1)
  t.equal(f.buffered, 3, 'the TLS bytes stay unframed')
})

t.test('sniff recognises SSLRequest, GSSENCRequest and StartupMessage 3.0', async t => {
  t.equal(sniffStartup(serializeSSLRequest()), true)
  t.equal(sniffStartup(serializeStartupMessage({ user: 'a' })), true)
  t.equal(sniffStartup(Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30])), true, 'GSSENCRequest')
  t.equal(sniffStartup(Buffer.from('GET / HTTP/1.1\r\n')), false)
  t.equal(sniffStartup(Buffer.from('*1\r\n$4\r\nPING\r\n')), false)
  t.equal(sniffStartup(Buffer.from([0, 0, 0])), undefined, 'needs 8 bytes')
})

t.test('protocol 2.0 startup is refused with a reason', async t => {
  const w = new BufferWriter().int32(0x20000).cstring('user').cstring('x').int8(0).startup()
  t.throws(() => parseStartupPacket(new BufferReader(w, 4)), /unsupported frontend protocol 2\.0/)
})

t.test('Parse, Bind, RowDescription, DataRow and ErrorResponse round-trip', async t => {
  const p = parseParseMessage(new BufferReader(serializeParse('st', 'select $1'), 5))
  t.same(p, { name: 'st', query: 'select $1', paramTypes: [] })
  const bind = new BufferWriter().cstring('p1').cstring('st').int16(1).int16(0).int16(2).int32(2).bytes(Buffer.from('42')).int32(-1).int16(1).int16(1).message('B')
  const b = parseBindMessage(new BufferReader(bind, 5))
  t.equal(b.portal, 'p1')
  t.equal(b.params[0]!.toString(), '42')
  t.equal(b.params[1], null)
  t.same(b.resultFormats, [1])
  const rd = new BufferWriter().int16(1).cstring('email').int32(16384).int16(2).int32(25).int16(-1).int32(-1).int16(0).message('T')
  t.match(parseRowDescription(new BufferReader(rd, 5)), [{ name: 'email', tableOid: 16384, attributeNumber: 2, typeOid: 25, format: 0 }])
  const row = serializeDataRow([Buffer.from('a@b.c'), null])
  const values = parseDataRow(new BufferReader(row, 5))
  t.equal(values[0]!.toString(), 'a@b.c')
  t.equal(values[1], null)
  const err = serializeErrorResponse('ERROR', '42501', 'blocked by rule x: no')
  t.match(parseNoticeFields(new BufferReader(err, 5)), { S: 'ERROR', C: '42501', M: 'blocked by rule x: no' })
  t.throws(() => parseDataRow(new BufferReader(Buffer.from([0x44, 0, 0, 0, 10, 0, 1, 0, 0, 0, 9]), 5)), /shorter than its fields/)
})

t.test('counts of 32768 and more are read unsigned, as Postgres and libpq read them: never as a negative that skips fields', async t => {
  // a Bind whose format-code count has its high bit set: read signed it was "no formats", and the
  // parameters were then read from the bytes Postgres takes as format codes
  const bind = new BufferWriter().cstring('').cstring('st').int16(-32768).int16(1).int32(2).bytes(Buffer.from('42')).int16(0).message('B')
  t.equal(codeOf(() => parseBindMessage(new BufferReader(bind, 5))), 'PROTOCOL_ERROR', 'Bind: 32768 format codes are not in the message')
  const parse = new BufferWriter().cstring('st').cstring('select $1').int16(-1).int32(23).message('P')
  t.equal(codeOf(() => parseParseMessage(new BufferReader(parse, 5))), 'PROTOCOL_ERROR', 'Parse: 65535 parameter types are not in the message')
  const rd = new BufferWriter().int16(-32768).cstring('email').int32(16384).int16(2).int32(25).int16(-1).int32(-1).int16(0).message('T')
  t.equal(codeOf(() => parseRowDescription(new BufferReader(rd, 5))), 'PROTOCOL_ERROR', 'RowDescription: likewise')
  const row = new BufferWriter().int16(-1).int32(1).bytes(Buffer.from('x')).message('D')
  t.equal(codeOf(() => parseDataRow(new BufferReader(row, 5))), 'PROTOCOL_ERROR', 'DataRow: likewise')
})
