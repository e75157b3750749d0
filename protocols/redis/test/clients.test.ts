import t from 'tap'
import { execFile, spawn } from 'node:child_process'
import { promisify } from 'node:util'
import { createClient } from '@redis/client'
import searchModule from '@redis/search'
import { startGateway } from './harness.ts'

const run = promisify(execFile)
// CommonJS interop: the module's commands are its default export
const search = ((searchModule as unknown as { default?: typeof searchModule }).default ?? searchModule) as never

t.test('redis-cli, RESP and inline, with a token as the password', async t => {
  const gw = await startGateway(t)
  const token = await gw.token()
  const cli = (...args: string[]) => run('redis-cli', ['-p', String(gw.port), '--user', 'agent', '--pass', token, '--no-auth-warning', ...args])
  t.equal((await cli('SET', 'greeting', 'hello world')).stdout, 'OK\n')
  t.equal((await cli('GET', 'greeting')).stdout, 'hello world\n')
  t.equal((await cli('ACL', 'WHOAMI')).stdout, 'gateway\n')
  // lines typed into redis-cli are split by redis-cli itself, quotes and all
  const typed = spawn('redis-cli', ['-p', String(gw.port), '--no-auth-warning'], { stdio: ['pipe', 'pipe', 'inherit'] })
  let out = ''
  typed.stdout.on('data', d => (out += d))
  typed.stdin.end(`AUTH ${token}\nSET "quoted key" "it's"\nGET "quoted key"\n`)
  await new Promise(r => typed.on('close', r))
  t.equal(out, "OK\nOK\nit's\n")
  // --pipe sends the bytes as they are: inline commands reach the gateway's inline framer
  const piped = spawn('redis-cli', ['-p', String(gw.port), '--pipe'], { stdio: ['pipe', 'pipe', 'inherit'] })
  let pipeOut = ''
  piped.stdout.on('data', d => (pipeOut += d))
  piped.stdin.end(`AUTH ${token}\r\nSET inline "v a l"\r\nAPPEND inline '!'\r\n`)
  await new Promise(r => piped.on('close', r))
  t.match(pipeOut, /errors: 0, replies: 3/)
  t.equal((await cli('GET', 'inline')).stdout, 'v a l!\n')
  const bad = await cli('CONFIG', 'GET', 'maxmemory').catch(e => e as { stdout: string })
  t.equal(bad.stdout, 'maxmemory\n0\n', 'CONFIG is allowed by the allow-all rule of this test')
})

t.test('redis-benchmark pipelines GET and SET through the gateway without errors', async t => {
  const gw = await startGateway(t)
  const token = await gw.token()
  const { stdout, stderr } = await run('redis-benchmark', ['-p', String(gw.port), '-a', token, '-t', 'get,set', '-n', '2000', '-P', '16', '-c', '4', '-q', '--csv'])
  t.match(stdout, /"SET","\d/)
  t.match(stdout, /"GET","\d/)
  t.notMatch(stdout + stderr, /ERR|NOPERM|NOAUTH|rror/)
})

t.test('python redis-py with the token as password', async t => {
  const gw = await startGateway(t)
  const token = await gw.token()
  const script = `
import redis, sys
r = redis.Redis(host='127.0.0.1', port=${gw.port}, username='agent', password=sys.argv[1])
p = r.pipeline(transaction=False)
p.set('py', 'thon'); p.incr('n'); p.get('py')
print(p.execute())
with r.pipeline() as tx:
    tx.set('a', 1); tx.incr('a')
    print(tx.execute())
print(r.hset('h', mapping={'x': '1'}), r.hgetall('h'))
`
  const { stdout } = await run('/usr/bin/python3', ['-c', script, token])
  t.equal(stdout, "[True, 1, b'thon']\n[True, 2]\n1 {b'x': b'1'}\n")
})

t.test('node-redis with RESP3 and the RediSearch builders', async t => {
  const gw = await startGateway(t, { redis: { search: true } })
  const client = createClient({ socket: { port: gw.port, host: '127.0.0.1' }, username: 'agent', password: await gw.token(), RESP: 3 })
  client.on('error', () => {})
  t.teardown(() => client.destroy())
  await client.connect()
  await client.hSet('u:1', { name: 'Ann', age: '7' })
  t.same({ ...(await client.hGetAll('u:1')) }, { name: 'Ann', age: '7' }, 'a RESP3 map through the gateway')
  t.same(await client.multi().set('m', '1').incr('m').exec(), ['OK', 2])
  if (!gw.redis.hasSearch) {
    t.comment('RediSearch module not installed: the FT.* round trip is covered by classification tests only')
    return
  }
  // the search builders' reply shapes are settled for RESP2 (node-redis marks RESP3 search unstable)
  const client2 = createClient({ socket: { port: gw.port, host: '127.0.0.1' }, username: 'agent', password: await gw.token(), modules: { ft: search } })
  client2.on('error', () => {})
  t.teardown(() => client2.destroy())
  await client2.connect()
  const ft = (client2 as unknown as { ft: { create(i: string, s: object): Promise<string>; search(i: string, q: string): Promise<unknown> } }).ft
  t.equal(await ft.create('docs', { title: 'TEXT', body: 'TEXT' }), 'OK')
  // RediSearch 1.2 indexes documents added through FT.ADD
  await client2.sendCommand(['FT.ADD', 'docs', 'doc1', '1.0', 'FIELDS', 'title', 'gateway', 'body', 'guards the data path'])
  const res = await ft.search('docs', 'guards')
  t.match(res, { total: 1, documents: [{ id: 'doc1', value: { title: 'gateway', body: 'guards the data path' } }] })
  t.match(gw.audit().filter(e => String(e.statement).startsWith('FT.')), [
    { class: 'schema-change', resources: ['docs'] },
    { class: 'write', resources: ['docs'] },
    { class: 'read', resources: ['docs'], statement: 'FT.SEARCH docs guards ? ?' },
  ])
})
