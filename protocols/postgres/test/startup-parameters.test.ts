import t from 'tap'
import postgres from 'postgres'
import pg from 'pg'
import { startGateway } from './harness.ts'

// With backslash escapes on, or a client-only multibyte encoding, the server would read a statement
// differently from the classifier, so a statement could hide inside what looks like a literal.
t.test('startup settings that would make the server read SQL unlike the classifier are refused', async t => {
  const gw = await startGateway()
  t.teardown(() => gw.stop())
  const token = await gw.token('agent-1', ['agents'])

  const off = postgres({ host: gw.host, port: gw.port, user: 'agent-1', pass: token, database: 'app', max: 1,
    connection: { standard_conforming_strings: 'off' }, onnotice: () => {} })
  await t.rejects(off`SELECT 1`, /standard_conforming_strings must stay on/)
  await off.end({ timeout: 1 })

  const sjis = postgres({ host: gw.host, port: gw.port, user: 'agent-1', pass: token, database: 'app', max: 1,
    connection: { client_encoding: 'SJIS' }, onnotice: () => {} })
  await t.rejects(sjis`SELECT 1`, /client_encoding SJIS is not accepted/)
  await sjis.end({ timeout: 1 })

  const fine = new pg.Client({ host: gw.host, port: gw.port, user: 'agent-1', password: token, database: 'app', client_encoding: 'UTF8' } as pg.ClientConfig)
  await fine.connect()
  const { rows } = await fine.query('SHOW standard_conforming_strings')
  t.equal(rows[0].standard_conforming_strings, 'on', 'a plain UTF8 client connects and keeps standard strings')
  await fine.end()
})
