// Every way an HTTP response can carry data under a mask plan, asserted on the raw bytes the client
// receives (a raw socket, not a friendly client that would decode or drop something). The upstream
// is the fixture (a stand-in for LLM / vector-DB APIs, which cannot run here) answering /raw with
// exactly the status, headers and body pieces a test sets; the gateway side is the real core.
import t, { type Test } from 'tap'
import { connect } from 'node:net'
import { once } from 'node:events'
import { brotliCompressSync, deflateSync, gzipSync } from 'node:zlib'
import { startHttpUpstream, type HttpUpstream, type RawAnswer } from '@portcullis/fixtures/http-upstream'
import { startCoreGateway, type CoreGateway } from './core-harness.ts'

const EMAIL = 'ada@example.com'
const KEY = 'sk-proj-Abc123def456ghi789jkl0'
const PHONE = '+44 20 7946 0958'
const SECRETS = [EMAIL, KEY, PHONE, 'ada@exa', 'mple.com', 'Abc123def456']

const RULES = `
  - { id: agents, when: { groups: [agents], class: [read, write] }, action: allow }`
const DETECTING = `
  - { id: pii, when: { targets: [llm] }, fields: [email, customer.phone], detectors: [email, api-key], method: redact }`
// field rules only: what is masked here is masked because the gateway read the body as JSON
const FIELDS_ONLY = `
  - { id: pii, when: { targets: [llm] }, fields: [email, customer.phone], method: redact }`

interface Raw {
  bytes: Buffer
  status: number
  head: string
  headers: Record<string, string>
  body: Buffer
}

/** one request on a raw socket, Connection: close, every byte of the answer */
async function rawRequest(gw: CoreGateway, token: string, request: { method?: string; path?: string; headers?: Record<string, string> } = {}): Promise<Raw> {
  const { port } = new URL(gw.url)
  const sock = connect({ host: '127.0.0.1', port: Number(port) })
  await once(sock, 'connect')
  const extra = Object.entries(request.headers ?? {})
    .map(([k, v]) => `${k}: ${v}\r\n`)
    .join('')
  sock.write(`${request.method ?? 'GET'} ${request.path ?? '/raw'} HTTP/1.1\r\nhost: x\r\nauthorization: Bearer ${token}\r\n${extra}connection: close\r\n\r\n`)
  const parts: Buffer[] = []
  sock.on('data', (c: Buffer) => parts.push(c))
  await once(sock, 'close')
  const bytes = Buffer.concat(parts)
  const split = bytes.indexOf('\r\n\r\n')
  const head = bytes.subarray(0, split).toString('latin1')
  const headers: Record<string, string> = {}
  for (const line of head.split('\r\n').slice(1)) {
    const i = line.indexOf(':')
    headers[line.slice(0, i).toLowerCase()] = line.slice(i + 1).trim()
  }
  let body: Buffer = bytes.subarray(split + 4)
  if (/chunked/i.test(headers['transfer-encoding'] ?? '')) body = dechunk(body)
  return { bytes, status: Number(head.split(' ')[1]), head, headers, body }
}

function dechunk(b: Buffer): Buffer {
  const out: Buffer[] = []
  let at = 0
  for (;;) {
    const eol = b.indexOf('\r\n', at)
    const n = parseInt(b.subarray(at, eol).toString('latin1'), 16)
    if (!n) return Buffer.concat(out)
    out.push(b.subarray(eol + 2, eol + 2 + n))
    at = eol + 2 + n + 2
  }
}

function noSecrets(t: Test, raw: Raw, what: string) {
  const text = raw.bytes.toString('latin1')
  for (const s of SECRETS) t.notOk(text.includes(s), `${what}: no ${JSON.stringify(s)} in the bytes the client got`)
}

async function setup(t: Test, masking = DETECTING, options = '{ profile: generic }') {
  const upstream = await startHttpUpstream()
  t.teardown(() => upstream.stop())
  const gw = await startCoreGateway(t, { upstreamUrl: upstream.url, rules: RULES, masking, options })
  return { upstream, gw, token: await gw.token() }
}

const answer = (up: HttpUpstream, a: RawAnswer) => (up.options.raw = a)
const json = { 'content-type': 'application/json' }

