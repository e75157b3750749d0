import t from 'tap'
import { spawn } from 'node:child_process'
import { generateKeyPairSync, randomBytes } from 'node:crypto'
import { mkdtempSync, readFileSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { formatTranscript, isPortcullisError, openRecorder, readRecording, verifyRecording, type Recorder, type RecorderOptions } from '../src/index.ts'
import { writerOnline } from '../src/recording/writer.ts'

/** recorders opened after this write through the writer thread */
async function writerRunning(): Promise<void> {
  while (!writerOnline()) await new Promise(r => setTimeout(r, 10))
}

const principal = { subject: 'alice', groups: ['agents', 'rag'], issuer: 'https://idp.example.com/', tokenId: 'jti-must-not-be-recorded' }

function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'pcr-test-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  return dir
}

function open(dir: string, extra: Partial<RecorderOptions> = {}): Recorder {
  return openRecorder({ dir, sessionId: 'sess-' + randomBytes(4).toString('hex'), target: 'docs-db', protocol: 'postgres', principal, ...extra })
}

/** a short session: header, 3 × (request, decision, response), seal = 11 records */
async function session(dir: string, extra: Partial<RecorderOptions> = {}): Promise<string> {
  const rec = open(dir, extra)
  for (let i = 0; i < 3; i++) {
    rec.record('request', { statement: `SELECT email FROM customers WHERE id = ${i}` })
    rec.record('decision', { action: 'allow', rule: 'agents-read', reason: 'agents may read' })
    rec.record('response', { rows: [{ id: i, email: '[REDACTED:email]' }], masked: 1 })
  }
  await rec.close('client closed')
  return rec.path
}

/** [offset, length] of every frame, as FORMAT.md lays them out */
function frames(bytes: Buffer): [number, number][] {
  const out: [number, number][] = []
  for (let at = 8; at < bytes.length; ) {
    const len = 8 + bytes.readUInt32BE(at)
    out.push([at, len])
    at += len
  }
  return out
}

t.test('a session written and closed verifies intact, with its header', async t => {
  const dir = tempDir(t)
  const file = await session(dir)
  t.match(file, new RegExp(`^${dir}/\\d{4}-\\d{2}-\\d{2}/sess-[0-9a-f]{8}\\.pcr$`))
  const v = await verifyRecording(file)
  t.equal(v.status, 'intact')
  t.equal(v.records, 11)
  t.equal(v.problem, undefined)
  t.equal(v.header?.target, 'docs-db')
  t.equal(v.header?.protocol, 'postgres')
  t.same(v.header?.principal, { subject: 'alice', groups: ['agents', 'rag'], issuer: 'https://idp.example.com/' })
  t.equal(v.seal?.reason, 'client closed')
  t.notOk(readFileSync(file).includes('jti-must-not-be-recorded'), 'the token id never reaches the file')
})

t.test('records and payloads with Buffers read back as written', async t => {
  const dir = tempDir(t)
  const rec = open(dir)
  const raw = randomBytes(300)
  const big = randomBytes(5 * 1024 * 1024) // larger than one write chunk and one read buffer
  rec.record('request', { statement: 'COPY docs TO STDOUT', raw, nested: { parts: [Buffer.from('a'), Buffer.from('bc')] } })
  rec.record('response', { body: big })
  rec.record('event', { event: 'note', n: 1.5, ok: true, none: null })
  await rec.close()
  const all = []
  for await (const r of readRecording(rec.path)) all.push(r)
  t.same(all.map(r => [r.index, r.type]), [[0, 'session-start'], [1, 'request'], [2, 'response'], [3, 'event'], [4, 'seal']])
  t.ok(Buffer.isBuffer(all[1].payload.raw))
  t.ok((all[1].payload.raw as Buffer).equals(raw))
  t.same((all[1].payload.nested as { parts: Buffer[] }).parts.map(b => b.toString()), ['a', 'bc'])
  t.ok((all[2].payload.body as Buffer).equals(big))
  t.same(all[3].payload, { event: 'note', n: 1.5, ok: true, none: null })
  t.ok(all.every(r => typeof r.time === 'number' && r.time > 0))
  t.equal((await verifyRecording(rec.path)).status, 'intact')
})

