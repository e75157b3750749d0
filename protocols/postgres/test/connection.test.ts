import t from 'tap'
import pg from 'pg'
import { startGateway } from './harness.ts'

t.test('a pg client authenticates with its token and queries through the gateway', async t => {
  const gw = await startGateway()
  t.teardown(() => gw.stop())
  const client = new pg.Client({ connectionString: await gw.url() })
  await client.connect()
  t.teardown(() => client.end())
  const r = await client.query('select current_user as u, 1 + 1 as two')
  t.same(r.rows, [{ u: 'portcullis', two: 2 }])
})
