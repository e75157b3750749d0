import t from 'tap'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createWriteStream } from 'node:fs'
import { auditHead, createAuditLog, operationJson } from '../src/audit/audit.ts'
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