t.test('one flipped byte anywhere is tampered and names the record', async t => {
  const dir = tempDir(t)
  const file = await session(dir)
  const bytes = readFileSync(file)
  const fr = frames(bytes)
  t.equal(fr.length, 11)
  // flip a byte in the body, the stored hash and the length header of record 5
  for (const [what, pos] of [['body', fr[5][0] + 12], ['hash', fr[5][0] + fr[5][1] - 1], ['length', fr[5][0] + 2]] as const) {
    const copy = Buffer.from(bytes)
    copy[pos] ^= 0x01
    writeFileSync(file, copy)
    const v = await verifyRecording(file)
    t.equal(v.status, 'tampered', what)
    t.equal(v.problem?.record, 5, `${what}: names record 5`)
    t.equal(v.problem?.offset, fr[5][0])
    t.equal(v.records, 5, 'records before it verified')
  }
  // replay still reads a tampered file, and says where it broke
  const damaged = Buffer.from(bytes)
  damaged.fill(0xc1, fr[5][0] + 9, fr[5][0] + 12) // 0xc1 is never valid msgpack
  writeFileSync(file, damaged)
  const text = await formatTranscript(file)
  t.match(text, /undecodable/)
  t.match(text, /integrity  tampered: record 5 does not match the hash chain/)
  // the header record and the seal are covered too
  for (const idx of [0, 10]) {
    const copy = Buffer.from(bytes)
    copy[fr[idx][0] + 20] ^= 0x80
    writeFileSync(file, copy)
    const v = await verifyRecording(file)
    t.equal(v.status, 'tampered')
    t.equal(v.problem?.record, idx)
  }
})

t.test('a dropped record is tampered at the gap', async t => {
  const dir = tempDir(t)
  const file = await session(dir)
  const bytes = readFileSync(file)
  const fr = frames(bytes)
  writeFileSync(file, Buffer.concat([bytes.subarray(0, fr[4][0]), bytes.subarray(fr[5][0])]))
  const v = await verifyRecording(file)
  t.equal(v.status, 'tampered')
  t.equal(v.problem?.record, 4)
  t.match(v.problem?.message, /hash chain/)
})

t.test('two swapped records are tampered', async t => {
  const dir = tempDir(t)
  const file = await session(dir)
  const bytes = readFileSync(file)
  const fr = frames(bytes)
  const slice = (i: number) => bytes.subarray(fr[i][0], fr[i][0] + fr[i][1])
  writeFileSync(file, Buffer.concat([bytes.subarray(0, fr[2][0]), slice(3), slice(2), bytes.subarray(fr[4][0])]))
  const v = await verifyRecording(file)
  t.equal(v.status, 'tampered')
  t.equal(v.problem?.record, 2)
})

t.test('a record appended after the seal is tampered', async t => {
  const dir = tempDir(t)
  const file = await session(dir)
  const bytes = readFileSync(file)
  const fr = frames(bytes)
  writeFileSync(file, Buffer.concat([bytes, bytes.subarray(fr[1][0], fr[1][0] + fr[1][1])]))
  const v = await verifyRecording(file)
  t.equal(v.status, 'tampered')
  t.equal(v.problem?.record, 11)
  t.match(v.problem?.message, /follows the seal/)
})

