import t from 'tap'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createWriteStream } from 'node:fs'
import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { auditHead, createAuditLog, operationJson, operationText, withAuditFieldsOf } from '../src/audit/audit.ts'
import { auditSink, tempDir } from './helpers.ts'

t.test('one JSON line per event, fields as given, without pino noise', async t => {
  const sink = auditSink()
  const audit = createAuditLog({ destination: 'stdout', stream: sink.stream })
  audit.write({ time: '2026-01-01T00:00:00.000Z', session: 'ses_a', target: 'docs-db', protocol: 'postgres', class: 'read', decision: 'allow', rule: 'r', rows: 2 })
  audit.write({ time: '2026-01-01T00:00:01.000Z', session: 'ses_a', target: 'docs-db', protocol: 'postgres', error: 'boom' })
  const lines = sink.lines()
  t.equal(lines.length, 2)
  t.same(lines[0], { level: 'info', time: '2026-01-01T00:00:00.000Z', session: 'ses_a', target: 'docs-db', protocol: 'postgres', class: 'read', decision: 'allow', rule: 'r', rows: 2 })
  t.notOk('pid' in lines[0] || 'hostname' in lines[0])
})

t.test('credential-named fields are dropped whatever a caller passes', async t => {
  const sink = auditSink()
  const audit = createAuditLog({ destination: 'stdout', stream: sink.stream })
  audit.write({ time: 'x', session: 's', target: 't', protocol: 'redis', ...({ token: 'eyJ.secret', password: 'hunter2' } as object) })
  audit.log('webhook failed', { secret: 'zzz', url: 'ok' })
  t.notOk(sink.text().includes('eyJ.secret'))
  t.notOk(sink.text().includes('hunter2'))
  t.notOk(sink.text().includes('zzz'))
  t.match(sink.lines()[1], { level: 'warn', log: 'webhook failed', url: 'ok' })
})

t.test('a file destination is created and written', async t => {
  const dir = await tempDir(t)
  const file = join(dir, 'logs', 'audit.jsonl')
  const audit = createAuditLog({ destination: file })
  audit.write({ time: 'x', session: 'ses_f', target: 't', protocol: 'http', decision: 'block' })
  await audit.flush()
  let text = ''
  for (let i = 0; i < 100 && !text; i++) {
    text = await readFile(file, 'utf8').catch(() => '')
    if (!text) await new Promise(r => setTimeout(r, 10))
  }
  t.match(JSON.parse(text.trim()), { session: 'ses_f', decision: 'block' })
})

t.test('closing flushes and releases a file destination', async t => {
  const dir = await tempDir(t)
  const file = join(dir, 'audit.jsonl')
  const audit = createAuditLog({ destination: file })
  for (let i = 0; i < 100; i++) audit.write({ time: 'x', session: `ses_${i}`, target: 't', protocol: 'http' })
  await new Promise(r => setTimeout(r, 20))
  await audit.close()
  await new Promise(r => setTimeout(r, 20))
  const lines = (await readFile(file, 'utf8')).trim().split('\n')
  t.equal(lines.length, 100)
  t.match(JSON.parse(lines[99]), { session: 'ses_99' })
})

t.test('a session line spliced from its head reads as the whole event would', async t => {
  const sink = auditSink()
  const audit = createAuditLog({ destination: 'stdout', stream: sink.stream })
  const fields = { session: 'ses_h', principal: { sub: 'alice', groups: ['agents'] }, target: 'cache', protocol: 'redis' as const }
  const head = auditHead(fields)
  const time = '2026-01-01T00:00:00.000Z'
  const event = { class: 'read' as const, statement: 'GET "a"\n', resources: ['key:a'], decision: 'allow' as const, rule: null, bytes: 3, durationMs: undefined }
  audit.writeSession(head, time, event)
  audit.write({ time, ...fields, ...event })
  audit.writeSession(head, time, {})
  // a field the head already has is overridden, as a spread would; a credential-named one is dropped
  audit.writeSession(head, time, { target: 'other', ...({ password: 'hunter2' } as object) })
  const text = sink.text().split('\n')
  t.equal(text[0], text[1], 'byte for byte the line write() makes')
  const lines = sink.lines()
  t.same(lines[0], { level: 'info', time, ...fields, class: 'read', statement: 'GET "a"\n', resources: ['key:a'], decision: 'allow', rule: null, bytes: 3 })
  t.same(lines[2], { level: 'info', time, ...fields })
  t.equal(lines[3].target, 'other')
  t.notOk(sink.text().includes('hunter2'))
})

