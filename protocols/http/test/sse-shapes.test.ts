// The shape path (sse-shape.ts: an event that is the last delta event with another string in it is
// masked without a parse) against the full path (every event parsed and walked, `shapes: false`):
// for generated streams — OpenAI chat and completions chunks, Responses API deltas, several choices,
// escapes of every kind in keys and strings, duplicate keys, strings that are not JSON between a
// known head and tail, event lines, comments, plain text, [DONE] — cut into random network chunks,
// every chunk's output and the masked count must be the same, byte for byte. Then with secrets split
// across deltas, chunks and escape forms, no secret reaches the client's text.
import t from 'tap'
import { compileMaskPlan, type MaskPlan } from '@portcullis/core'
import { SseMasker } from '../src/sse.ts'
import { jsonString as quoteJson, lastString, stringEnd } from '../src/sse-shape.ts'
import { JSON_ESCAPED } from '@portcullis/core'
import { mulberry32 } from '@portcullis/fixtures/random'

/** a small seeded generator, so that a failure names a stream that can be made again */
const rng = mulberry32

const scope = { target: 't', subject: 's', groups: [] }
const hashKey = Buffer.alloc(32, 3)
const PLANS: [string, MaskPlan][] = [
  ['detectors and field rules', compileMaskPlan([{ id: 'pii', detectors: ['email', 'api-key'], fields: ['user.email', 'meta.secret'], method: 'redact' }], scope, { hashKey })],
  ['detectors, hash', compileMaskPlan([{ id: 'pii', detectors: ['email', 'api-key', 'card'], method: 'hash' }], scope, { hashKey })],
  ['field rules only (inspect)', compileMaskPlan([{ id: 'f', fields: ['nomatch', 'model', 'user.email'], method: 'redact' }], scope, { hashKey })],
  ['a field rule on the delta itself', compileMaskPlan([{ id: 'f', detectors: ['email'], fields: ['choices.delta.content'], method: 'partial' }], scope, { hashKey })],
  ['replacements that need escapes', escapingPlan()],
]

/**
 * The email detector with a replacement JSON must escape ('[RED"AC\\TED]', plainReplacements false):
 * the shape path must then scan what it sends (jsonString), never put it between quotes as it is.
 * A user pattern's label could be such a text, but its 1,024-character hold-back keeps these short
 * streams' text back to the end, where it goes out the full way; this plan's email holds back little.
 */
function escapingPlan(): MaskPlan {
  const base = compileMaskPlan([{ id: 'e', detectors: ['email'], method: 'redact' }], scope, { hashKey })
  const odd = (s: string) => s.replaceAll('[REDACTED:email]', '[RED"AC\\TED]')
  return {
    empty: base.empty,
    hasDetectors: base.hasDetectors,
    detectorMethod: base.detectorMethod,
    maxMatchLength: base.maxMatchLength,
    hasColumnRules: base.hasColumnRules,
    hasFieldRules: base.hasFieldRules,
    hasKeyRules: base.hasKeyRules,
    plainReplacements: false,
    forColumn: (schema, table, column) => base.forColumn(schema, table, column),
    forField: path => base.forField(path),
    forKey: key => base.forKey(key),
    apply: (method, value) => base.apply(method, value),
    scan: text => {
      const r = base.scan(text)
      return { ...r, text: odd(r.text) }
    },
    scanStream: (text, from, final) => {
      const r = base.scanStream(text, from, final)
      return { ...r, text: odd(r.text) }
    },
  }
}

const SECRETS = ['ada.lovelace@example.com', 'bob@mail.example.org', 'sk-proj-Abc123def456ghi789jkl0mno', 'sk-Zyx987wvu654tsr321qpo0']
const WORDS = ['Hello', ' world', '. ', 'the ', 'quarterly', ' numbers', '\n', ' "quoted" ', 'naïve ', 'emoji 😀 ', 'tab\t', '/path/', '\\back', '@', '.com', 'sk-', 'proj-', 'x'.repeat(40), '\u2028', '']

/** a JSON string of `s`, each character spelled one of the ways JSON allows (\u0040, \/ …) */
function jsonString(s: string, r: () => number, escapes: boolean): string {
  if (!escapes || r() < 0.4) return JSON.stringify(s)
  let out = '"'
  for (const ch of s) {
    const c = ch.codePointAt(0)!
    const roll = r()
    if (ch === '"' || ch === '\\' || c < 0x20) out += roll < 0.5 ? JSON.stringify(ch).slice(1, -1) : unicodeEscape(ch, roll < 0.75)
    else if (ch === '/' && roll < 0.5) out += '\\/'
    else if (roll < 0.15) out += unicodeEscape(ch, roll < 0.07)
    else out += ch
  }
  return out + '"'
}