t.test('JSON: nested objects, arrays and keys are masked in place; huge numbers and spellings stay byte for byte', async t => {
  const { upstream, gw, token } = await setup(t)
  const body = `{"id": 12345678901234567890, "n": 1e400, "f": 1.50, "customer": {"email": "${EMAIL}", "phone": "${PHONE}", "name": "Ada"},
    "list": [{"email": "bob@example.org"}, ["note ${KEY}"], [[{"email": null}]]], "${EMAIL}": true, "esc": "\\u0061da@example.com"}`
  answer(upstream, { headers: json, chunks: [body] })
  const r = await rawRequest(gw, token)
  t.equal(r.status, 200)
  noSecrets(t, r, 'nested JSON')
  t.notOk(r.body.includes('bob@example.org'))
  const text = r.body.toString()
  t.match(text, '"id": 12345678901234567890', 'an id beyond double precision is not rounded')
  t.match(text, '"n": 1e400', 'a number JSON.parse makes Infinity is not turned into null')
  t.match(text, '"f": 1.50', 'a number keeps its spelling')
  t.match(text, '"name": "Ada"', 'unmasked values stay as they were')
  t.match(text, '[[{"email": null}]]', 'null stays null')
  t.notMatch(text, /\\u0061da/, 'an escaped address is decoded before the detectors see it')
  t.equal(Number(r.headers['content-length']), r.body.length, 'the content-length is that of the masked body')
  const parsed = JSON.parse(text)
  t.equal(parsed.customer.phone, '[REDACTED]', 'a field rule by path')
  t.equal(parsed.list[0].email, '[REDACTED]', 'a field rule by bare key, inside an array')
})

t.test('chunked transfer-encoding: a value split across chunks is masked', async t => {
  const { upstream, gw, token } = await setup(t)
  answer(upstream, { headers: json, chunks: ['{"note": "mail ada@exa', 'mple.com now", "k": "sk-proj-', 'Abc123def456ghi789jkl0"}'] })
  const r = await rawRequest(gw, token)
  t.equal(r.status, 200)
  noSecrets(t, r, 'chunked JSON')
  t.same(JSON.parse(r.body.toString()), { note: 'mail [REDACTED:email] now', k: '[REDACTED:api-key]' })
})

t.test('error bodies: 4xx and 5xx, JSON and text, are masked like any other', async t => {
  const { upstream, gw, token } = await setup(t)
  answer(upstream, { status: 404, headers: json, chunks: [`{"error": {"message": "no user ${EMAIL}", "email": "${EMAIL}"}}`] })
  const a = await rawRequest(gw, token)
  t.equal(a.status, 404, 'the status is the upstream one')
  noSecrets(t, a, '404 JSON')
  answer(upstream, { status: 500, headers: { 'content-type': 'text/plain' }, chunks: [`internal error: key ${KEY} for ${EMAIL}`] })
  const b = await rawRequest(gw, token)
  t.equal(b.status, 500)
  noSecrets(t, b, '500 text')
  t.match(b.body.toString(), /^internal error: key \[REDACTED:api-key\] for \[REDACTED:email\]$/)
  answer(upstream, { status: 429, headers: { 'content-type': 'application/problem+json' }, chunks: [`{"detail": "${EMAIL}"}`] })
  const c = await rawRequest(gw, token)
  t.equal(c.status, 429)
  noSecrets(t, c, '429 problem+json')
})