t.test('a tail cut inside a record is truncated; a cut between records is unsealed', async t => {
  const dir = tempDir(t)
  const file = await session(dir)
  const fr = frames(readFileSync(file))
  truncateSync(file, fr[10][0] + 5) // inside the seal's header
  let v = await verifyRecording(file)
  t.equal(v.status, 'truncated')
  t.equal(v.problem?.record, 10)
  t.equal(v.records, 10)
  truncateSync(file, fr[7][0] + 40) // inside record 7's body
  v = await verifyRecording(file)
  t.equal(v.status, 'truncated')
  t.equal(v.problem?.record, 7)
  t.equal(v.problem?.offset, fr[7][0])
  truncateSync(file, fr[7][0]) // exactly at a record boundary
  v = await verifyRecording(file)
  t.equal(v.status, 'unsealed')
  t.equal(v.records, 7)
  let n = 0
  for await (const _ of readRecording(file)) n++
  t.equal(n, 7)
})

t.test('a file that is not a recording is reported, not trusted', async t => {
  const dir = tempDir(t)
  const file = join(dir, 'x.pcr')
  writeFileSync(file, 'SELECT 1; -- not a recording at all')
  const v = await verifyRecording(file)
  t.equal(v.status, 'tampered')
  t.match(v.problem?.message, /not a Portcullis recording/)
  await t.rejects(async () => {
    for await (const _ of readRecording(file)) void _
  }, /not a Portcullis recording/)
})

const WRITER = `
import { openRecorder } from ${JSON.stringify(fileURLToPath(new URL('../src/index.ts', import.meta.url)))}
const rec = openRecorder({ dir: process.argv[1], sessionId: 'crash', target: 'docs-db', protocol: 'postgres',
  principal: { subject: 'alice', groups: ['agents'], issuer: 'https://idp.example.com/' }, writerThread: process.argv[2] !== 'writev' })
console.log(rec.path)
let i = 0
const tick = () => {
  for (let k = 0; k < 50; k++) rec.record('request', { statement: 'SELECT ' + i++, pad: 'x'.repeat(200) })
  setImmediate(tick)
}
tick()
`

// the same, once the recording writer thread runs (recorders opened from then on write through it)
const THREAD_WRITER = `
import { writerOnline } from ${JSON.stringify(fileURLToPath(new URL('../src/recording/writer.ts', import.meta.url)))}
await import(${JSON.stringify(fileURLToPath(new URL('../src/index.ts', import.meta.url)))})
while (!writerOnline()) await new Promise(r => setTimeout(r, 10))
${WRITER.split('\n').slice(1).join('\n')}`

for (const [how, code, mode] of [[' (writing with writev)', WRITER, 'writev'], ['', WRITER, 'thread'], [' (once the writer thread runs)', THREAD_WRITER, 'thread']] as const)
t.test(`a writer killed mid-stream leaves every flushed record readable and verifiable${how}`, async t => {
  const dir = tempDir(t)
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', code, dir, mode], { stdio: ['ignore', 'pipe', 'inherit'] })
  t.teardown(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  })
  const exited = new Promise(resolve => child.once('exit', resolve))
  const file = await new Promise<string>((resolve, reject) => {
    child.stdout.once('data', d => resolve(String(d).trim()))
    void exited.then(() => reject(new Error('the writer exited before it started')))
  })
  // let it write a good amount, then kill it without warning
  await new Promise<void>((resolve, reject) => {
    const poll = setInterval(() => {
      let size = 0
      try {
        size = statSync(file).size
      } catch {}
      if (size > 256 * 1024) {
        clearInterval(poll)
        resolve()
      }
    }, 20)
    void exited.then(() => {
      clearInterval(poll)
      reject(new Error('the writer exited on its own'))
    })
  })
  child.kill('SIGKILL')
  await exited
  const v = await verifyRecording(file)
  t.ok(v.status === 'unsealed' || v.status === 'truncated', `status ${v.status}`)
  t.ok(v.records > 500, `${v.records} records verified`)
  t.equal(v.header?.sessionId, 'crash')
  const indexes: number[] = []
  for await (const r of readRecording(file)) indexes.push(r.index)
  t.equal(indexes.length, v.records, 'every verified record reads back')
  t.ok(indexes.every((idx, i) => idx === i), 'in order, none missing')
})

