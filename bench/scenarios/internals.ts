// Gateway internals on one core, in this process: SQL classification per statement (cold parse and
// cached), detector scan MB/s, recorder MB/s with the hash chain (closed and fsynced), verify MB/s.
// No direct or reference path exists for these: those columns read '—'.
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { setImmediate as tick } from 'node:timers/promises'
import type { Context } from '../lib/context.ts'
import { Unavailable, type Row, type Scenario, type Value } from '../lib/types.ts'

const now = () => Number(process.hrtime.bigint()) / 1e6 // ms

function statements(n: number): string[] {
  const shapes = [
    (i: number) => `SELECT id, email, name FROM customers WHERE id = ${i} AND status = 'active' ORDER BY created_at DESC LIMIT 10`,
    (i: number) => `INSERT INTO orders (customer_id, total, note) VALUES (${i}, ${i * 3}.50, 'note ${i}')`,
    (i: number) => `UPDATE accounts SET balance = balance - ${i} WHERE id = ${i}`,
    (i: number) => `SELECT id, content FROM documents ORDER BY embedding <-> '[0.${i},0.2,0.3]' LIMIT ${1 + (i % 20)}`,
    (i: number) => `WITH recent AS (SELECT * FROM events WHERE ts > now() - interval '${i} minutes') SELECT count(*) FROM recent r JOIN users u ON u.id = r.user_id`,
  ]
  return Array.from({ length: n }, (_, i) => shapes[i % shapes.length](i))
}

function prose(bytes: number, withPii: boolean): string {
  const plain = 'The quarterly review covered revenue, churn and the roadmap for the next two releases. '
  const pii = 'Reach Alice at alice.smith@example.com or +1 415 555 0132; card 4111 1111 1111 1111 on file. '
  let s = ''
  for (let i = 0; s.length < bytes; i++) s += withPii && i % 10 === 9 ? pii : plain
  return s
}

async function classification(ctx: Context): Promise<{ coldUs: number; cachedUs: number; skeletonUs: number }> {
  const pg = (await import('@portcullis/postgres').catch(() => undefined)) as Record<string, any> | undefined
  if (typeof pg?.classifySql !== 'function' || typeof pg?.loadClassifier !== 'function') throw new Unavailable('postgres classifier not available yet')
  await pg.loadClassifier()
  const n = ctx.quick ? 2000 : 10000
  // the cold pass really parses: the cache is emptied before each text (a new comment or literal
  // would be a skeleton hit, not a parse)
  const texts = statements(n)
  const clear = typeof pg.clearClassifierCache === 'function' ? () => pg.clearClassifierCache() : () => undefined
  let t = now()
  for (const s of texts) {
    clear()
    pg.classifySql(s)
  }
  const coldUs = ((now() - t) * 1000) / n
  const rounds = ctx.quick ? 20 : 100
  // within any sensible cache size. The text arrives as wire bytes every time, so each lookup gets
  // a new string decoded from them (V8 caches a string's hash on the string: reusing one would time
  // a hash table hit, not what a codec does)
  const hot = texts.slice(0, 1000).map(s => Buffer.from(s))
  for (const b of hot) pg.classifySql(b.toString('utf8'))
  t = now()
  for (let r = 0; r < rounds; r++) for (const b of hot) pg.classifySql(b.toString('utf8'))
  const cachedUs = ((now() - t) * 1000) / (rounds * hot.length)
  // inline literals never seen before, in shapes whose classification reads no constant (pgbench -S
  // and friends): a skeleton hit each, no parse
  const fresh = (i: number) => [
    `SELECT abalance FROM pgbench_accounts WHERE aid = ${i};`,
    `UPDATE pgbench_accounts SET abalance = abalance + ${i % 5000} WHERE aid = ${i};`,
    `INSERT INTO orders (customer_id, total, note) VALUES (${i}, ${i * 3}.50, 'note ${i}')`,
    `SELECT id, email, name FROM customers WHERE id = ${i} AND status = 'active' ORDER BY created_at DESC`,
  ]
  for (const s of fresh(0)) pg.classifySql(s)
  // the lexer warmed up (optimized) as in a running gateway
  for (let i = 0; i < n; i++) pg.classifySql(fresh(3 * n + i)[i % 4]!)
  const skeletonTexts = Array.from({ length: n }, (_, i) => fresh(n + i)[i % 4]!).map(s => Buffer.from(s))
  const hitsBefore = pg.classifierCacheStats?.().skeletonHits ?? 0
  t = now()
  for (const b of skeletonTexts) pg.classifySql(b.toString('utf8'))
  const elapsed = now() - t
  if ((pg.classifierCacheStats?.().skeletonHits ?? 0) - hitsBefore !== n) throw new Unavailable('skeleton cache not taken')
  const skeletonUs = (elapsed * 1000) / n
  return { coldUs, cachedUs, skeletonUs }
}

