// An audit log that cannot be written refuses every statement (fail closed): with /dev/full as the
// audit file (open succeeds, every write fails with ENOSPC), a client's INSERT gets one
// ErrorResponse and nothing reaches the real Postgres behind the gateway.
import t from 'tap'
import pg from 'pg'
import { startGateway } from './harness.ts'

t.test('while the audit log cannot be written, statements are refused and nothing runs upstream', async t => {
  const gw = await startGateway({ auditDestination: '/dev/full' })
  t.teardown(() => gw.stop())
  const direct = new pg.Client({ connectionString: gw.pg.url })
  await direct.connect()
  t.teardown(() => direct.end())
  await direct.query('CREATE TABLE audited (id int)')

  const client = new pg.Client({ connectionString: await gw.url() })
  await client.connect()
  t.teardown(() => client.end().catch(() => {}))
  // the login's audit line is the first write that fails
  await gw.core.flushAudit()
  t.match(gw.core.auditFailure()?.message, /ENOSPC|no space/i)
  await t.rejects(client.query('INSERT INTO audited VALUES (1)'), { code: '42501', message: 'audit log unavailable; operations are refused until it can be written again' })
  // the session goes on (Postgres sends one error, then ReadyForQuery): the next statement is refused alike
  await t.rejects(client.query({ text: 'INSERT INTO audited VALUES ($1)', values: [2] }), { code: '42501' })
  await t.rejects(client.query('SELECT 1'), { code: '42501' })
  t.same((await direct.query('SELECT count(*)::int AS n FROM audited')).rows, [{ n: 0 }], 'nothing ran upstream')
})