t.test('an operation serialized once per Operation object splices into the same line as the whole event', async t => {
  const sink = auditSink()
  const audit = createAuditLog({ destination: 'stdout', stream: sink.stream })
  const fields = { session: 'ses_o', principal: { sub: 'alice', groups: ['agents'] }, target: 'cache', protocol: 'redis' as const }
  const head = auditHead(fields)
  const time = '2026-01-01T00:00:00.000Z'
  const op = { class: 'read' as const, resources: ['key:"a"', 'b\u2028\\'], fingerprint: 'f00d', statement: 'GET "a"\n' }
  const rest = { decision: 'allow' as const, rule: null, bytes: 3, masked: 0, durationMs: 1, error: undefined }
  t.equal(operationJson(op), operationJson(op), 'made once, the same text after')
  audit.writeSession(head, time, rest, operationJson(op))
  audit.writeSession(head, time, { ...op, ...rest })
  audit.writeSession(head, time, {}, operationJson(op))
  // a credential-named field in the event still takes the general path, and is dropped there
  audit.writeSession(head, time, { ...({ token: 'hunter2' } as object), bytes: 1 }, operationJson(op))
  const text = sink.text().split('\n')
  t.equal(text[0], text[1], 'byte for byte the line of the whole event')
  t.same(sink.lines()[2], { level: 'info', time, ...fields, ...op })
  t.same(sink.lines()[3], { level: 'info', time, ...fields, ...op, bytes: 1 })
  t.notOk(sink.text().includes('hunter2'))
})

t.test('an outcome written field by field is byte for byte the line of the whole event', async t => {
  const sink = auditSink()
  const audit = createAuditLog({ destination: 'stdout', stream: sink.stream })
  const head = auditHead({ session: 'ses_w', principal: { sub: 'alice', groups: ['agents'] }, target: 'cache', protocol: 'redis' })
  const time = '2026-01-01T00:00:00.000Z'
  const op = { class: 'read' as const, resources: ['key:"a"'], fingerprint: 'f00d', statement: 'GET "a"\n' }
  const outcomes = [
    { decision: 'allow' as const, rule: null, approvalId: undefined, bytes: 3, masked: 0, durationMs: 0, error: undefined },
    { decision: 'block' as const, rule: 'no "admin"\u2028', bytes: 40, masked: 0, durationMs: 1.5, error: 'blocked: \u0000 é' },
    { decision: 'allow' as const, rule: 'r', approvalId: 'apr_x', rows: 2, bytes: 0, masked: 2, durationMs: -0 },
    { decision: 'approve' as const, bytes: Infinity, durationMs: Number.NaN },
    {},
  ]
  for (const o of outcomes) {
    audit.writeOutcome(head, time, operationJson(op), o)
    audit.writeSession(head, time, o, operationJson(op))
  }
  const text = sink.text().split('\n')
  for (let i = 0; i < outcomes.length; i++) t.equal(text[2 * i], text[2 * i + 1], `outcome ${i}`)
  // only the outcome's own fields reach the line, whatever else the object holds
  audit.writeOutcome(head, time, operationJson(op), { bytes: 1, ...({ token: 'hunter2' } as object) })
  t.notOk(sink.text().includes('hunter2'))
})

