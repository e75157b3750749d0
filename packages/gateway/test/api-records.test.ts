// The admin API's read side for auditors (api-records.ts): recordings with their verify status, one
// recording as transcript entries, and the audit search — who may ask, what filters do, what a
// path-like id or a bad time gets.
import t from 'tap'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { startGateway } from '../src/index.ts'
import { silentLogger } from '../src/log.ts'
import { lineClient, lineCodec, recordingsIn, testEnv, waitFor } from './helpers.ts'

async function get(base: string, path: string, token?: string) {
  const res = await fetch(base + path, { headers: token ? { authorization: `Bearer ${token}` } : {} })
  return { status: res.status, json: (await res.json()) as any }
}

t.test('recordings and audit over the JSON API, for admins and auditors only', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  // audit goes to the file testEnv names (no auditStream handed in)
  const gw = await startGateway(env.config(), { log: silentLogger, codecs: [lineCodec()] })
  t.teardown(() => gw.close(100))
  const admin = gw.admin!.url

  for (const who of ['ann', 'bob']) {
    const c = await lineClient(gw.targets.lines!.port)
    c.send(`AUTH ${await env.token(who, ['agents'])}`)
    t.equal(await c.next(), `OK ${who}`)
    c.send(`read thing-${who}`)
    t.equal(await c.next(), 'ALLOW read')
    c.send('admin rm-rf')
    t.match(await c.next(), /^BLOCK no-admin/)
    c.send('QUIT')
    await c.closed
  }
  const dir = join(env.dir, 'recordings')
  await waitFor(async () => (await recordingsIn(dir)).length === 2, 'two recordings')
  await waitFor(async () => ((await readFile(join(env.dir, 'audit.jsonl'), 'utf8').catch(() => '')).match(/"decision"/g) ?? []).length >= 4, 'four audit events')

  const auditor = await env.token('aud', ['auditors'])
  const agent = await env.token('ann', ['agents'])
  t.equal((await get(admin, '/api/recordings')).status, 401, 'a token is required')
  const refused = await get(admin, '/api/recordings', agent)
  t.same([refused.status, refused.json.error.code], [403, 'forbidden'])
  t.equal((await get(admin, '/api/audit', agent)).status, 403)

  await t.test('the list carries each recording verify status, filtered by principal', async (t) => {
    const all = await get(admin, '/api/recordings', auditor)
    t.equal(all.status, 200)
    t.equal(all.json.recordings.length, 2)
    t.ok(all.json.recordings.every((r: any) => r.status === 'intact' && r.target === 'lines'))
    const bob = await get(admin, '/api/recordings?principal=bob', await env.token('root', ['admins']))
    t.same(bob.json.recordings.map((r: any) => r.subject), ['bob'])
    const none = await get(admin, '/api/recordings?day=1999-01-01', auditor)
    t.same(none.json.recordings, [])
  })

  await t.test('one recording as entries; a tampered one says where it fails; no path gets out', async (t) => {
    const [r] = (await get(admin, '/api/recordings?principal=ann', auditor)).json.recordings
    const one = await get(admin, `/api/recordings/${r.day}/${r.id}`, auditor)
    t.equal(one.status, 200)
    t.equal(one.json.recording.verify.status, 'intact')
    t.ok(one.json.recording.entries.some((e: any) => e.type === 'decision' && /block by rule no-admin/.test(e.lines[0])))
    const file = (await recordingsIn(dir)).find((f) => f.endsWith(`${r.id}.pcr`))!
    const bytes = Buffer.from(await readFile(file))
    bytes[Math.floor(bytes.length / 2)]! ^= 0x55
    await writeFile(file, bytes)
    const bad = await get(admin, `/api/recordings/${r.day}/${r.id}`, auditor)
    t.not(bad.json.recording.verify.status, 'intact')
    t.type(bad.json.recording.verify.problem.record, 'number')
    const listed = (await get(admin, '/api/recordings?principal=ann', auditor)).json.recordings[0]
    t.not(listed.status, 'intact', 'the list verifies again after the file changed')
    for (const p of [`/api/recordings/${r.day}/..%2F..%2Faudit`, `/api/recordings/..%2F${r.day}/${r.id}`, '/api/recordings/2020-01-01/nope']) {
      t.equal((await get(admin, p, auditor)).status, 404, p)
    }
  })

  await t.test('the audit search filters by subject, class, decision and time, newest first, paged', async (t) => {
    const all = await get(admin, '/api/audit', auditor)
    t.equal(all.status, 200)
    t.ok(all.json.total >= 4)
    const times = all.json.events.map((e: any) => Date.parse(e.time))
    t.same(times, [...times].sort((a, b) => b - a), 'newest first')
    t.ok(all.json.events.every((e: any) => e.level === undefined && e.log === undefined), 'only audit events, as written')
    const bobBlocks = await get(admin, '/api/audit?subject=bob&decision=block', auditor)
    t.same(bobBlocks.json.events.map((e: any) => [e.principal.sub, e.class, e.decision]), [['bob', 'admin', 'block']])
    const reads = await get(admin, '/api/audit?class=read&pageSize=1&page=1', auditor)
    t.same([reads.json.total, reads.json.events.length, reads.json.page], [2, 1, 1])
    const future = await get(admin, `/api/audit?from=${new Date(Date.now() + 3600_000).toISOString()}`, auditor)
    t.same([future.json.total, future.json.events], [0, []])
    const badTime = await get(admin, '/api/audit?to=yesterday-ish', auditor)
    t.same([badTime.status, badTime.json.error.code], [400, 'bad_request'])
    const post = await fetch(admin + '/api/audit', { method: 'POST', headers: { authorization: `Bearer ${auditor}` } })
    t.equal(post.status, 405)
  })
})
