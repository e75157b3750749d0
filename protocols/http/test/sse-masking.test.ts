import t from 'tap'
import { Readable } from 'node:stream'
import { holdBack } from '@portcullis/core'
import { SseMasker } from '../src/sse.ts'
import { stubMasks } from './stub-masks.ts'

const chunk = (content: string | undefined, finish: string | null = null) =>
  `data: ${JSON.stringify({ id: 'c1', object: 'chat.completion.chunk', model: 'm', choices: [{ index: 0, delta: content === undefined ? {} : { content }, finish_reason: finish }] })}\n\n`

async function run(input: string[], plan = stubMasks()): Promise<{ text: string; masked: number; batches: number }> {
  let batches = 0
  const masker = new SseMasker(plan, { maxEventBytes: 1 << 20, onBatch: () => batches++ })
  let text = ''
  for await (const part of Readable.from(input.map(s => Buffer.from(s))).pipe(masker)) text += part.toString()
  return { text, masked: masker.masked, batches }
}

const contents = (text: string) =>
  text
    .split('\n\n')
    .filter(e => e.startsWith('data: {'))
    .map(e => JSON.parse(e.slice(6)).choices[0].delta.content ?? '')
    .join('')

t.test('a secret split over several deltas is masked, and the text around it still arrives', async t => {
  const secret = 'sk-proj-Abc123def456ghi789'
  const out = await run([chunk(''), chunk('my key is '), chunk('sk-'), chunk('proj-Ab'), chunk('c123def456ghi789'), chunk(' ok, bye.'), chunk(undefined, 'stop'), 'data: [DONE]\n\n'])
  const text = contents(out.text)
  t.equal(text, 'my key is [REDACTED] ok, bye.')
  t.notOk(out.text.includes('proj-Ab'), 'no piece of the secret reaches the client')
  t.equal(out.masked, 1)
  t.notOk(out.text.includes(secret))
  t.match(out.text, /data: \[DONE\]\n\n$/, 'the stream still ends with [DONE]')
  t.match(out.text, /"finish_reason":"stop"/)
})

t.test('an email split across deltas and events split across network chunks are masked', async t => {
  const events = [chunk('write to bo'), chunk('b@exam'), chunk('ple.com please'), chunk(undefined, 'stop'), 'data: [DONE]\n\n'].join('')
  // cut the byte stream at odd places, inside events and inside lines
  const parts: string[] = []
  for (let i = 0; i < events.length; i += 7) parts.push(events.slice(i, i + 7))
  const out = await run(parts)
  t.equal(contents(out.text), 'write to [REDACTED] please')
  t.ok(out.batches > 1, 'events are sent as they become safe, not all at the end')
})

t.test('held-back text is flushed at stream end even without [DONE]', async t => {
  const out = await run([chunk('short tail')])
  t.equal(contents(out.text), 'short tail')
})

t.test('what is held back stays bounded by the longest match', async t => {
  const plan = stubMasks()
  const held = { text: '', from: 0 }
  let emitted = ''
  let longest = 0
  for (let i = 0; i < 2000; i++) {
    const r = holdBack(held, 'lorem ipsum ', plan.maxMatchLength, plan)
    emitted += r.emit
    longest = Math.max(longest, held.text.length - held.from)
  }
  t.ok(longest <= plan.maxMatchLength, 'hold-back stays within maxMatchLength')
  t.equal(emitted + held.text.slice(held.from), 'lorem ipsum '.repeat(2000))
})

t.test('non-delta events are masked as JSON, field rules included; untouched events pass as they came', async t => {
  const plan = stubMasks({ fields: { 'user.email': 'redact' } })
  const untouched = 'event: ping\ndata: {"ok":true}\n\n'
  const out = await run([untouched, 'data: {"user":{"email":"x"},"note":"mail a@b.io"}\n\n', ': comment\n\n'], plan)
  t.ok(out.text.startsWith(untouched))
  t.match(out.text, /"email":"\[REDACTED\]"/)
  t.match(out.text, /"note":"mail \[REDACTED\]"/)
  t.equal(out.masked, 2)
})

