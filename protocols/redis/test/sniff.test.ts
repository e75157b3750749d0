import t from 'tap'
import { sniffRedis } from '../src/sniff.ts'
import { redisCodec } from '../src/index.ts'

t.test('RESP arrays and inline commands are Redis; other protocols are not', async t => {
  t.equal(redisCodec.protocol, 'redis')
  t.equal(sniffRedis(Buffer.from('*2\r\n$4\r\nAUTH\r\n')), true)
  t.equal(sniffRedis(Buffer.from('*1\r\n$4\r\nPING\r\n')), true)
  t.equal(sniffRedis(Buffer.from('PING\r\n')), true)
  t.equal(sniffRedis(Buffer.from('auth tok\r\n')), true)
  t.equal(sniffRedis(Buffer.from('HELLO 3 AUTH u t\r\n')), true)
  t.equal(sniffRedis(Buffer.from('GET key\r\n')), true)
  t.equal(sniffRedis(Buffer.from('GET /v1/models HTTP/1.1\r\n')), false, 'an HTTP request line')
  t.equal(sniffRedis(Buffer.from('POST /v1/chat HTTP/1.1\r\n')), false)
  t.equal(sniffRedis(Buffer.from([0, 0, 0, 8, 4, 0xd2, 0x16, 0x2f])), false, 'a Postgres SSLRequest')
  t.equal(sniffRedis(Buffer.from([0x16, 3, 1, 2, 0])), false, 'a TLS ClientHello')
  t.equal(sniffRedis(Buffer.from('NOTACOMMAND x\r\n')), false)
})

t.test('too few bytes to tell ask for more', async t => {
  t.equal(sniffRedis(Buffer.alloc(0)), undefined)
  t.equal(sniffRedis(Buffer.from('*')), undefined)
  t.equal(sniffRedis(Buffer.from('*12')), undefined)
  t.equal(sniffRedis(Buffer.from('PIN')), undefined)
})