/** \uXXXX for each UTF-16 unit (a pair for an emoji), hex digits in either case */
const unicodeEscape = (ch: string, upper = ch.length % 2 === 0): string => {
  let out = ''
  for (let i = 0; i < ch.length; i++) {
    const hex = ch.charCodeAt(i).toString(16).padStart(4, '0')
    out += '\\u' + (upper ? hex.toUpperCase() : hex)
  }
  return out
}

function pick<T>(r: () => number, xs: readonly T[]): T {
  return xs[Math.floor(r() * xs.length)]
}

/** deltas of a reply that holds secrets, cut at random places */
function deltasOf(r: () => number, n: number): string[] {
  let text = ''
  // a secret is followed by a character no address continues with (a word right after it would
  // make another token, 'x@example.comproj-', which is no address to mask)
  for (let i = 0; i < n; i++) text += r() < 0.15 ? ' ' + pick(r, SECRETS) + pick(r, [' ', '.', ',', '\n', '—']) : pick(r, WORDS)
  const out: string[] = []
  for (let i = 0; i < text.length; ) {
    const len = Math.floor(r() * 12)
    out.push(text.slice(i, i + len))
    i += len
  }
  return out
}

/** one chat chunk written by hand: key order, spacing and escapes vary, duplicate keys sometimes */
function chatChunk(r: () => number, head: string, index: number, content: string, escapes: boolean, field: 'content' | 'text'): string {
  const str = (s: string) => jsonString(s, r, escapes)
  const key = (k: string) => (escapes && r() < 0.05 ? '"' + k.slice(0, 1) + '\\u00' + k.charCodeAt(1).toString(16) + k.slice(2) + '"' : '"' + k + '"')
  const sp = r() < 0.1 ? ' ' : ''
  const holder = field === 'text' ? `${key('text')}:${sp}${str(content)}` : `${key('delta')}:{${key('content')}:${sp}${str(content)}${r() < 0.03 ? `,"content":${str(' dup ')}` /* JSON.parse keeps this one; spaced, so it glues to no word */ : ''}}`
  const extra = r() < 0.05 ? `,"user":{"email":${str('carol@example.net')}}` : r() < 0.05 ? `,"meta":{"secret":[1,{"a":"b"}]}` : ''
  return `{${head},"choices":[{"index":${index},${holder},"finish_reason":null,"logprobs":null}]${extra}}`
}

/** a JSON string that is not one: what JSON.parse refuses between a known head and tail */
const NOT_STRINGS = ['"bad \\x escape"', '"ctrl \u0001 char"', '"cut \\u12"', '"ends in \\"', '"two" "strings"', '"raw\nnewline"']

function streamOf(seed: number): { bytes: Buffer; plain: boolean } {
  const r = rng(seed)
  const escapes = r() < 0.6
  const events: string[] = []
  const id = pick(r, ['chatcmpl-1', 'chatcmpl-\\u0032', 'x@example.com'])
  const heads = [`"id":"${id}","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o-mini"`, `"id":"${id}","model":"m","system_fingerprint":null`]
  let head = pick(r, heads)
  const shape = pick(r, ['chat', 'chat', 'completions', 'responses', 'anthropic', 'mixed'] as const)
  const lines = pick(r, ['event: content_block_delta\n', 'event: content_block_delta\n', 'event: content_block_delta\r\nid: 7\r', ': c\nevent: content_block_delta\n', 'event: content_block_delta\nid: ann@example.com\n', 'event: content_block_delta\nbogus line\n', 'data\nevent: content_block_delta\n', 'after'])
  events.push(`data: {${head},"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`)
  for (const d of deltasOf(r, 10 + Math.floor(r() * 40))) {
    const roll = r()
    if (shape === 'anthropic' || (shape === 'mixed' && roll < 0.1)) {
      const data = `data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":${jsonString(d, r, escapes)}}}`
      // the lines before the data, the same all stream long (the shape keeps them); one with data
      // that is not the last line
      events.push(lines === 'after' ? `${data}\nid: 9` : `${lines}${data}`)
    } else if (shape === 'responses' || (shape === 'mixed' && roll < 0.2)) {
      events.push(`data: {"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":${shape === 'mixed' && r() < 0.1 ? 1 : 0},"delta":${jsonString(d, r, escapes)}}`)
    } else events.push(`data: ${chatChunk(r, head, shape === 'mixed' && roll < 0.3 ? 1 : 0, d, escapes, shape === 'completions' ? 'text' : 'content')}`)
    const odd = r()
    if (shape === 'mixed' && odd < 0.05) head = pick(r, heads)
    else if (shape === 'mixed' && odd < 0.1) {
      // the last event's head and tail exactly, with no JSON string between them
      events.push(`data: ${chatChunk(rng(1), head, 0, 'PLACEHOLDER', false, 'content').replace('"PLACEHOLDER"', pick(r, NOT_STRINGS))}`)
    }
    else if (shape === 'mixed' && odd < 0.13) events.push(`event: note\ndata: {${head},"choices":[{"index":0,"delta":{"content":"after an event line"}}]}`)
    else if (shape === 'mixed' && odd < 0.15) events.push(': keep-alive')
    else if (shape === 'mixed' && odd < 0.17) events.push('data: plain text with dave@example.com')
    else if (shape === 'mixed' && odd < 0.19) events.push(`data: {${head},"choices":[{"index":0,"delta":{"content":"a"}},{"index":1,"delta":{"content":"b"}}]}`)
    else if (shape === 'mixed' && odd < 0.2) events.push(`data:{${head},"choices":[{"index":0,"delta":{"content":"no space after the colon"}}]}`)
  }
  events.push(`data: {${head},"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`)
  if (r() < 0.8) events.push('data: [DONE]')
  const sep = () => pick(r, ['\n\n', '\n\n', '\n\n', '\r\n\r\n', '\n\r\n', '\r\r'])
  return { bytes: Buffer.from(events.map(e => e + sep()).join('')), plain: shape !== 'mixed' }
}

