// An audit log that cannot be written refuses every command (fail closed): with /dev/full as the
// audit file (open succeeds, every write fails with ENOSPC), a SET gets one -ERR reply and the key
// never reaches the real redis-server behind the gateway.
import t from 'tap'
import { Redis } from 'ioredis'
import { startGateway } from './harness.ts'

t.test('while the audit log cannot be written, commands are refused and nothing runs upstream', async t => {
  const gw = await startGateway(t, { audit: '{ destination: /dev/full }' })
  const client = new Redis({ port: gw.port, password: await gw.token(), lazyConnect: true, enableReadyCheck: false, maxRetriesPerRequest: 0 })
  await client.connect()
  t.teardown(() => client.disconnect())
  await gw.core.flushAudit()
  t.match(gw.core.auditFailure()?.message, /ENOSPC|no space/i)
  await t.rejects(client.set('audited:k', 'v'), { message: 'ERR audit log unavailable; operations are refused until it can be written again' })
  await t.rejects(client.get('audited:k'), { message: /^ERR audit log unavailable/ })
  // a pipeline: one error per command, in order, and the connection stays usable
  const replies = await client.pipeline().set('audited:p', '1').incr('audited:p').exec()
  t.same(replies?.map(([err]) => (err as Error | null)?.message), ['ERR audit log unavailable; operations are refused until it can be written again', 'ERR audit log unavailable; operations are refused until it can be written again'])
  const direct = new Redis({ host: gw.redis.host, port: gw.redis.port, username: gw.redis.user ?? 'gateway', password: gw.redis.password, lazyConnect: true })
  await direct.connect()
  t.teardown(() => direct.disconnect())
  t.same(await direct.exists('audited:k', 'audited:p'), 0, 'nothing ran upstream')
})