t.test('HMAC seal signature: valid with the key, invalid with another, absent when unsigned', async t => {
  const dir = tempDir(t)
  const key = randomBytes(32)
  const signed = await session(dir, { sign: { hmacKey: key } })
  let v = await verifyRecording(signed, { hmacKey: key })
  t.equal(v.status, 'intact')
  t.equal(v.signature, 'valid')
  v = await verifyRecording(signed, { hmacKey: randomBytes(32) })
  t.equal(v.status, 'tampered')
  t.equal(v.signature, 'invalid')
  t.equal(v.problem?.record, 10)
  t.equal((await verifyRecording(signed)).signature, undefined, 'no key, no signature check')
  const unsigned = await session(dir)
  v = await verifyRecording(unsigned, { hmacKey: key })
  t.equal(v.signature, 'absent')
  t.equal(v.status, 'tampered', 'a missing signature is not intact when one is expected')
})

t.test('Ed25519 seal signature: valid with the public key, invalid with another', async t => {
  const dir = tempDir(t)
  const { privateKey, publicKey } = generateKeyPairSync('ed25519')
  const other = generateKeyPairSync('ed25519').publicKey
  const file = await session(dir, { sign: { ed25519PrivateKey: privateKey } })
  let v = await verifyRecording(file, { publicKey })
  t.equal(v.status, 'intact')
  t.equal(v.signature, 'valid')
  v = await verifyRecording(file, { publicKey: other })
  t.equal(v.status, 'tampered')
  t.equal(v.signature, 'invalid')
  // both kinds on one seal, each checked with its own key
  const both = await session(dir, { sign: { ed25519PrivateKey: privateKey, hmacKey: Buffer.from('k') } })
  t.equal((await verifyRecording(both, { publicKey, hmacKey: Buffer.from('k') })).signature, 'valid')
})

