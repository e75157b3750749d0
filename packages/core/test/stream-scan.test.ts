// scanStream: text that arrives in pieces (a streamed reply's deltas) is masked exactly as the whole
// text would be, wherever the pieces are cut, while holding back only what a later piece can change.
import t from 'tap'
import { compileMaskPlan, DETECTORS, STREAM_CONTEXT, type MaskingRuleConfig, type MaskPlan } from '../src/index.ts'

const hashKey = Buffer.from('stream-scan-test-key-0123456789ab')
const ctx = { target: 't', subject: 's', groups: [] }
const planFor = (rules: MaskingRuleConfig[]) => compileMaskPlan(rules, ctx, { hashKey })

/** feeds `pieces` as a streaming codec does (keeping the context scanStream asks for): all emitted text */
function streamed(plan: MaskPlan, pieces: readonly string[]): { text: string; count: number; maxHeld: number } {
  let held = ''
  let from = 0
  let out = ''
  let count = 0
  let maxHeld = 0
  for (const p of pieces) {
    const buf = held + p
    const r = plan.scanStream(buf, from, false)
    if (r.cut < from || r.cut > buf.length) t.fail('the cut lies in what was not answered yet')
    out += r.text
    count += r.count
    const keep = Math.max(0, r.cut - STREAM_CONTEXT)
    held = buf.slice(keep)
    from = r.cut - keep
    maxHeld = Math.max(maxHeld, held.length - from)
  }
  const r = plan.scanStream(held, from, true)
  if (r.cut !== held.length) t.fail('the end takes everything')
  return { text: out + r.text, count: count + r.count, maxHeld }
}

// values each detector takes, values that nearly match, and the characters around them that decide
const ATOMS = [
  'alice@example.com', 'bob.smith+rag@mail.example.co.uk', 'x_y%z@sub-domain.example.org', 'jürgen@exämple.de', '@', '@@', 'a@b', 'a@b.c', '.com', 'example.com1',
  'sk-proj-Abc123def456ghi789jkl0', 'sk-', 'AKIAIOSFODNN7EXAMPLE', 'ghp_' + 'a'.repeat(36), 'xoxb-1234567890-abc', 'sk_live_' + '4'.repeat(20),
  'eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig_-x', 'eyJ', '4111 1111 1111 1111', '5555555555554444', '4111111111111112', '123-45-6789', '(555) 123-4567', '+44 20 7946 0958',
  '192.168.0.1', '10.0.0.256', '2001:db8::1', '::', 'DE89 3704 0044 0532 0130 00', 'GB82WEST12345698765432',
  '-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC\n-----END PRIVATE KEY-----', '-----BEGIN',
  ' ', ' ', '\n', '.', ',', '-', '_', '+', ':', '(', ')', 'x', 'Z', '7', '0', 'é', '😀', 'TCK-', 'TCK-123',
]

function rng(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let z = s
    z = Math.imul(z ^ (z >>> 15), z | 1)
    z ^= z + Math.imul(z ^ (z >>> 7), z | 61)
    return ((z ^ (z >>> 14)) >>> 0) / 4294967296
  }
}

function randomText(r: () => number): string {
  let s = ''
  const n = 1 + Math.floor(r() * 14)
  for (let i = 0; i < n; i++) s += ATOMS[Math.floor(r() * ATOMS.length)]
  return s
}

/** cuts `text` in `n` random places (empty pieces included: an event with an empty delta) */
function randomCuts(r: () => number, text: string, n: number): string[] {
  const at = Array.from({ length: n }, () => Math.floor(r() * (text.length + 1))).sort((a, b) => a - b)
  const out: string[] = []
  let prev = 0
  for (const a of at) {
    out.push(text.slice(prev, a))
    prev = a
  }
  out.push(text.slice(prev))
  return out
}

const plans: Record<string, MaskPlan> = {
  'every detector': planFor([{ id: 'all', detectors: [...DETECTORS], method: 'redact' }]),
  'email alone': planFor([{ id: 'e', detectors: ['email'], method: 'redact' }]),
  'api keys, hashed': planFor([{ id: 'k', detectors: ['api-key', 'jwt'], method: 'hash' }]),
  'email and a user pattern': planFor([{ id: 'p', detectors: ['email'], patterns: [{ name: 'ticket', regex: '\\bTCK-[0-9]+' }], method: 'partial' }]),
}

for (const [name, plan] of Object.entries(plans)) {
  t.test(`${name}: text cut at every place, in two pieces, masks as the whole does`, async t => {
    const r = rng(7)
    for (let k = 0; k < 60; k++) {
      const text = randomText(r)
      const whole = plan.scan(text)
      for (let c = 0; c <= text.length; c++) {
        const s = streamed(plan, [text.slice(0, c), text.slice(c)])
        if (s.text !== whole.text || s.count !== whole.count) {
          t.fail(`cut at ${c} of ${JSON.stringify(text)}`, { found: s.text, wanted: whole.text })
          return
        }
      }
    }
    t.pass('every two-piece cut')
  })

  t.test(`${name}: text in many random pieces masks as the whole does`, async t => {
    const r = rng(11)
    for (let k = 0; k < 400; k++) {
      const text = randomText(r) + randomText(r)
      const whole = plan.scan(text)
      const s = streamed(plan, randomCuts(r, text, 1 + Math.floor(r() * 12)))
      if (s.text !== whole.text || s.count !== whole.count) {
        t.fail(`pieces of ${JSON.stringify(text)}`, { found: s.text, wanted: whole.text })
        return
      }
    }
    t.pass('every random cut')
  })
}

t.test('one character at a time: nothing a detector can still take is sent early, and what is held stays bounded', async t => {
  const plan = plans['every detector']
  const text = 'write to bob.smith@example.com or call (555) 123-4567; key sk-proj-Abc123def456ghi789jkl0 ok. '.repeat(3)
  const s = streamed(plan, [...text])
  t.equal(s.text, plan.scan(text).text)
  t.notOk(s.text.includes('bob.smith'), 'no piece of the address')
  t.ok(s.maxHeld <= plan.maxMatchLength)
})

t.test('text ending in a space holds nothing back for the email detector', async t => {
  const plan = plans['email alone']
  const r = plan.scanStream('Contact alice.smith@example.com today. ', 0, false)
  t.equal(r.cut, 'Contact alice.smith@example.com today. '.length)
  t.equal(r.text, 'Contact [REDACTED:email] today. ')
  const open = plan.scanStream('Contact alice.smith@exam', 0, false)
  t.equal(open.text, 'Contact ', 'the address still open is held')
  t.equal(open.cut, 8)
})

t.test('a surrogate pair is not cut in half', async t => {
  const plan = planFor([{ id: 'c', detectors: ['card'], method: 'redact' }])
  const text = 'x'.repeat(60) + '😀'
  for (let from = 0; from < 10; from++) {
    const r = plan.scanStream(text, from, false)
    t.notOk(r.cut > 0 && r.cut < text.length && text.charCodeAt(r.cut - 1) >= 0xd800 && text.charCodeAt(r.cut - 1) <= 0xdbff)
  }
})