t.test('a Content-Type that lies: JSON as text/plain, as octet-less nothing, as NDJSON; field rules still apply', async t => {
  // no detectors at all: only reading the body as JSON can mask these
  const { upstream, gw, token } = await setup(t, FIELDS_ONLY)
  const doc = `{"customer": {"email": "${EMAIL}", "phone": "${PHONE}"}}`
  for (const headers of [{ 'content-type': 'text/plain' }, {} as Record<string, string>, { 'content-type': 'text/html; charset=utf-8' }, { 'content-type': 'application/x-ndjson' }]) {
    answer(upstream, { headers, chunks: [doc] })
    const r = await rawRequest(gw, token)
    t.equal(r.status, 200, JSON.stringify(headers))
    noSecrets(t, r, `JSON labelled ${JSON.stringify(headers)}`)
    t.same(JSON.parse(r.body.toString()), { customer: { email: '[REDACTED]', phone: '[REDACTED]' } })
  }
  // NDJSON, declared or labelled text/plain: one JSON value per line
  const lines = `{"email": "${EMAIL}"}\n{"customer": {"phone": "${PHONE}"}}\n`
  for (const ct of ['application/x-ndjson', 'text/plain']) {
    answer(upstream, { headers: { 'content-type': ct }, chunks: [lines] })
    const r = await rawRequest(gw, token)
    t.equal(r.status, 200)
    noSecrets(t, r, `NDJSON as ${ct}`)
    t.equal(r.body.toString(), '{"email": "[REDACTED]"}\n{"customer": {"phone": "[REDACTED]"}}\n')
  }
  // declared JSON that does not parse cannot be masked by field: refused, nothing of it sent
  answer(upstream, { headers: json, chunks: [`{"email": "${EMAIL}", oops}`] })
  const bad = await rawRequest(gw, token)
  t.equal(bad.status, 502)
  t.equal(JSON.parse(bad.body.toString()).error.code, 'upstream_unreadable')
  noSecrets(t, bad, 'broken JSON')
  const badLines = `{"email": "${EMAIL}"}\nnot json ${EMAIL}\n`
  answer(upstream, { headers: { 'content-type': 'application/x-ndjson' }, chunks: [badLines] })
  const badNd = await rawRequest(gw, token)
  t.equal(badNd.status, 502, 'an NDJSON line that does not parse refuses the body')
  noSecrets(t, badNd, 'broken NDJSON')
})

t.test('JSON nested deeper than the masker can walk is refused, whatever its label', async t => {
  const { upstream, gw, token } = await setup(t, FIELDS_ONLY)
  const depth = 200_000
  const deep = '['.repeat(depth) + `{"email": "${EMAIL}"}` + ']'.repeat(depth)
  JSON.parse(deep) // valid JSON: the parser reads any depth
  for (const ct of ['application/json', 'text/plain']) {
    answer(upstream, { headers: { 'content-type': ct }, chunks: [deep] })
    const r = await rawRequest(gw, token)
    t.equal(r.status, 502, ct)
    t.equal(JSON.parse(r.body.toString()).error.code, 'unmaskable_response')
    noSecrets(t, r, `deep JSON as ${ct}`)
  }
})

t.test('text/html, text/csv and other text: the detectors scan it; bytes that are not UTF-8 are refused', async t => {
  const { upstream, gw, token } = await setup(t)
  for (const ct of ['text/html', 'text/csv', 'application/xml', 'application/javascript', 'application/x-www-form-urlencoded']) {
    answer(upstream, { headers: { 'content-type': ct }, chunks: [`<p>write to ${EMAIL}</p>,`, `key=${KEY}`] })
    const r = await rawRequest(gw, token)
    t.equal(r.status, 200, ct)
    noSecrets(t, r, ct)
    t.match(r.body.toString(), '[REDACTED:email]')
  }
  answer(upstream, { headers: { 'content-type': 'text/plain' }, chunks: [Buffer.concat([Buffer.from(`${EMAIL} `), Buffer.from([0xff, 0xfe, 0x00])])] })
  const bin = await rawRequest(gw, token)
  t.equal(bin.status, 502, 'text that is not UTF-8 is not guessed at')
  t.equal(JSON.parse(bin.body.toString()).error.code, 'unmaskable_response')
  noSecrets(t, bin, 'non-UTF-8 text')
})

t.test('binary, multipart and unknown types are refused under a mask plan unless the target lets the type through', async t => {
  const { upstream, gw, token } = await setup(t)
  for (const ct of ['application/octet-stream', 'multipart/mixed; boundary=x', 'image/png', 'application/msgpack', 'application/pdf']) {
    answer(upstream, { headers: { 'content-type': ct }, chunks: [`--x\r\ncontent-type: application/json\r\n\r\n{"email": "${EMAIL}"}\r\n--x--`] })
    const r = await rawRequest(gw, token)
    t.equal(r.status, 502, ct)
    const err = JSON.parse(r.body.toString()).error
    t.equal(err.code, 'unmaskable_response')
    t.match(err.message, ct.split(';')[0])
    noSecrets(t, r, ct)
  }
  const media = await setup(t, DETECTING, '{ profile: generic, unmaskedResponseTypes: ["image/*", "audio/mpeg"] }')
  const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 1, 2, 3])
  answer(media.upstream, { headers: { 'content-type': 'image/png' }, chunks: [png] })
  const r = await rawRequest(media.gw, media.token)
  t.equal(r.status, 200, 'a type listed in unmaskedResponseTypes passes')
  t.same(r.body, png, 'byte for byte')
  answer(media.upstream, { headers: { 'content-type': 'application/octet-stream' }, chunks: [EMAIL] })
  t.equal((await rawRequest(media.gw, media.token)).status, 502, 'types not listed are still refused')
})