t.test('a file stream handed in gets lines in batches, all there after a flush', async t => {
  const dir = await tempDir(t)
  const file = join(dir, 'audit.jsonl')
  const stream = createWriteStream(file)
  const audit = createAuditLog({ destination: file, stream })
  const head = auditHead({ session: 'ses_b', target: 't', protocol: 'http' })
  for (let i = 0; i < 1000; i++) audit.writeSession(head, 'x', { bytes: i })
  await audit.flush()
  await new Promise<void>(resolve => stream.end(resolve))
  const lines = (await readFile(file, 'utf8')).trim().split('\n').map(l => JSON.parse(l) as { bytes: number })
  t.equal(lines.length, 1000)
  t.same(lines.map(l => l.bytes), Array.from({ length: 1000 }, (_, i) => i))
})

t.test('an audit file that cannot be written says so, drops nothing silently, and recovers', async t => {
  const full = createAuditLog({ destination: '/dev/full' })
  t.teardown(() => full.close())
  t.equal(full.failure(), undefined, 'nothing failed before the first write')
  full.write({ time: 't', session: 's', target: 'db', protocol: 'postgres', class: 'read' })
  await full.flush()
  t.match(full.failure()?.message, /^audit log \/dev\/full: .*(ENOSPC|no space)/i, 'a write error (ENOSPC) is the failure')
  full.write({ time: 't', session: 's', target: 'db', protocol: 'postgres', class: 'read' })
  await full.flush()
  t.ok(full.failure(), 'still failed: /dev/full never takes a line')
})

t.test('a disk that does not keep up: past the backlog bound the sink fails, then the lost lines are counted once it writes again', async t => {
  const { execFileSync } = await import('node:child_process')
  const { createReadStream } = await import('node:fs')
  const dir = await tempDir(t)
  // a FIFO without a reader: open() does not return, so every line waits in the sink's queue
  const fifo = join(dir, 'audit.fifo')
  execFileSync('mkfifo', [fifo])
  const audit = createAuditLog({ destination: fifo })
  let reader: ReturnType<typeof createReadStream> | undefined
  const read: Buffer[] = []
  const openReader = () => {
    reader ??= createReadStream(fifo).on('data', d => read.push(d as Buffer))
  }
  // whatever happens, the pending open() must return, or it holds a thread of the pool for good
  t.teardown(async () => {
    openReader()
    await audit.close()
    reader?.destroy()
  })
  const statement = 'x'.repeat(64 * 1024)
  let lines = 0
  while (!audit.failure() && lines < 4000) {
    audit.write({ time: 't', session: 's', target: 'db', protocol: 'postgres', statement })
    lines++
    if (lines % 64 === 0) await new Promise(r => setImmediate(r))
  }
  t.match(audit.failure()?.message, /bytes of lines wait for the disk \(at most 134217728\): it is not keeping up/)
  t.ok(lines > 2000 && lines < 2100, `failed once 128 MiB waited (${lines} lines of 64 KiB)`)
  audit.write({ time: 't', session: 's', target: 'db', protocol: 'postgres', class: 'read', statement: 'while failed' })
  openReader()
  const until = Date.now() + 15_000
  while (audit.failure() && Date.now() < until) await new Promise(r => setTimeout(r, 100))
  t.equal(audit.failure(), undefined, 'written again once the disk takes lines')
  audit.write({ time: 't2', session: 's', target: 'db', protocol: 'postgres', class: 'read', statement: 'after' })
  await audit.flush()
  await new Promise(r => setTimeout(r, 200))
  const got = Buffer.concat(read).toString().trim().split('\n').map(l => JSON.parse(l) as Record<string, unknown>)
  // the lines still in the audit log's own batch when it failed (the last one, the one written
  // while failed) are either lost and counted, or (handed over while the line about the loss was on
  // its way) queued behind it: never dropped without a count
  const kept = got.filter(l => l.time === 't').length
  t.same(got.map(l => [l.level, l.log ?? l.time, l.lost]), [
    ['error', 'audit lines lost: the audit log could not be written', lines + 1 - kept],
    ...Array.from({ length: kept }, () => ['info', 't', undefined]),
    ['info', 't2', undefined],
  ], 'the line about the loss, then the next lines; none of the lost ones')
  t.ok(kept <= 2, 'at most what was in the batch being gathered')
})

