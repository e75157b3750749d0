import t from 'tap'
import { Redis } from 'ioredis'
import { RawClient, startGateway } from './harness.ts'

const MASKING = `
  - { id: pii-fields, fields: [ssn, email], method: redact }
  - { id: secret-keys, keys: ["secret:*"], method: redact }
  - { id: hidden, keys: ["hidden:*"], method: "null" }
  - { id: detect, detectors: [email], method: redact }`

t.test('hash fields are masked by name in HGET, HMGET and HGETALL', async t => {
  const gw = await startGateway(t, { masking: MASKING })
  const r = new Redis({ port: gw.port, password: await gw.token(), lazyConnect: true, enableReadyCheck: false })
  t.teardown(() => r.disconnect())
  await r.connect()
  await r.hset('user:1', 'name', 'Ann', 'ssn', '078-05-1120', 'email', 'ann@example.com')
  t.equal(await r.hget('user:1', 'ssn'), '[REDACTED]')
  t.equal(await r.hget('user:1', 'name'), 'Ann')
  t.same(await r.hmget('user:1', 'name', 'ssn'), ['Ann', '[REDACTED]'])
  t.same(await r.hgetall('user:1'), { name: 'Ann', ssn: '[REDACTED]', email: '[REDACTED]' })
  const last = gw.audit().filter(e => e.statement === 'HGETALL user:1').at(-1)
  t.equal(last?.masked, 2)
})

t.test('values are masked by key glob, nil for null, in GET, MGET and inside EXEC', async t => {
  const gw = await startGateway(t, { masking: MASKING })
  const r = new Redis({ port: gw.port, password: await gw.token(), lazyConnect: true, enableReadyCheck: false })
  t.teardown(() => r.disconnect())
  await r.connect()
  await r.mset('secret:1', 'topsecret', 'open:1', 'fine', 'hidden:1', 'gone')
  t.equal(await r.get('secret:1'), '[REDACTED]')
  t.equal(await r.get('hidden:1'), null)
  t.same(await r.mget('open:1', 'secret:1', 'hidden:1'), ['fine', '[REDACTED]', null])
  t.same(await r.multi().get('open:1').get('secret:1').exec(), [[null, 'fine'], [null, '[REDACTED]']])
})

t.test('detectors mask text in any reply and in pub/sub messages', async t => {
  const gw = await startGateway(t, { masking: MASKING })
  const token = await gw.token()
  const r = new Redis({ port: gw.port, password: token, lazyConnect: true, enableReadyCheck: false })
  const sub = new Redis({ port: gw.port, password: token, lazyConnect: true, enableReadyCheck: false })
  t.teardown(() => { r.disconnect(); sub.disconnect() })
  await r.connect()
  await sub.connect()
  await r.rpush('notes', 'call bob@example.com', 'nothing here')
  t.same(await r.lrange('notes', 0, -1), ['call [REDACTED:email]', 'nothing here'])
  await sub.subscribe('ch')
  const got = new Promise<string>(resolve => sub.on('message', (_c, m) => resolve(m)))
  await r.publish('ch', 'reply to eve@example.org')
  t.equal(await got, 'reply to [REDACTED:email]')
})

t.test('RESP3 maps are masked by field name', async t => {
  const gw = await startGateway(t, { masking: MASKING })
  const c = await RawClient.connect(gw.port)
  t.teardown(() => c.close())
  c.send(`HELLO 3 AUTH a ${await gw.token()}\r\n`)
  await c.read(s => s.includes('modules'))
  c.send('HSET u ssn 1234 name Bo\r\nHGETALL u\r\n')
  t.equal(await c.lines(10), ':2\r\n%2\r\n$3\r\nssn\r\n$10\r\n[REDACTED]\r\n$4\r\nname\r\n$2\r\nBo\r\n')
  c.send('GET hidden:none\r\nSET hidden:x v\r\nGET hidden:x\r\n')
  t.equal(await c.lines(3), '_\r\n+OK\r\n_\r\n', 'a null mask is a RESP3 null')
})

t.test('replies are recorded after masking, requests without AUTH', async t => {
  const gw = await startGateway(t, { masking: MASKING })
  const token = await gw.token()
  const c = await RawClient.connect(gw.port)
  c.send(`AUTH ${token}\r\nSET secret:r plain-secret-value\r\nGET secret:r\r\n`)
  await c.lines(4)
  c.close()
  await new Promise(r => setTimeout(r, 200))
  const { readdirSync, readFileSync } = await import('node:fs')
  const files = readdirSync(gw.recordings, { recursive: true }).map(String).filter(f => !f.endsWith('/'))
  const bytes = Buffer.concat(files.map(f => { try { return readFileSync(`${gw.recordings}/${f}`) } catch { return Buffer.alloc(0) } }))
  t.ok(bytes.length > 0, 'a recording was written')
  t.ok(bytes.includes('[REDACTED]'), 'the masked reply is in it')
  t.ok(bytes.includes('plain-secret-value'), 'the request as sent is in it')
  t.notOk(bytes.includes(token), 'the token is not')
  t.equal(bytes.indexOf(Buffer.from('$10\r\nplain-secret-value')), -1, 'the unmasked reply is not')
})
