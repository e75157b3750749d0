import t from 'tap'
import pg from 'pg'
import { from as copyFrom, to as copyTo } from 'pg-copy-streams'
import { pipeline } from 'node:stream/promises'
import { Readable, Writable } from 'node:stream'
import { startGateway } from './harness.ts'

t.test('COPY', async t => {
  const gw = await startGateway({
    masking: [
      { id: 'pii', when: { targets: ['db'] }, columns: ['people.email'], method: 'redact' },
      { id: 'free-text', when: { targets: ['db'] }, detectors: ['email'], method: 'redact' },
    ],
  })
  t.teardown(() => gw.stop())
  const direct = new pg.Client({ connectionString: gw.pg.url })
  await direct.connect()
  t.teardown(() => direct.end())
  await direct.query('create table people (id int, email text, bio text)')
  const c = new pg.Client({ connectionString: await gw.url() })
  c.on('error', () => {})
  await c.connect()
  t.teardown(() => c.end())

  t.test('COPY FROM STDIN writes through the gateway', async t => {
    const rows = ['1\tann@example.com\tlikes tea', '2\tbob@example.com\treach me: bob.alt@example.net', '3\t\\N\tno email']
    await pipeline(Readable.from([rows.join('\n') + '\n']), c.query(copyFrom('copy people from stdin')))
    const r = await direct.query('select count(*)::int as n from people')
    t.equal(r.rows[0].n, 3)
  })

  t.test('COPY TO STDOUT is masked by column and by detector', async t => {
    const chunks: Buffer[] = []
    await pipeline(
      c.query(copyTo('copy people to stdout')),
      new Writable({
        write(chunk, _enc, cb) {
          chunks.push(chunk)
          cb()
        },
      }),
    )
    t.equal(
      Buffer.concat(chunks).toString(),
      ['1\t[REDACTED]\tlikes tea', '2\t[REDACTED]\treach me: [REDACTED:email]', '3\t\\N\tno email', ''].join('\n'),
    )
    const cols: Buffer[] = []
    await pipeline(
      c.query(copyTo('copy people (bio, email) to stdout')),
      new Writable({
        write(chunk, _enc, cb) {
          cols.push(chunk)
          cb()
        },
      }),
    )
    t.match(Buffer.concat(cols).toString().split('\n')[0], 'likes tea\t[REDACTED]', 'a column list is followed')
  })

  t.test('COPY TO STDOUT in binary format is refused when a mask applies (its values cannot be rewritten)', async t => {
    const sink = new Writable({ write(_chunk, _enc, cb) { cb() } })
    await t.rejects(pipeline(c.query(copyTo('copy people to stdout (format binary)')), sink), /binary format cannot be masked/)
    const r = await c.query('select count(*)::int as n from people')
    t.equal(r.rows[0].n, 3, 'the session stays usable')
  })

  t.test('COPY to a server file is refused (admin)', async t => {
    const e = await c.query("copy people to '/tmp/people.txt'").catch(e => e)
    t.equal(e.code, '42501')
    const r = await c.query('select 1 as ok')
    t.equal(r.rows[0].ok, 1)
  })
})