t.test('compressed bodies: gzip, deflate and br are decoded and masked; encodings the gateway cannot decode are refused', async t => {
  const { upstream, gw, token } = await setup(t)
  const doc = Buffer.from(`{"note": "${EMAIL}", "k": "${KEY}"}`)
  for (const [enc, bytes] of [['gzip', gzipSync(doc)], ['x-gzip', gzipSync(doc)], ['deflate', deflateSync(doc)], ['br', brotliCompressSync(doc)]] as const) {
    answer(upstream, { headers: { ...json, 'content-encoding': enc }, chunks: [bytes.subarray(0, 7), bytes.subarray(7)] })
    const r = await rawRequest(gw, token, { headers: { 'accept-encoding': 'gzip, deflate, br' } })
    t.equal(r.status, 200, enc)
    t.equal(r.headers['content-encoding'], undefined, `${enc}: the client gets the masked body unencoded`)
    noSecrets(t, r, enc)
    t.same(JSON.parse(r.body.toString()), { note: '[REDACTED:email]', k: '[REDACTED:api-key]' })
  }
  // the upstream is only offered what the gateway can decode
  await rawRequest(gw, token, { headers: { 'accept-encoding': 'zstd, br;q=0.9, gzip, compress' } })
  t.equal(upstream.requests.at(-1)!.headers['accept-encoding'], 'br;q=0.9, gzip')
  await rawRequest(gw, token, { headers: { 'accept-encoding': 'zstd' } })
  t.equal(upstream.requests.at(-1)!.headers['accept-encoding'], undefined, 'nothing decodable offered: none asked for')
  // an upstream that answers with another encoding anyway is refused, never passed on
  for (const enc of ['zstd', 'compress', 'gzip, br', 'x-custom']) {
    answer(upstream, { headers: { ...json, 'content-encoding': enc }, chunks: [doc] })
    const r = await rawRequest(gw, token)
    t.equal(r.status, 502, enc)
    t.equal(JSON.parse(r.body.toString()).error.code, 'upstream_unreadable')
    noSecrets(t, r, enc)
  }
  // a body that claims gzip and is not: refused
  answer(upstream, { headers: { ...json, 'content-encoding': 'gzip' }, chunks: [doc] })
  const fake = await rawRequest(gw, token)
  t.equal(fake.status, 502)
  noSecrets(t, fake, 'fake gzip')
  // SSE compressed too
  const events = gzipSync(`data: {"choices": [{"index": 0, "delta": {"content": "${KEY}"}}]}\n\ndata: [DONE]\n\n`)
  answer(upstream, { headers: { 'content-type': 'text/event-stream', 'content-encoding': 'gzip' }, chunks: [events] })
  const sse = await rawRequest(gw, token, { headers: { 'accept-encoding': 'gzip' } })
  t.equal(sse.status, 200)
  noSecrets(t, sse, 'gzip SSE')
  t.match(sse.body.toString(), 'data: [DONE]')
})

