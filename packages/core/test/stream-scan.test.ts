// scanStream: text that arrives in pieces (a streamed reply's deltas) is masked exactly as the whole
// text would be, wherever the pieces are cut, while holding back only what a later piece can change.
import t from 'tap'
import { mulberry32 } from '@portcullis/fixtures/random'
import { compileMaskPlan, DETECTORS, holdBack, type Held, type MaskingRuleConfig, type MaskPlan } from '../src/index.ts'

const hashKey = Buffer.from('stream-scan-test-key-0123456789ab')
const ctx = { target: 't', subject: 's', groups: [] }
const planFor = (rules: MaskingRuleConfig[]) => compileMaskPlan(rules, ctx, { hashKey })

/** how often holdBack scanned a piece on its own (after a character the plan scans afresh after) */
let freshPieces = 0

/** the plan, counting the pieces holdBack scans without their context */
function counting(plan: MaskPlan): MaskPlan {
  const c = Object.create(plan) as MaskPlan
  c.scansFreshAfter = (code: number) => {
    const fresh = plan.scansFreshAfter?.(code) === true
    if (fresh) freshPieces++
    return fresh
  }
  return c
}

/** feeds `pieces` as a streaming codec does (holdBack, the codecs' own bookkeeping): all emitted text */
function streamed(plan: MaskPlan, pieces: readonly string[]): { text: string; count: number; maxHeld: number } {
  const held: Held = { text: '', from: 0 }
  const p = counting(plan)
  let out = ''
  let count = 0
  let maxHeld = 0
  for (const piece of pieces) {
    const r = holdBack(held, piece, plan.maxMatchLength, p)
    if (held.from < 0 || held.from > held.text.length) t.fail('the cut lies in what was not answered yet')
    out += r.emit
    count += r.count
    maxHeld = Math.max(maxHeld, held.text.length - held.from)
  }
  const r = plan.scanStream(held.text, held.from, true)
  if (r.cut !== held.text.length) t.fail('the end takes everything')
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

const rng = mulberry32

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
  // its characters (A-Z, 0-9) are fewer than its lookbehind's (A-Z, a-z, 0-9): text it lets through
  // can end in a character that still decides a match after it
  'aws keys alone': planFor([{ id: 'a', detectors: ['aws-key'], method: 'redact' }]),
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

  t.test(`${name}: every two atoms, cut between them and after a third, mask as the whole does`, async t => {
    // the cut between two atoms is where a piece most often ends (a word, a space): exhaustively
    for (const a of ATOMS) for (const b of ATOMS) for (const c of [' ', 'x', 'AKIAIOSFODNN7EXAMPLE']) {
      const whole = plan.scan(a + b + c)
      const s = streamed(plan, [a, b, c])
      if (s.text !== whole.text || s.count !== whole.count) {
        t.fail(`${JSON.stringify(a)} | ${JSON.stringify(b)} | ${JSON.stringify(c)}`, { found: s.text, wanted: whole.text })
        return
      }
    }
    t.pass(`${ATOMS.length ** 2 * 3} three-piece texts`)
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

t.test('holdBack scans a piece on its own after a space where nothing is held, and only where the plan allows it', async t => {
  const fresh = (plan: MaskPlan) => {
    freshPieces = 0
    const r = rng(13)
    for (let k = 0; k < 200; k++) streamed(plan, randomCuts(r, randomText(r) + randomText(r), 8))
    return freshPieces
  }
  // the two-piece and random-piece checks above ran these paths: pieces scanned on their own mask as the whole does
  const email = fresh(plans['email alone'])
  const keys = fresh(plans['api keys, hashed'])
  t.ok(email > 20, `email alone: pieces after a space are scanned on their own (${email} of 1,800)`)
  t.ok(keys > 20, `api keys: likewise (${keys})`)
  t.ok(fresh(plans['aws keys alone']) > 20, 'aws keys alone: likewise')
  t.equal(fresh(plans['email and a user pattern']), 0, 'a user pattern (\\b, ^) may read the context: never')
  t.equal(fresh(plans['every detector']), 0, 'detectors without a character class of their own (cards, phones) always hold text back: never reached')
})

t.test('after a space, tab or line end, every built-in detector masks what follows as that text on its own', async t => {
  const r = rng(17)
  let checked = 0
  for (const name of DETECTORS) {
    const plan = planFor([{ id: name, detectors: [name], method: 'redact' }])
    for (const w of [' ', '\t', '\n', '\r']) {
      t.ok(plan.scansFreshAfter?.(w.charCodeAt(0)), `${name}: fresh after ${JSON.stringify(w)}`)
      for (let k = 0; k < 150; k++) {
        const before = randomText(r) + w
        const after = randomText(r)
        // the matches that start after the white space, in the text with what came before it
        const inText = plan.scanStream(before + after, before.length, true)
        const alone = plan.scanStream(after, 0, true)
        if (inText.text !== alone.text || inText.count !== alone.count) {
          t.fail(`${name}: ${JSON.stringify(before)} + ${JSON.stringify(after)}`, { found: alone.text, wanted: inText.text })
          return
        }
        checked++
      }
    }
    t.notOk(plan.scansFreshAfter?.('x'.charCodeAt(0)), `${name}: not after a letter`)
  }
  const withPattern = planFor([{ id: 'p', detectors: ['email'], patterns: [{ name: 'ticket', regex: '\\bTCK-[0-9]+' }], method: 'redact' }])
  t.notOk(withPattern.scansFreshAfter?.(32), 'never with a user pattern')
  t.pass(`${checked} texts`)
})

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