async function detectors(ctx: Context): Promise<{ clean: number; pii: number }> {
  const core = (await import('@portcullis/core').catch(() => undefined)) as Record<string, any> | undefined
  if (typeof core?.compileMaskPlan !== 'function') throw new Unavailable('masking not available yet')
  const plan = core.compileMaskPlan([{ id: 'all', detectors: [...core.DETECTORS], method: 'redact' }], { target: 't', subject: 's', groups: [] }, { hashKey: randomBytes(32) })
  const size = ctx.quick ? 4 << 20 : 32 << 20
  const rate = (text: string) => {
    // scanned in 16 KB pieces, as a codec sees rows and SSE events
    const pieces: string[] = []
    for (let i = 0; i < text.length; i += 16384) pieces.push(text.slice(i, i + 16384))
    const t = now()
    let hits = 0
    for (const p of pieces) hits += plan.scan(p).count
    const ms = now() - t
    return { mbps: text.length / 1e6 / (ms / 1000), hits }
  }
  const clean = rate(prose(size, false))
  const pii = rate(prose(size, true))
  if (pii.hits === 0) throw new Error('the detectors found nothing in text full of PII')
  return { clean: clean.mbps, pii: pii.mbps }
}

async function recorder(ctx: Context): Promise<{ write: number; verify: number }> {
  const core = (await import('@portcullis/core').catch(() => undefined)) as Record<string, any> | undefined
  if (typeof core?.openRecorder !== 'function' || typeof core?.verifyRecording !== 'function') throw new Unavailable('recorder not available yet')
  const dir = mkdtempSync(join(ctx.tmp, 'rec-'))
  try {
    const total = ctx.quick ? 64 << 20 : 512 << 20
    const payload = randomBytes(4096)
    const rec = core.openRecorder({
      dir, sessionId: 'bench', target: 'bench-pg', protocol: 'postgres',
      principal: { subject: 'bench', groups: ['bench'], issuer: 'bench' },
      maxBacklogBytes: 64 << 20,
    })
    const t = now()
    for (let sent = 0; sent < total; sent += payload.length) {
      rec.record('response', { data: payload })
      // let the writer drain before the bound; a gateway session yields to the event loop the same way
      if (rec.backlog > 32 << 20) while (rec.backlog > 8 << 20) await tick()
    }
    await rec.close('bench')
    const writeMs = now() - t
    if (rec.failed) throw new Error(`recorder failed: ${rec.failed.message}`)
    const bytes = statSync(rec.path).size
    const v0 = now()
    const result = await core.verifyRecording(rec.path)
    const verifyMs = now() - v0
    if (result.status !== 'intact') throw new Error(`verify says ${result.status}: ${JSON.stringify(result.problem)}`)
    return { write: bytes / 1e6 / (writeMs / 1000), verify: bytes / 1e6 / (verifyMs / 1000) }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

// What a codec spends in the core per operation, in the shape the redis codec calls it (a GET):
// session.record('request'), decideNow (policy, its decision record, metrics), record('response')
// and session.audit, 50 operations per event-loop turn like a pipelined burst. Time in the calls
// (their writes to disk happen later, batched, off the event loop).
async function perOperation(ctx: Context): Promise<{ record: number; decide: number; audit: number; all: number }> {
  const core = (await import('@portcullis/core').catch(() => undefined)) as Record<string, any> | undefined
  if (typeof core?.createCore !== 'function' || typeof core?.createDevIssuer !== 'function') throw new Unavailable('core sessions not available yet')
  const dir = mkdtempSync(join(ctx.tmp, 'ops-'))
  const issuer = await core.createDevIssuer({ dir })
  const config = core.parseConfig(JSON.stringify({
    identity: { issuers: [issuer.issuerConfig()] },
    recording: { dir: join(dir, 'recordings'), onFailure: 'block' },
    audit: { destination: join(dir, 'audit.log') },
    targets: [{ name: 'cache', protocol: 'redis', listen: '127.0.0.1:0', upstream: { host: '127.0.0.1', port: 6379 } }],
    rules: [{ id: 'bench-data', when: { groups: ['bench'], class: ['session', 'read', 'write', 'delete'] }, action: 'allow' }],
  }), 'bench.yaml')
  const c = await core.createCore(config)
  try {
    const s = c.openSession(config.targets[0], '127.0.0.1:1')
    await s.authenticate(await issuer.mint({ sub: 'bench', groups: ['bench'] }))
    const op = { protocol: 'redis', class: 'read', resources: ['key:foo'], statement: 'GET foo', fingerprint: core.fingerprint('GET foo'), statements: [{ class: 'read', resources: ['key:foo'], statement: 'GET foo' }], facts: { command: 'get' } }
    const req = Buffer.from('*2\r\n$3\r\nGET\r\n$3\r\nfoo\r\n')
    const res = Buffer.from('$3\r\nbar\r\n')
    const n = ctx.quick ? 20000 : 100000
    const time = async (fn: () => void) => {
      let busy = 0
      for (let i = 0; i < n; i += 50) {
        const t = now()
        for (let j = 0; j < 50; j++) fn()
        busy += now() - t
        await tick()
      }
      return (busy * 1000) / n
    }
    const audit = () => s.audit({ class: op.class, resources: op.resources, fingerprint: op.fingerprint, statement: op.statement, decision: 'allow', rule: 'bench-data', bytes: 9, masked: 0, durationMs: 0 })
    const one = () => {
      s.record('request', { command: 'GET', raw: req })
      s.decideNow(op)
      s.record('response', { raw: res })
      audit()
    }
    await time(one) // warm-up: every path compiled before anything is timed
    const record = await time(() => s.record('request', { command: 'GET', raw: req }))
    const decide = await time(() => s.decideNow(op))
    const auditUs = await time(audit)
    const all = await time(one)
    await s.close()
    return { record, decide, audit: auditUs, all }
  } finally {
    await c.close()
    rmSync(dir, { recursive: true, force: true })
  }
}

const scenario: Scenario = {
  name: 'internals',
  quick: true,
  async run(base) {
    const ctx = base as Context
    const row = (scenarioName: string, metric: string, value: Value, higherIsBetter: boolean): Row =>
      ({ scenario: scenarioName, metric, higherIsBetter, direct: '—', portcullis: value, reference: '—' })
    // a failure here is the gateway's own code failing: it counts like a request failing through it
    const c = await ctx.attempt('portcullis', 'classification', () => ctx.repeat(() => classification(ctx)))
    const d = await ctx.attempt('portcullis', 'detector scan', () => ctx.repeat(() => detectors(ctx)))
    const r = await ctx.attempt('portcullis', 'recorder', () => ctx.repeat(() => recorder(ctx)))
    const o = await ctx.attempt('portcullis', 'per-operation core calls', () => ctx.repeat(() => perOperation(ctx)))
    const pick = <T extends object>(v: T | string, k: keyof T): Value => (typeof v === 'string' ? v : (v[k] as number))
    return [
      row('SQL classification', 'µs/statement, cold parse', pick(c, 'coldUs'), false),
      row('SQL classification', 'µs/statement, cached (text decoded from bytes each time)', pick(c, 'cachedUs'), false),
      row('SQL classification', 'µs/statement, skeleton hit (new inline literals, no parse)', pick(c, 'skeletonUs'), false),
      row('detector scan (all detectors)', 'MB/s, text without PII', pick(d, 'clean'), true),
      row('detector scan (all detectors)', 'MB/s, PII every 1 KB', pick(d, 'pii'), true),
      row('recorder, 4 KB records, hash chain, fsync on close', 'MB/s', pick(r, 'write'), true),
      row('verify recording', 'MB/s', pick(r, 'verify'), true),
      row('core per operation (redis GET shape)', 'µs, session.record of a small request', pick(o, 'record'), false),
      row('core per operation (redis GET shape)', 'µs, session.decideNow (policy, decision record, metrics)', pick(o, 'decide'), false),
      row('core per operation (redis GET shape)', 'µs, session.audit (one JSON line)', pick(o, 'audit'), false),
      row('core per operation (redis GET shape)', 'µs, all four calls of one GET', pick(o, 'all'), false),
    ]
  },
}
export default scenario