t.test('SSE: events split across chunks, multi-line data, comments, other fields and a key split across events', async t => {
  const { upstream, gw, token } = await setup(t)
  const delta = (s: string) => `data: {"choices": [{"index": 0, "delta": {"content": ${JSON.stringify(s)}}}]}\n\n`
  const stream = [
    '\ufeff: hello ' + EMAIL + '\n',
    'retry: 1000\n\n',
    'data: {"id": 12345678901234567890, "n": 1.50, "email": "' + EMAIL + '"}\n\n',
    'event: note\nid: ' + EMAIL + '\ndata: {"customer":\ndata:  {"email": "' + EMAIL + '"}}\n\n',
    delta('your key is sk-') + delta('proj-Abc123') + delta('def456ghi789jkl0 ok'),
    'data: plain text ada@exa',
    'mple.com here\n\n',
    'data: then write to bob@exa\n\n',
    'data: mple.org or use sk-proj-Abc1\n\n',
    'data: 23def456ghi789jkl0 please\n\n',
    'data: {"text": "split\r\n\r\ndata: {"a": 1}\n\r\n',
    'bogus line ' + EMAIL + '\n{"email": "' + EMAIL + '"}\ndata: [DONE]\n\n',
  ]
  answer(upstream, { headers: { 'content-type': 'text/event-stream' }, chunks: stream })
  const r = await rawRequest(gw, token)
  t.equal(r.status, 200)
  noSecrets(t, r, 'SSE')
  const text = r.body.toString()
  t.match(text, ': hello [REDACTED:email]\n', 'a comment is scanned')
  t.match(text, 'retry: 1000\n')
  t.match(text, 'data: {"id": 12345678901234567890, "n": 1.50, "email": "[REDACTED]"}\n\n', 'an event is masked in place: big numbers and spellings stay')
  t.match(text, 'id: [REDACTED:email]\n', 'an id is scanned')
  t.match(text, 'event: note\n')
  t.match(text, 'data: {"customer":\ndata:  {"email": "[REDACTED]"}}\n', 'multi-line data is read as one JSON value; the field rule applies, the rest stays as sent')
  t.match(text, 'data: plain text [REDACTED:email] here', 'plain-text data split across chunks')
  t.notOk(text.includes('bob@exa') || text.includes('mple.org'), 'an address split across two plain-text events')
  const plain = [...text.matchAll(/^data: ((?:then|mple|23|\[RED| or| please).*)$/gm)].map(m => m[1]).join('')
  t.equal(plain, 'then write to [REDACTED:email] or use [REDACTED:api-key] please', 'split across events, masked, the text around it kept in order')
  t.notMatch(text, /bogus line/, 'a line that is no SSE field is dropped, not passed unread')
  t.match(text, 'data: {"a": 1}', 'an event ended by LF CR LF is an event of its own')
  t.match(text, /data: \[DONE\]\n\n$/)
  let content = ''
  for (const m of text.matchAll(/^data: (\{"choices".*)$/gm)) content += JSON.parse(m[1]!).choices[0].delta.content ?? ''
  t.equal(content, 'your key is [REDACTED:api-key] ok', 'the deltas add up to the masked text')
})

t.test('HEAD and 304 carry no body and pass; a Range request is asked for whole under masking', async t => {
  const { upstream, gw, token } = await setup(t)
  answer(upstream, { headers: { ...json, etag: '"v1"' }, chunks: [`{"email": "${EMAIL}"}`] })
  const head = await rawRequest(gw, token, { method: 'HEAD' })
  t.equal(head.status, 200)
  t.equal(head.body.length, 0, 'no body after a HEAD')
  noSecrets(t, head, 'HEAD')
  answer(upstream, { status: 304, headers: { etag: '"v1"' } })
  const notModified = await rawRequest(gw, token, { headers: { 'if-none-match': '"v1"' } })
  t.equal(notModified.status, 304)
  t.equal(notModified.body.length, 0)
  answer(upstream, { headers: json, chunks: [`{"email": "${EMAIL}"}`] })
  const ranged = await rawRequest(gw, token, { headers: { range: 'bytes=10-14', 'if-range': '"v1"' } })
  t.equal(upstream.requests.at(-1)!.headers.range, undefined, 'Range is not forwarded under a mask plan')
  t.equal(upstream.requests.at(-1)!.headers['if-range'], undefined)
  t.equal(ranged.status, 200)
  noSecrets(t, ranged, 'range')
})

t.test('without a mask plan every type passes as it came, ranges and encodings included', async t => {
  const upstream = await startHttpUpstream()
  t.teardown(() => upstream.stop())
  const gw = await startCoreGateway(t, { upstreamUrl: upstream.url, rules: RULES, options: '{ profile: generic }' })
  const token = await gw.token()
  const gz = gzipSync(`{"email": "${EMAIL}"}`)
  answer(upstream, { headers: { 'content-type': 'application/octet-stream', 'content-encoding': 'gzip' }, chunks: [gz] })
  const r = await rawRequest(gw, token, { headers: { range: 'bytes=0-', 'accept-encoding': 'zstd, gzip' } })
  t.equal(r.status, 200)
  t.same(r.body, gz, 'untouched bytes')
  t.equal(upstream.requests.at(-1)!.headers.range, 'bytes=0-')
  t.equal(upstream.requests.at(-1)!.headers['accept-encoding'], 'zstd, gzip')
})