/** the same audit log twice: to a file and to a stream, to compare their bytes */
async function fileAndStream(t: { teardown(fn: () => unknown): void }) {
  const file = join(await tempDir(t), 'audit.jsonl')
  const sink = auditSink()
  return { file, sink, toFile: createAuditLog({ destination: file }), toStream: createAuditLog({ destination: 'stdout', stream: sink.stream }) }
}

t.test('a file destination gets byte for byte the lines a stream gets, whatever they hold and however many', async t => {
  const { file, sink, toFile, toStream } = await fileAndStream(t)
  const head = auditHead({ session: 'ses_b', principal: { sub: 'ålice', groups: ['agents'] }, target: 'docs-db', protocol: 'postgres' })
  const time = '2026-01-01T00:00:00.000Z'
  const op = { class: 'read' as const, resources: ['public.t'], fingerprint: 'f00d', statement: "SELECT 'ünïcødé 😀 \u2028' FROM t" }
  // an exact copy of an Operation (a borrowed skeleton hit) splices the same text
  const copy = Object.freeze(withAuditFieldsOf({ ...op }, op))
  t.equal(operationJson(copy), operationJson(op))
  // a copy of a copy is linked to the first original; the link is a property nothing else sees
  const linked = Object.freeze(withAuditFieldsOf({ ...op }, copy))
  t.equal(operationJson(linked), operationJson(op), 'a copy of a copy splices the same text')
  t.same(Object.keys(linked), Object.keys(op), 'the link is not one of its keys')
  t.equal(JSON.stringify(linked), JSON.stringify(op), 'nor in its JSON')
  const changed = { ...linked, class: 'admin' as const }
  t.match(operationJson(changed), /^"class":"admin"/, 'a spread of it with another class is serialized for itself')
  // enough lines to cross several batch buffers (hand-overs in the middle of the run)
  for (let i = 0; i < 3000; i++) {
    for (const audit of [toFile, toStream]) {
      audit.writeSession(head, time, { decision: 'allow', rule: i % 2 ? null : 'r', rows: i, bytes: 100, masked: 0, durationMs: 0.25 }, operationJson(i % 3 ? copy : op))
      audit.writeSession(head, time, {}, operationJson(op))
      audit.writeSession(head, time, { error: 'x'.repeat(i % 500) })
      if (i % 1000 === 0) audit.log('operational', { session: 'ses_b', n: i })
    }
  }
  await toFile.close()
  const fromFile = await readFile(file, 'utf8')
  t.equal(fromFile.split('\n').length, 9004)
  t.equal(fromFile.replace(/"time":"[^"]+","log"/g, '"log"'), sink.text().replace(/"time":"[^"]+","log"/g, '"log"'), 'the same bytes')
  t.same(JSON.parse(fromFile.split('\n')[0]), { level: 'info', time, ...head.fields, ...op, decision: 'allow', rule: 'r', rows: 0, bytes: 100, masked: 0, durationMs: 0.25 })
})