t.test('formatTranscript shows the principal, statements, decisions and masked results', async t => {
  const dir = tempDir(t)
  const rec = open(dir)
  rec.record('request', { statement: 'SELECT name, email FROM customers LIMIT 2' })
  rec.record('decision', { action: 'allow', rule: 'agents-read', reason: 'agents may read' })
  rec.record('response', { rows: [{ name: 'Ada', email: '[REDACTED:email]' }, { name: 'Bob', email: '[REDACTED:email]' }], masked: 2 })
  rec.record('request', { statement: 'DELETE FROM customers' })
  rec.record('decision', { action: 'block', rule: 'no-bulk', reason: 'bulk deletes are blocked' })
  rec.record('error', { code: 'POLICY_BLOCKED', message: 'blocked by rule no-bulk' })
  await rec.close('client closed')
  const text = await formatTranscript(rec.path)
  t.match(text, /principal  alice \[agents, rag\] from https:\/\/idp\.example\.com\//)
  t.match(text, /target     docs-db \(postgres\)/)
  t.match(text, /\d\d:\d\d:\d\d\.\d{3}  request +SELECT name, email FROM customers LIMIT 2/)
  t.match(text, /decision +allow by rule agents-read \(agents may read\)/)
  t.match(text, /response +2 rows/)
  t.match(text, /\{"name":"Ada","email":"\[REDACTED:email\]"\}/)
  t.match(text, /decision +block by rule no-bulk/)
  t.match(text, /error +POLICY_BLOCKED: blocked by rule no-bulk/)
  t.match(text, /sealed .* after 7 records \(client closed\)/)
  t.match(text, /integrity  intact/)
})

t.test('a sink that cannot be written sets failed and never throws into the caller', async t => {
  const dir = tempDir(t)
  const blocker = join(dir, 'not-a-dir')
  writeFileSync(blocker, '')
  const rec = open(blocker, { writerThread: false })
  rec.record('request', { statement: 'SELECT 1' })
  await rec.close()
  t.ok(isPortcullisError(rec.failed, 'RECORDING_FAILED'))
  t.doesNotThrow(() => rec.record('request', { statement: 'after close' }))
  // the same when the writer thread opens the file
  await writerRunning()
  const viaThread = open(blocker)
  viaThread.record('request', { statement: 'SELECT 1' })
  await viaThread.close()
  t.ok(isPortcullisError(viaThread.failed, 'RECORDING_FAILED'))
  t.match(viaThread.failed?.message, /ENOTDIR|not a directory|EEXIST/)
})

t.test('a backlog over its bound sets failed, and a recorder that caught up records the gap', async t => {
  const dir = tempDir(t)
  // under the recorder's flush threshold (64 KiB): the backlog builds up before any write is handed over
  const rec = open(dir, { maxBacklogBytes: 32 * 1024, onFailure: 'allow' })
  t.equal(rec.onFailure, 'allow')
  const pad = 'y'.repeat(1000)
  for (let i = 0; i < 200; i++) rec.record('request', { statement: 'SELECT ' + i, pad })
  t.ok(isPortcullisError(rec.failed, 'RECORDING_FAILED'), 'failed while over the bound')
  t.ok(rec.backlog > 0)
  // once the writes drain, the recorder accepts records again
  while (rec.failed !== undefined) await new Promise(resolve => setImmediate(resolve))
  rec.record('request', { statement: 'SELECT after' })
  await rec.close()
  t.equal(rec.backlog, 0)
  const v = await verifyRecording(rec.path)
  t.equal(v.status, 'intact', 'the chain stays whole across the gap')
  const events = []
  for await (const r of readRecording(rec.path)) if (r.type === 'event') events.push(r.payload)
  t.equal(events.length, 1)
  t.equal(events[0].event, 'recording-gap')
  t.ok((events[0].dropped as number) > 0)
})

t.test('a recorder closed while over its bound still seals an intact file and counts what it dropped', async t => {
  const dir = tempDir(t)
  const rec = open(dir, { maxBacklogBytes: 32 * 1024 })
  for (let i = 0; i < 100; i++) rec.record('response', { body: Buffer.alloc(2000, i) })
  t.ok(rec.failed)
  await rec.close('shutdown')
  const v = await verifyRecording(rec.path)
  t.equal(v.status, 'intact')
  t.ok((v.seal?.dropped ?? 0) > 0, `${v.seal?.dropped} dropped`)
  t.match(v.seal?.failed, /behind/)
  const types = []
  for await (const r of readRecording(rec.path)) types.push(r.type)
  t.equal(types[types.length - 1], 'seal', 'nothing follows the seal')
})

/** Postgres backend messages as the codec records them after masking */
function pgResponse(columns: string[], rows: (string | null)[][], tag: string): Buffer {
  const msg = (code: string, body: Buffer) => {
    const head = Buffer.alloc(5)
    head.write(code, 0, 'latin1')
    head.writeUInt32BE(body.length + 4, 1)
    return Buffer.concat([head, body])
  }
  const parts: Buffer[] = []
  const count = Buffer.alloc(2)
  count.writeUInt16BE(columns.length)
  parts.push(msg('T', Buffer.concat([count, ...columns.map(c => Buffer.concat([Buffer.from(c + '\0'), Buffer.alloc(18)]))])))
  for (const row of rows) {
    const cells = row.map(v => {
      if (v === null) return Buffer.from([0xff, 0xff, 0xff, 0xff])
      const len = Buffer.alloc(4)
      len.writeInt32BE(Buffer.byteLength(v))
      return Buffer.concat([len, Buffer.from(v)])
    })
    parts.push(msg('D', Buffer.concat([count, ...cells])))
  }
  parts.push(msg('C', Buffer.from(tag + '\0')))
  return Buffer.concat(parts)
}

t.test('the transcript decodes recorded Postgres and Redis replies into rows and values', async t => {
  const dir = tempDir(t)
  const pgRec = open(dir)
  pgRec.record('request', { type: 'Q', statement: 'select id, email from customers' })
  pgRec.record('response', { bytes: pgResponse(['id', 'email'], [['1', '[REDACTED]'], ['2', null]], 'SELECT 2'), rows: 2 })
  await pgRec.close()
  const pgText = await formatTranscript(pgRec.path)
  t.match(pgText, /request +select id, email from customers \{"type":"Q"\}/)
  t.match(pgText, /response +2 rows \(\d+ bytes\)\n +columns: id \| email\n +1 \| \[REDACTED\]\n +2 \| NULL\n +-> SELECT 2/)

  const redisRec = openRecorder({ dir, sessionId: 'redis-1', target: 'cache', protocol: 'redis', principal })
  redisRec.record('request', { command: ['HGETALL', 'user:1'] })
  redisRec.record('response', { raw: Buffer.from('*4\r\n$4\r\nname\r\n$3\r\nAnn\r\n$3\r\nssn\r\n$10\r\n[REDACTED]\r\n') })
  redisRec.record('response', { raw: Buffer.from('-NOPERM blocked by rule no-bulk\r\n') })
  await redisRec.close()
  const redisText = await formatTranscript(redisRec.path)
  t.match(redisText, /request +HGETALL user:1/)
  t.match(redisText, /\["name", "Ann", "ssn", "\[REDACTED\]"\]/)
  t.match(redisText, /\(error\) NOPERM blocked by rule no-bulk/)
})

t.test('every kind of value a codec records reads back as written, across buffer ends', async t => {
  const dir = tempDir(t)
  const rec = open(dir)
  const values: Record<string, unknown>[] = [
    { s: '', ascii: 'GET foo', exactly31: 'x'.repeat(31), exactly32: 'y'.repeat(32), long: 'z'.repeat(70000) },
    { utf8: 'grüße 日本 🙂', shortUtf8: 'é', mixed: 'a'.repeat(40) + 'ü' },
    { ints: [0, 1, 127, 128, 255, 256, 65535, 65536, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1, -1, -32, -33, -128, -129, -32768, -32769, -(2 ** 31), -(2 ** 31) - 1] },
    { floats: [1.5, -0.25, 1e300, Number.MAX_SAFE_INTEGER + 2], nan: Number.NaN, inf: -Infinity },
    { none: null, undef: undefined, yes: true, no: false, empty: {}, list: [], nested: { a: [{ b: [[1], { c: 'd' }] }] } },
    { bins: [Buffer.alloc(0), Buffer.alloc(255, 1), Buffer.alloc(256, 2), Buffer.alloc(65536, 3)], u8: new Uint8Array([1, 2, 3]) },
    Object.fromEntries(Array.from({ length: 20 }, (_, i) => [`k${i}`, i])),
    { when: new Date(0), map: new Map([['a', 1]]) },
  ]
  // enough records of a few KB that some land across the end of a batch buffer
  const filler = randomBytes(3000)
  for (let i = 0; i < 800; i++) {
    rec.record('response', { i, raw: filler })
    if (i % 100 === 0) for (const v of values) rec.record('event', v)
  }
  await rec.close()
  t.equal((await verifyRecording(rec.path)).status, 'intact')
  const all = []
  for await (const r of readRecording(rec.path)) all.push(r)
  t.same(all.map(r => r.index), all.map((_, i) => i), 'indexes run on without a gap')
  const events = all.filter(r => r.type === 'event')
  t.equal(events.length, 8 * values.length)
  for (let i = 0; i < events.length; i++) {
    const want = values[i % values.length]
    const got = events[i].payload
    if (i % values.length === 7) {
      t.equal((got.when as Date).getTime(), 0, 'a Date goes through msgpackr and comes back a Date')
      t.same(got.map, { a: 1 })
      continue
    }
    if (i % values.length === 3) {
      t.same(got.floats, want.floats)
      t.ok(Number.isNaN(got.nan))
      t.equal(got.inf, -Infinity)
      continue
    }
    if (i % values.length === 4) t.ok('undef' in got && got.undef === undefined, 'an undefined value keeps its key')
    if (i % values.length === 5) {
      t.same((got.bins as Buffer[]).map(b => [b.length, b[0]]), [[0, undefined], [255, 1], [256, 2], [65536, 3]])
      t.same([...(got.u8 as Uint8Array)], [1, 2, 3])
      continue
    }
    t.same(got, want)
  }
  const responses = all.filter(r => r.type === 'response')
  t.equal(responses.length, 800)
  t.ok(responses.every((r, i) => r.payload.i === i && (r.payload.raw as Buffer).equals(filler)))
})

t.test('many sessions recording at once each get their own whole, ordered file', async t => {
  const dir = tempDir(t)
  await writerRunning()
  const recs = Array.from({ length: 20 }, () => open(dir))
  // small records over several write windows, interleaved across sessions
  for (let round = 0; round < 6; round++) {
    for (let i = 0; i < recs.length; i++) for (let j = 0; j < 5; j++) recs[i].record('request', { session: i, round, j })
    await new Promise(r => setTimeout(r, 30))
  }
  await Promise.all(recs.map(r => r.close('done')))
  for (let i = 0; i < recs.length; i++) {
    t.equal((await verifyRecording(recs[i].path)).status, 'intact')
    const got: unknown[] = []
    for await (const r of readRecording(recs[i].path)) if (r.type === 'request') got.push(r.payload)
    t.same(got, Array.from({ length: 30 }, (_, k) => ({ session: i, round: Math.floor(k / 5), j: k % 5 })))
  }
})

t.test('an unknown record type and an unencodable payload are kept as events, never a broken file', async t => {
  const dir = tempDir(t)
  const rec = open(dir)
  rec.record('audit-note' as never, { text: 'hello' })
  rec.record('event', { fn: () => 1, n: 10n ** 30n } as never)
  await rec.close()
  t.equal((await verifyRecording(rec.path)).status, 'intact')
  const all = []
  for await (const r of readRecording(rec.path)) all.push(r)
  t.equal(all[1].type, 'event')
  t.same(all[1].payload, { event: 'unknown-record-type', recordType: 'audit-note', payload: { text: 'hello' } })
  t.equal(all[2].type, 'event')
  t.match(all[2].payload.unencodable, /too large/, 'says why the payload could not be kept')
})

t.test('a single record larger than the buffer bound leaves a marker in its place', async t => {
  const dir = tempDir(t)
  const rec = open(dir, { maxBacklogBytes: 64 * 1024 })
  rec.record('response', { body: Buffer.alloc(100 * 1024, 1) })
  rec.record('response', { text: 'small' })
  await rec.close()
  t.equal(rec.failed, undefined, 'the recorder is not failed by it')
  t.equal((await verifyRecording(rec.path)).status, 'intact')
  const all = []
  for await (const r of readRecording(rec.path)) all.push(r)
  t.same(all[1].payload, { event: 'record-too-large', recordType: 'response', bytes: all[1].payload.bytes })
  t.ok((all[1].payload.bytes as number) > 100 * 1024)
  t.same(all[2].payload, { text: 'small' })
})

t.test('a session id cannot place the file outside its day directory', async t => {
  const dir = tempDir(t)
  const rec = openRecorder({ dir, sessionId: '../../etc/evil', target: 'docs-db', protocol: 'postgres', principal })
  await rec.close()
  t.match(rec.path, new RegExp(`^${dir}/\\d{4}-\\d{2}-\\d{2}/[^/]+\\.pcr$`))
  t.equal((await verifyRecording(rec.path)).header?.sessionId, '../../etc/evil', 'the header keeps the id as given')
})
