// The gateway with the real Redis codec in front of a real Redis 7: what the listener itself must
// get right for Redis clients (the codec's own behaviour is tested in protocols/redis).
import t from 'tap'
import { connect } from 'node:net'
import { once } from 'node:events'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { parseConfig } from '@portcullis/core'
import { startRedis } from '@portcullis/fixtures/redis'
import { startGateway } from '../src/index.ts'
import { silentLogger } from '../src/log.ts'
import { testEnv } from './helpers.ts'

t.test('a Redis client that half-closes after sending its commands gets every reply, then the close', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const redis = await startRedis({})
  t.teardown(() => redis.stop())
  const targets = `
  - { name: cache, protocol: redis, listen: 127.0.0.1:0, upstream: { host: 127.0.0.1, port: ${redis.port} } }`
  const gw = await startGateway(parseConfig(env.yaml({ admin: false, targets }), join(env.dir, 'p.yaml')), {
    log: silentLogger,
    auditStream: new PassThrough().resume(),
  })
  t.teardown(() => gw.close(100))
  const token = await env.token('ann', ['agents'])
  const sock = connect({ host: '127.0.0.1', port: gw.targets.cache!.port, allowHalfOpen: true })
  await once(sock, 'connect')
  let got = ''
  sock.on('data', (d) => (got += d.toString('latin1')))
  // the token is checked and the upstream connected after the FIN has arrived
  sock.end(`AUTH ${token}\r\n${'PING\r\n'.repeat(20)}`)
  await once(sock, 'close')
  t.equal(got, '+OK\r\n' + '+PONG\r\n'.repeat(20))
})