/** the stream cut at random bytes (inside characters too) */
function cuts(r: () => number, bytes: Buffer): Buffer[] {
  const out: Buffer[] = []
  for (let i = 0; i < bytes.length; ) {
    const len = 1 + Math.floor(r() * (r() < 0.3 ? 8 : 400))
    out.push(bytes.subarray(i, i + len))
    i += len
  }
  return out
}

function through(plan: MaskPlan, pieces: readonly Buffer[], shapes: boolean): { out: string[]; masked: number; shaped: number; error?: string } {
  const m = new SseMasker(plan, { maxEventBytes: 1 << 20, shapes })
  const out: string[] = []
  try {
    for (const p of pieces) out.push(m.maskChunk(p))
    out.push(m.maskEnd())
  } catch (err) {
    return { out, masked: m.masked, shaped: m.shaped, error: (err as Error).message }
  }
  return { out, masked: m.masked, shaped: m.shaped }
}

t.test('events masked as the last event’s shape come out byte for byte as parsed and walked ones', async t => {
  const STREAMS = 600
  let fitted = 0
  let shaped = 0
  let events = 0
  for (const [name, plan] of PLANS) {
    let bad = 0
    for (let seed = 1; seed <= STREAMS && bad < 3; seed++) {
      const { bytes } = streamOf(seed)
      const pieces = cuts(rng(seed * 7919), bytes)
      const fast = through(plan, pieces, true)
      const full = through(plan, pieces, false)
      if (fast.error !== full.error || fast.masked !== full.masked || fast.out.length !== full.out.length || fast.out.some((o, i) => o !== full.out[i])) {
        bad++
        const i = fast.out.findIndex((o, i) => o !== full.out[i])
        t.fail(`${name}: stream ${seed} differs`, { chunk: i, fast: fast.out[i], full: full.out[i], masked: [fast.masked, full.masked], error: [fast.error, full.error] })
      }
      if (fast.out.join('') !== bytes.toString()) fitted++
      shaped += fast.shaped
      events += bytes.toString().split('data:').length - 1
    }
    t.equal(bad, 0, `${name}: ${STREAMS} streams alike`)
  }
  t.ok(fitted > 0, 'the streams were masked at all')
  t.ok(shaped > events / 4, `the shape path was taken (${shaped} of ${events} events)`)
})

