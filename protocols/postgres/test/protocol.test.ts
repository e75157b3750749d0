import t from 'tap'
import pg from 'pg'
import { connect } from 'node:net'
import { once } from 'node:events'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { readRecording } from '@portcullis/core'
import { startGateway } from './harness.ts'
import { BufferWriter } from '../src/buffer-writer.ts'
import { serializePasswordMessage } from '../src/frontend.ts'

t.test('protocol details', async t => {
  const gw = await startGateway()
  t.teardown(() => gw.stop())

  t.test('GSSENCRequest is answered N and a newer minor version gets NegotiateProtocolVersion', async t => {
    const s = connect({ host: gw.host, port: gw.port })
    t.teardown(() => s.destroy())
    await once(s, 'connect')
    const chunks: Buffer[] = []
    s.on('data', c => chunks.push(c))
    s.write(new BufferWriter().int32(80877104).startup())
    while (chunks.length === 0) await new Promise(r => setTimeout(r, 20))
    t.equal(Buffer.concat(chunks).toString(), 'N')
    chunks.length = 0
    // protocol 3.2 with a protocol option we do not know
    s.write(new BufferWriter().int32((3 << 16) | 2).cstring('user').cstring('a').cstring('_pq_.future').cstring('x').int8(0).startup())
    // NegotiateProtocolVersion and AuthenticationCleartextPassword may arrive in separate chunks
    const complete = (b: Buffer) => b.length >= 5 && b.length >= 1 + b.readInt32BE(1) + 9
    while (!complete(Buffer.concat(chunks))) await new Promise(r => setTimeout(r, 20))
    const got = Buffer.concat(chunks)
    t.equal(String.fromCharCode(got[0]), 'v', 'NegotiateProtocolVersion first')
    t.equal(got.readInt32BE(5), 0, 'the newest minor we speak is 3.0')
    t.ok(got.includes(Buffer.from('_pq_.future\0')), 'the unknown option is named')
    const afterV = got.subarray(1 + got.readInt32BE(1))
    t.equal(String.fromCharCode(afterV[0]), 'R', 'then the password request')
    t.equal(afterV.readInt32BE(5), 3, 'cleartext: the token')
    s.write(serializePasswordMessage('garbage'))
  })

  t.test('SQL-level PREPARE/EXECUTE: EXECUTE takes the class of its body', async t => {
    const direct = new pg.Client({ connectionString: gw.pg.url })
    await direct.connect()
    t.teardown(() => direct.end())
    await direct.query('create table jobs (id int)')
    await direct.query('insert into jobs values (1), (2)')
    const c = new pg.Client({ connectionString: await gw.url() })
    c.on('error', () => {})
    await c.connect()
    t.teardown(() => c.end())
    await c.query('prepare wipe as delete from jobs')
    const e = await c.query('execute wipe').catch(e => e)
    t.equal(e.code, '42501', 'a prepared bulk delete is refused at EXECUTE')
    await c.query('prepare one(int) as select id from jobs where id = $1')
    t.same((await c.query('execute one(2)')).rows, [{ id: 2 }])
    const unknown = await c.query('execute nowhere').catch(e => e)
    t.equal(unknown.code, '42501', 'an EXECUTE of a statement the gateway never saw fails closed')
    t.equal((await direct.query('select count(*)::int as n from jobs')).rows[0].n, 2)
  })

  t.test('an admin kill ends the session with FATAL 57P01', async t => {
    const c = new pg.Client({ connectionString: await gw.url('killed-agent') })
    const errors: { code?: string }[] = []
    c.on('error', e => errors.push(e as { code?: string }))
    await c.connect()
    const id = gw.core.sessions().find(s => s.subject === 'killed-agent')?.id
    t.ok(id)
    gw.core.kill(id!, 'terminated by an administrator')
    const e = await c.query('select 1').catch(e => e)
    t.ok(e instanceof Error, 'the connection is gone')
    t.ok(errors.some(x => x.code === '57P01') || (e as { code?: string }).code === '57P01', 'the client was told 57P01')
  })

  t.test('the recording holds requests and masked responses, never the token or the upstream password', async t => {
    const token = await gw.token('recorded-agent')
    const c = new pg.Client({ host: gw.host, port: gw.port, user: 'recorded-agent', password: token, database: 'app' })
    await c.connect()
    await c.query("select 'recorded-marker' as m")
    await c.end()
    await new Promise(r => setTimeout(r, 300))
    const files = readdirSync(gw.recordings, { recursive: true }).map(String).map(f => join(gw.recordings, f)).filter(f => /\.[a-z]+$/.test(f))
    let requests = 0
    let responses = 0
    let found = false
    for (const f of files) {
      const raw = readFileSync(f)
      t.notOk(raw.includes(token), `${f} has no token`)
      t.notOk(raw.includes(gw.pg.password), `${f} has no upstream password`)
      if (!raw.includes('recorded-marker')) continue
      found = true
      for await (const e of readRecording(f)) {
        // a Query decided at once is recorded in its decision's record (`request`)
        if (e.type === 'request' || (e.type === 'decision' && e.payload.request !== undefined)) requests++
        if (e.type === 'response') responses++
      }
    }
    t.ok(found, 'the statement is in a recording')
    t.ok(requests >= 1 && responses >= 1, 'requests and responses are recorded')
  })
})
