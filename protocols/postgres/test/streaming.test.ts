import t from 'tap'
import pg from 'pg'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { readRecording } from '@portcullis/core'
import { connectClient, startGateway, type Gateway } from './harness.ts'

const connect = connectClient

const ROWS = 20_000

t.test('big results', async t => {
  const gw = await startGateway({
    masking: [{ id: 'pii', when: { targets: ['db'] }, columns: ['people.email'], method: 'redact' }],
  })
  t.teardown(() => gw.stop())
  const setup = new pg.Client({ connectionString: gw.pg.url })
  await setup.connect()
  t.teardown(() => setup.end())
  // every 7th email is NULL and lengths vary, so masked rows shrink, grow and keep NULLs
  await setup.query(`create table people as
    select g as id, case when g % 7 = 0 then null else repeat('u', g % 23) || g || '@example.com' end as email,
           repeat(md5(g::text), 1 + g % 3) as payload
    from generate_series(1, ${ROWS}) g`)

  t.test('a masked column is masked in every row of a result spanning many reads', async t => {
    const c = await connect(t, gw)
    const r = await c.query('select id, email, payload from people order by id')
    const direct = await setup.query('select id, payload from people order by id')
    t.equal(r.rows.length, ROWS, 'every row arrived')
    let wrong = 0
    for (let i = 0; i < ROWS; i++) {
      const row = r.rows[i]
      const id = i + 1
      const email = id % 7 === 0 ? null : '[REDACTED]'
      if (row.id !== id || row.email !== email || row.payload !== direct.rows[i].payload) wrong++
    }
    t.equal(wrong, 0, 'each row: email redacted (NULL stays NULL), id and payload exactly as stored')
  })

  t.test('the same result through the extended protocol, in binary, is masked the same way', async t => {
    const c = await connect(t, gw)
    const r = await c.query({ text: 'select id, email from people where id <= $1 order by id', values: [ROWS], binary: true } as pg.QueryConfig)
    t.equal(r.rows.length, ROWS)
    t.equal(r.rows.filter((row, i) => row.email !== ((i + 1) % 7 === 0 ? null : '[REDACTED]')).length, 0, 'every email masked')
  })

  t.test('an unmasked big result arrives byte for byte', async t => {
    const c = await connect(t, gw)
    const sql = 'select id, payload, md5(payload) as sum from people order by id'
    const [through, direct] = await Promise.all([c.query(sql), setup.query(sql)])
    t.equal(through.rows.length, ROWS)
    t.same(through.rows, direct.rows)
  })

  t.test('a client that stops reading holds the upstream back; nothing is lost when it reads again', async t => {
    const c = await connect(t, gw, { application_name: 'slow-reader' })
    const socket = (c as unknown as { connection: { stream: import('node:net').Socket } }).connection.stream
    // ~40 MB: far more than the socket buffers and the gateway's bounded backlog together
    const rows = c.query("select g, repeat('x', 400) as pad from generate_series(1, 100000) g")
    socket.pause()
    // with backpressure the backend blocks writing to the gateway; without it the gateway would
    // take the whole result into memory and the backend would go idle
    let seen = ''
    for (let i = 0; i < 600 && seen !== 'active/ClientWrite'; i++) {
      await new Promise(r => setTimeout(r, 50))
      const r = await setup.query("select state, wait_event from pg_stat_activity where application_name = 'slow-reader' and backend_type = 'client backend'")
      seen = r.rows.map(x => `${x.state}/${x.wait_event}`).join(',')
    }
    t.equal(seen, 'active/ClientWrite', 'the upstream backend waits on a full socket while the client does not read')
    socket.resume()
    const r = await rows
    t.equal(r.rows.length, 100000, 'every row arrives once the client reads again')
    t.equal(r.rows[99999].g, 100000)
  })

  t.test('the request of a round trip is recorded as the client sent it, in the record of its decision', async t => {
    const c = await connect(t, gw)
    await c.query({ text: 'select id from people where id = $1', values: ['4242'] })
    await c.end()
    await new Promise(r => setTimeout(r, 300))
    const files = readdirSync(gw.recordings, { recursive: true })
      .map(String)
      .map(f => join(gw.recordings, f))
      .filter(f => /\.pcr$/.test(f))
    let found = false
    for (const f of files) {
      if (!readFileSync(f).includes('where id = $1')) continue
      const records: { type: string; payload: Record<string, unknown> }[] = []
      for await (const r of readRecording(f)) records.push({ type: r.type, payload: r.payload })
      const parse = records.findIndex(r => r.type === 'request' && r.payload.type === 'P' && String(r.payload.statement).includes('where id = $1'))
      if (parse < 0) continue
      found = true
      const next = records[parse + 1]
      // the Execute is decided at once: the rest of the round trip is in its decision's record
      t.equal(next.type, 'decision', 'the Parse record is followed by the decision, which holds the rest of the round trip')
      t.match(next.payload, { action: 'allow', class: 'read' })
      const batch = next.payload.request as Record<string, unknown>
      t.equal(batch.type, 'BDES', 'Bind, Describe, Execute and Sync in one request, in order')
      const bytes = Buffer.from(batch.bytes as Uint8Array)
      t.equal(bytes[0], 0x42, 'the bytes start with the Bind')
      t.ok(bytes.includes('4242'), 'the bound value is there as sent')
      t.equal(bytes.subarray(-5).toString('latin1'), 'S\0\0\0\x04', 'and end with the Sync')
      t.equal(records[parse + 2].type, 'response', 'the response follows: three records for the round trip')
    }
    t.ok(found, 'the round trip is in a recording')
  })
})