t.test('an outcome line copied from bytes made once (head, operation, time) is byte for byte the line a stream gets', async t => {
  const { file, sink, toFile, toStream } = await fileAndStream(t)
  const heads = [
    auditHead({ session: 'ses_o', principal: { sub: 'ålice', groups: ['agents'] }, target: 'cache', protocol: 'redis' }),
    auditHead({ session: 'ses_p', target: 'cache', protocol: 'redis', scope: 'tenant=ü' }),
  ]
  const ops = [
    { class: 'read' as const, resources: ['key:"ä"\u2028'], fingerprint: 'f00d', statement: 'GET "ä" 😀' },
    { class: 'write' as const, resources: [], fingerprint: 'beef', statement: 'SET k ?' },
  ]
  // an exact copy (withAuditFieldsOf) shares the original's bytes
  const copy = Object.freeze(withAuditFieldsOf({ ...ops[0]! }, ops[0]!))
  t.equal(operationText(copy), operationText(ops[0]!))
  // the common outcome (decision, rule, whole counts) is written from bytes and digits, any other as text
  const outcomes = [
    { decision: 'allow' as const, rule: 'r', bytes: 3, masked: 0, durationMs: 0 },
    { decision: 'block' as const, rule: 'no "admin" ✋', bytes: 40, masked: 0, durationMs: 1.5, error: 'blocked: \u0000 é' },
    {},
    { decision: 'allow' as const, rule: null, rows: 1234567890, bytes: 2147483647, masked: 10, durationMs: -0 },
    { decision: 'allow' as const, rule: 'ünï', bytes: 2147483648, masked: 9, durationMs: 99 },
    { decision: 'approve' as const, rule: 'r', approvalId: 'apr_1', bytes: 0, durationMs: 7 },
    { decision: 'block' as const, rule: 'r', bytes: Number.NaN, masked: -1, durationMs: Infinity },
    { decision: 'allow' as const, rule: 'r' },
    { rule: 'r', bytes: 5 },
  ]
  // enough lines to cross several batch buffers; the time moves every 700 lines
  for (let i = 0; i < 6000; i++) {
    const time = new Date(Date.UTC(2026, 0, 1) + Math.floor(i / 700)).toISOString()
    const op = i % 5 === 0 ? copy : ops[i % 2]!
    for (const audit of [toFile, toStream]) audit.writeOutcome(heads[i % 2]!, time, operationText(op), outcomes[i % outcomes.length]!)
    // the text form (a caller with only operationJson) writes the same line
    toFile.writeOutcome(heads[0]!, time, operationJson(op), outcomes[0]!)
    toStream.writeOutcome(heads[0]!, time, operationText(op), outcomes[0]!)
  }
  await toFile.close()
  const fromFile = await readFile(file, 'utf8')
  t.equal(fromFile.split('\n').length, 12001)
  t.equal(fromFile, sink.text(), 'the same bytes')
  t.same(JSON.parse(fromFile.split('\n')[0]!), { level: 'info', time: '2026-01-01T00:00:00.000Z', ...heads[0]!.fields, ...copy, ...outcomes[0] })
})

t.test("the bytes kept for a cached Operation's audit fields keep no pooled 8 KiB slab alive", async t => {
  // Buffer.from of a short text is a slice of Node's shared 8 KiB pool; an Operation held by a
  // classifier cache keeps its audit bytes (op.bytes) for as long as it lives, and a slice kept alive
  // keeps its whole slab: 2,033 cached Operations held 15.9 MiB of slabs in a fuzz run's gateway.
  // Here each Operation's first line is written between two other pooled allocations (what the
  // codecs do between one new statement and the next), so every slice would start a slab of its own.
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  const { toFile } = await fileAndStream(t)
  const head = auditHead({ session: 'ses_slab', target: 'docs-db', protocol: 'postgres' })
  const time = '2026-01-01T00:00:00.000Z'
  const N = 2000
  const kept: ReturnType<typeof operationText>[] = []
  gc()
  const before = process.memoryUsage().arrayBuffers
  for (let i = 0; i < N; i++) {
    Buffer.from('x'.repeat(3000))
    const op = { class: 'read' as const, resources: ['public.t'], fingerprint: `f${i}`, statement: `SELECT * FROM t WHERE id = ${i}` }
    const text = operationText(op)
    toFile.writeOutcome(head, time, text, { decision: 'allow', rule: 'r', rows: 1, bytes: 10, masked: 0, durationMs: 0 })
    Buffer.from('y'.repeat(3000))
    kept.push(text)
  }
  await toFile.close()
  gc()
  const held = process.memoryUsage().arrayBuffers - before
  const textBytes = kept.reduce((n, k) => n + (k.bytes?.length ?? 0), 0)
  t.ok(kept.every(k => k.bytes !== undefined && k.bytes.buffer.byteLength === k.bytes.length), 'each is its own ArrayBuffer of its own length')
  // pinned slabs would be N × 8 KiB = 15.6 MiB; the texts themselves are ~0.2 MiB
  t.ok(held < textBytes + 2 * 1024 * 1024, `${N} Operations' audit bytes keep ${(held / 1024).toFixed(0)} KiB of array buffers (their text: ${(textBytes / 1024).toFixed(0)} KiB)`)
})