t.test('an event larger than the inspection limit fails the stream closed', async t => {
  const masker = new SseMasker(stubMasks(), { maxEventBytes: 100 })
  const src = Readable.from([Buffer.from('data: ' + 'x'.repeat(500))])
  await t.rejects(async () => {
    for await (const _ of src.pipe(masker)) void _
  }, /larger than the inspection limit/)
})

t.test('with the real detectors, raw bytes cut at every place and deltas cut anywhere mask as the whole reply would', async t => {
  const { compileMaskPlan } = await import('@portcullis/core')
  const plan = compileMaskPlan([{ id: 'pii', detectors: ['email', 'api-key', 'card'], method: 'redact' }], { target: 't', subject: 's', groups: [] }, { hashKey: Buffer.alloc(32, 1) })
  const reply = 'Mail jürgen.o@exämple.de or bob@example.com, key sk-proj-Abc123def456ghi789jkl0, card 4111 1111 1111 1111. Done'
  const wanted = plan.scan(reply).text
  // the reply in deltas cut at every second place, then the bytes of the stream cut at every place
  const deltas: string[] = []
  for (let i = 0; i < reply.length; i += 2) deltas.push(reply.slice(i, i + 2))
  const bytes = Buffer.from([chunk(''), ...deltas.map(d => chunk(d)), chunk(undefined, 'stop'), 'data: [DONE]\n\n'].join(''))
  let bad = 0
  for (let c = 0; c <= bytes.length && bad === 0; c++) {
    const m = new SseMasker(plan, { maxEventBytes: 1 << 20 })
    const out = m.maskChunk(bytes.subarray(0, c)) + m.maskChunk(bytes.subarray(c)) + m.maskEnd()
    if (contents(out) !== wanted || /bob@|jürgen|Abc123|1111 1111/.test(out)) {
      bad++
      t.fail(`cut at byte ${c}`, { found: contents(out), wanted })
    }
  }
  t.equal(bad, 0, `all ${bytes.length + 1} cuts`)
  // and the deltas themselves cut at every place of the reply, two events
  for (let c = 0; c <= reply.length; c++) {
    const out = await run([chunk(reply.slice(0, c)), chunk(reply.slice(c)), 'data: [DONE]\n\n'], plan)
    if (contents(out.text) !== wanted) {
      t.fail(`delta cut at ${c}`, { found: contents(out.text), wanted })
      return
    }
  }
  t.pass('every two-delta cut')
})

t.test('held text flushed as an event of its own is masked like any event, field rules included', async t => {
  const plan = stubMasks({ fields: { 'user.email': 'redact' } })
  const ev = (content: string) => `data: ${JSON.stringify({ id: 'c1', user: { email: 'x@y.io' }, note: 'from a@b.io', choices: [{ index: 0, delta: { content }, finish_reason: null }] })}\n\n`
  // the stub holds back its whole longest match, so the delta goes out at the end, rebuilt
  const out = await run([ev('tail without end')], plan)
  t.notOk(out.text.includes('x@y.io'), 'the field rule held')
  t.notOk(out.text.includes('a@b.io'), 'the detectors ran on the other fields')
  t.equal(contents(out.text), 'tail without end')
  t.equal(out.masked, 4, 'the two values in each of the two events sent')
})

t.test('a held Responses API delta goes out under its event name, which cannot break the line or carry a secret', async t => {
  const ev = (type: string, delta: string) => `event: x\ndata: ${JSON.stringify({ type, item_id: 'i1', output_index: 0, content_index: 0, delta })}\n\n`
  const type = 'bob@example.com\ndata: injected\n.delta'
  const out = await run([ev(type, 'tail held back')])
  t.notOk(out.text.includes('bob@example.com'), 'the type is read by the detectors')
  t.notOk(/^data: injected/m.test(out.text), 'no line of its own')
  t.match(out.text, /tail held back/)
})