t.test('secrets split across deltas, chunks and escape forms never reach the client through the shape path', async t => {
  const plan = PLANS[0][1]
  let leaks = 0
  let planted = 0
  for (let seed = 1; seed <= 400 && leaks < 3; seed++) {
    const { bytes, plain } = streamOf(seed)
    // mixed streams interleave other events, which end a delta's stream: what is sent before them
    // is masked on its own (sse-masking.test.ts), and one reply dealt out to two slots makes words
    // no reply has ('qua' + 'sk-…' is no key); here each reply is one stream
    if (!plain) continue
    const out = through(plan, cuts(rng(seed), bytes), true).out.join('')
    const texts = new Map<string, string>()
    for (const e of out.split('\n\n')) {
      const line = e.split(/\r\n|\n|\r/).find(l => l.startsWith('data: {'))
      if (line === undefined) continue
      const o = JSON.parse(line.slice(6))
      if (o.type === 'content_block_delta') texts.set('a' + o.index, (texts.get('a' + o.index) ?? '') + o.delta.text)
      if (typeof o.delta === 'string') texts.set('r' + o.content_index, (texts.get('r' + o.content_index) ?? '') + o.delta)
      for (const c of o.choices ?? []) texts.set(String(c.index), (texts.get(String(c.index)) ?? '') + (c.delta?.content ?? c.text ?? ''))
    }
    const source = bytes.toString()
    for (const s of SECRETS) {
      if (!source.includes(s.slice(0, 3))) continue
      planted++
      for (const text of texts.values()) {
        if (text.includes(s)) {
          leaks++
          t.fail(`stream ${seed}: ${s} reached the client`, { around: JSON.stringify(text.slice(Math.max(0, text.indexOf(s) - 40), text.indexOf(s) + s.length + 10)).replace(/[^\x20-\x7e]/g, c => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`) })
        }
      }
    }
  }
  t.equal(leaks, 0)
  t.ok(planted > 50, `secrets were planted (${planted})`)
})

t.test('jsonString is JSON.stringify for every UTF-16 unit, alone and amid text, and for surrogate pairs', async t => {
  let bad = 0
  for (let c = 0; c <= 0xffff && bad < 5; c++) {
    const ch = String.fromCharCode(c)
    for (const s of [ch, 'ab' + ch, ch + 'cd', 'ab' + ch + 'cd']) {
      if (quoteJson(s) !== JSON.stringify(s)) {
        bad++
        t.fail(`U+${c.toString(16)} in ${JSON.stringify(s)}`)
      }
    }
  }
  for (const s of ['', 'plain', '😀', 'a😀b', '\ud83d', 'a\ude00', '\ude00\ud83d', '[REDACTED:email]', 'x\u2028y', '\u007f'.repeat(3)]) {
    if (quoteJson(s) !== JSON.stringify(s)) {
      bad++
      t.fail(JSON.stringify(s))
    }
  }
  t.equal(bad, 0)
})

t.test('plainReplacements: only fixed replacements with nothing to escape', async t => {
  const plan = (rule: Record<string, unknown>) => compileMaskPlan([{ id: 'r', ...rule } as never], scope, { hashKey })
  t.equal(plan({ detectors: ['email', 'api-key', 'card'], method: 'redact' }).plainReplacements, true)
  t.equal(plan({ detectors: ['email'], method: 'null' }).plainReplacements, true)
  t.equal(plan({ detectors: ['email'], method: 'hash' }).plainReplacements, false, 'hash depends on the hit')
  t.equal(plan({ detectors: ['email'], method: 'partial' }).plainReplacements, false, 'partial keeps some of the hit')
  t.equal(plan({ detectors: ['email'], patterns: [{ name: 'a"b', regex: 'x+' }], method: 'redact' }).plainReplacements, false, 'a label with a quote')
  t.equal(plan({ detectors: ['email'], patterns: [{ name: 'a\\b', regex: 'x+' }], method: 'redact' }).plainReplacements, false, 'a label with a backslash')
  t.equal(plan({ detectors: ['email'], patterns: [{ name: 'naïve😀', regex: 'x+' }], method: 'redact' }).plainReplacements, false, 'a label with a surrogate pair')
})

t.test('stringEnd says a string is plain only when its text has nothing JSON.stringify escapes', async t => {
  let bad = 0
  for (let c = 0x20; c <= 0xffff && bad < 5; c++) {
    if (c === 34 || c === 92) continue
    const text = 'ab' + String.fromCharCode(c) + 'cd'
    const at = stringEnd('x"' + text + '"y', 1)
    if (at !== text.length + 3 || lastString.plain !== !JSON_ESCAPED.test(text)) {
      bad++
      t.fail(`U+${c.toString(16)}: end ${at}, plain ${lastString.plain}`)
    }
  }
  for (const [json, plain] of [['"a\\nb"', false], ['"\\u0041"', false], ['"\\/"', false], ['"😀"', false], ['"plain [x]"', true], ['""', true]] as const) {
    t.equal(stringEnd(json, 0), json.length, json)
    t.equal(lastString.plain, plain, json)
  }
  t.equal(bad, 0)
})