t.test('an email split across Anthropic content_block_delta events is masked, held text goes out under the event name', async t => {
  const { compileMaskPlan } = await import('@portcullis/core')
  const plan = compileMaskPlan([{ id: 'pii', detectors: ['email', 'api-key'], method: 'redact' }], { target: 't', subject: 's', groups: [] }, { hashKey: Buffer.alloc(32, 1) })
  const ev = (text: string, field = 'text', type = 'text_delta') => `event: content_block_delta\ndata: ${JSON.stringify({ type: 'content_block_delta', index: 0, delta: { type, [field]: text } })}\n\n`
  const input = ['event: message_start\ndata: {"type":"message_start","message":{"id":"m1"}}\n\n', ev('write to bo'), ev('b@exam'), ev('ple.com and sk-proj-Abc123'), ev('def456ghi789jkl0'), 'event: content_block_stop\ndata: {"type":"content_block_stop","index":0}\n\n']
  const out = await run(input, plan)
  const texts = out.text
    .split('\n\n')
    .filter(e => e.includes('content_block_delta'))
    .map(e => JSON.parse(e.slice(e.indexOf('data: ') + 6)).delta.text)
    .join('')
  t.equal(texts, 'write to [REDACTED:email] and [REDACTED:api-key]')
  t.notOk(/bob@|Abc123/.test(out.text))
  for (const e of out.text.split('\n\n').filter(e => e.includes('"content_block_delta"'))) t.match(e, /^event: content_block_delta\n/, 'each delta event keeps its name')
  // a tool call's JSON streamed in pieces is one text too
  const tool = await run([ev('{"to":"ada@exa', 'partial_json', 'input_json_delta'), ev('mple.com"}', 'partial_json', 'input_json_delta')], plan)
  t.notOk(tool.text.includes('ada@'), 'partial_json is masked as one stream')
})

t.test('two choices taking turns (n: 2) each keep their held text: a key split across one choice’s deltas is masked', async t => {
  const { compileMaskPlan } = await import('@portcullis/core')
  const plan = compileMaskPlan([{ id: 'pii', detectors: ['email', 'api-key'], method: 'redact' }], { target: 't', subject: 's', groups: [] }, { hashKey: Buffer.alloc(32, 1) })
  const ev = (index: number, content: string) => `data: ${JSON.stringify({ id: 'c', choices: [{ index, delta: { content }, finish_reason: null }] })}\n\n`
  const a = ['key sk-proj-', 'Abc123def4', '56ghi789jkl0 ok']
  const b = ['mail bob@exa', 'mple.com', ' bye']
  const input: string[] = []
  for (let i = 0; i < 3; i++) input.push(ev(0, a[i]), ev(1, b[i]))
  input.push(`data: ${JSON.stringify({ id: 'c', choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })}\n\n`, 'data: [DONE]\n\n')
  const out = await run(input, plan)
  const per = new Map<number, string>()
  for (const e of out.text.split('\n\n').filter(e => e.startsWith('data: {'))) {
    for (const c of JSON.parse(e.slice(6)).choices) per.set(c.index, (per.get(c.index) ?? '') + (c.delta.content ?? ''))
  }
  t.equal(per.get(0), 'key [REDACTED:api-key] ok')
  t.equal(per.get(1), 'mail [REDACTED:email] bye')
})

t.test('held slots stay bounded: past 16 at once the oldest goes out', async t => {
  const plan = stubMasks()
  const ev = (index: number, content: string) => `data: ${JSON.stringify({ choices: [{ index, delta: { content } }] })}\n\n`
  const masker = new SseMasker(plan, { maxEventBytes: 1 << 20 })
  let out = ''
  for (let i = 0; i < 40; i++) out += masker.maskChunk(Buffer.from(ev(i, `text${i}`)))
  t.ok(out.includes('text0') && out.includes('text23'), 'the oldest slots were sent')
  t.notOk(out.includes('text24'), 'the newest 16 are still held')
  out += masker.maskEnd()
  t.ok(out.includes('text39'), 'all of it at the end')
})
