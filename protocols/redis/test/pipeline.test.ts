import t from 'tap'
import { Redis } from 'ioredis'
import { RawClient, startGateway } from './harness.ts'

const RULES = `
  - { id: agents-rw, when: { groups: [agents], class: [read, write, delete] }, action: allow }
  - { id: no-admin, when: { class: [admin, bulk-delete] }, action: block, reason: admin commands are off limits }
  - { id: secrets-off, when: { resources: ["secret:*"] }, action: block }`

t.test('a refused command in a pipeline is answered in its place', async t => {
  const gw = await startGateway(t, { rules: RULES })
  const c = await RawClient.connect(gw.port)
  t.teardown(() => c.close())
  c.send(`AUTH ${await gw.token()}\r\n`)
  await c.lines(1)
  c.send('SET a 1\r\nCONFIG GET maxmemory\r\nGET a\r\nGET secret:x\r\nFLUSHALL\r\nINCR a\r\n')
  t.equal(
    await c.lines(7),
    '+OK\r\n' +
      '-NOPERM blocked by rule no-admin: admin commands are off limits\r\n' +
      '$1\r\n1\r\n' +
      '-NOPERM blocked by rule secrets-off: blocked by rule secrets-off\r\n' +
      '-NOPERM blocked by rule no-admin: admin commands are off limits\r\n' +
      ':2\r\n',
  )
  t.match(gw.audit().filter(e => e.statement === 'FLUSHALL'), [{ class: 'bulk-delete', decision: 'block', rule: 'no-admin' }])
})

t.test('ioredis pipelines keep their replies aligned around refusals', async t => {
  const gw = await startGateway(t, { rules: RULES })
  const r = new Redis({ port: gw.port, password: await gw.token(), lazyConnect: true, enableReadyCheck: false, maxRetriesPerRequest: 0 })
  t.teardown(() => r.disconnect())
  await r.connect()
  const n = 200
  const p = r.pipeline()
  for (let i = 0; i < n; i++) {
    p.set(`k${i}`, `v${i}`)
    if (i % 10 === 0) p.config('GET', 'maxmemory')
    p.get(`k${i}`)
  }
  const res = (await p.exec())!
  let i = 0
  for (const [err, value] of res) {
    if (err) t.match(err.message, /NOPERM/)
    else if (value !== 'OK') t.equal(value, `v${i++}`)
  }
  t.equal(i, n)
  t.equal(res.filter(([e]) => e).length, n / 10)
})

t.test('MULTI with a refused command fails EXEC with EXECABORT and discards upstream', async t => {
  const gw = await startGateway(t, { rules: RULES })
  const r = new Redis({ port: gw.port, password: await gw.token(), lazyConnect: true, enableReadyCheck: false })
  t.teardown(() => r.disconnect())
  await r.connect()
  await t.rejects(r.multi().set('m', '1').flushall().set('n', '2').exec(), /EXECABORT Transaction discarded because of previous errors/)
  t.equal(await r.exists('m', 'n'), 0, 'nothing of the transaction ran')
  t.same(await r.multi().set('m', '1').incr('m').get('m').exec(), [[null, 'OK'], [null, 2], [null, '2']])
})

t.test('WATCH makes EXEC fail when the key changed', async t => {
  const gw = await startGateway(t, { rules: RULES })
  const token = await gw.token()
  const a = new Redis({ port: gw.port, password: token, lazyConnect: true, enableReadyCheck: false })
  const b = new Redis({ port: gw.port, password: token, lazyConnect: true, enableReadyCheck: false })
  t.teardown(() => { a.disconnect(); b.disconnect() })
  await a.connect()
  await b.connect()
  await a.watch('w')
  await b.set('w', 'changed')
  t.equal(await a.multi().set('w', 'mine').exec(), null)
  t.equal(await a.get('w'), 'changed')
})

t.test('pub/sub through the gateway, RESP2', async t => {
  const gw = await startGateway(t, { rules: RULES })
  const token = await gw.token()
  const sub = new Redis({ port: gw.port, password: token, lazyConnect: true, enableReadyCheck: false })
  const pub = new Redis({ port: gw.port, password: token, lazyConnect: true, enableReadyCheck: false })
  t.teardown(() => { sub.disconnect(); pub.disconnect() })
  await sub.connect()
  await pub.connect()
  t.equal(await sub.subscribe('news', 'sport'), 2)
  t.equal(await sub.psubscribe('n*'), 3)
  const got: string[] = []
  sub.on('message', (ch, msg) => got.push(`${ch}:${msg}`))
  sub.on('pmessage', (pat, ch, msg) => got.push(`${pat}>${ch}:${msg}`))
  t.equal(await pub.publish('news', 'hello'), 2)
  t.equal(await pub.publish('sport', 'goal'), 1)
  while (got.length < 3) await new Promise(r => setTimeout(r, 10))
  t.same(got.sort(), ['n*>news:hello', 'news:hello', 'sport:goal'])
  // ioredis resolves an argument-less UNSUBSCRIBE only once no subscription is left: name them
  t.equal(await sub.unsubscribe('news', 'sport'), 1)
  t.equal(await sub.punsubscribe('n*'), 0)
  t.equal(await sub.ping(), 'PONG', 'after unsubscribing the connection is back to normal')
})

t.test('blocking commands wait for data', async t => {
  const gw = await startGateway(t, { rules: RULES })
  const token = await gw.token()
  const a = new Redis({ port: gw.port, password: token, lazyConnect: true, enableReadyCheck: false })
  const b = new Redis({ port: gw.port, password: token, lazyConnect: true, enableReadyCheck: false })
  t.teardown(() => { a.disconnect(); b.disconnect() })
  await a.connect()
  await b.connect()
  const popped = a.blpop('queue', 5)
  const read = b.xread('BLOCK', 5000, 'STREAMS', 'st', '$')
  await new Promise(r => setTimeout(r, 100))
  const c = new Redis({ port: gw.port, password: token, lazyConnect: true, enableReadyCheck: false })
  t.teardown(() => c.disconnect())
  await c.connect()
  await c.rpush('queue', 'job-1')
  await c.xadd('st', '*', 'f', 'v')
  t.same(await popped, ['queue', 'job-1'])
  const [[stream, entries]] = (await read) as [string, [string, string[]][]][]
  t.equal(stream, 'st')
  t.same(entries[0]![1], ['f', 'v'])
  t.equal(await c.wait(0, 100), 0)
  t.equal(await c.select(1), 'OK')
  t.equal(await c.get('queue'), null, 'SELECT switched the database')
})

t.test('RESET keeps the gateway logged in upstream; QUIT closes', async t => {
  const gw = await startGateway(t, { rules: RULES })
  const c = await RawClient.connect(gw.port)
  t.teardown(() => c.close())
  c.send(`AUTH ${await gw.token()}\r\nSELECT 2\r\nSET r 1\r\nRESET\r\nGET r\r\nACL WHOAMI\r\nQUIT\r\n`)
  const out = await c.read(() => c.closed)
  t.equal(out, '+OK\r\n+OK\r\n+OK\r\n+RESET\r\n$-1\r\n$7\r\ngateway\r\n+OK\r\n')
  t.ok(c.closed)
})

t.test('binary values pass untouched', async t => {
  const gw = await startGateway(t, { rules: RULES, masking: `  - { id: pii, detectors: [email], method: redact }` })
  const r = new Redis({ port: gw.port, password: await gw.token(), lazyConnect: true, enableReadyCheck: false })
  t.teardown(() => r.disconnect())
  await r.connect()
  const blob = Buffer.from(new Float32Array([0.1, -2.5, 1e-8, 42]).buffer)
  const all = Buffer.from(Array.from({ length: 256 }, (_, i) => i))
  await r.set('vec', blob)
  await r.hset('doc:1', 'embedding', all, 'text', 'mail bob@example.com')
  t.same(await r.getBuffer('vec'), blob)
  t.same(await r.hgetBuffer('doc:1', 'embedding'), all)
  const text = (await r.hget('doc:1', 'text'))!
  t.match(text, /^mail \S/, 'the text around the hit stays')
  t.notMatch(text, /bob@example\.com/, 'the detector hit is masked')
})

t.test('pub/sub in RESP3: pushes interleave with ordinary replies on one connection', async t => {
  const gw = await startGateway(t, { rules: RULES })
  const token = await gw.token()
  const sub = await RawClient.connect(gw.port)
  const pub = await RawClient.connect(gw.port)
  t.teardown(() => { sub.close(); pub.close() })
  sub.send(`HELLO 3 AUTH a ${token}\r\n`)
  await sub.read(s => s.includes('modules'))
  pub.send(`AUTH ${token}\r\n`)
  await pub.lines(1)
  sub.send('SUBSCRIBE ch\r\nSSUBSCRIBE sh\r\nSET after 1\r\n')
  t.equal(await sub.lines(9), '>3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n>3\r\n$10\r\nssubscribe\r\n$2\r\nsh\r\n:1\r\n+OK\r\n')
  pub.send('PUBLISH ch hello\r\nSPUBLISH sh world\r\n')
  t.equal(await pub.lines(2), ':1\r\n:1\r\n')
  t.equal(await sub.lines(14), '>3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n>3\r\n$8\r\nsmessage\r\n$2\r\nsh\r\n$5\r\nworld\r\n')
  sub.send('GET after\r\n')
  t.equal(await sub.lines(2), '$1\r\n1\r\n')
})

t.test('commands that would break reply order are refused in place', async t => {
  const gw = await startGateway(t)
  const c = await RawClient.connect(gw.port)
  t.teardown(() => c.close())
  c.send(`AUTH ${await gw.token()}\r\nMONITOR\r\nCLIENT REPLY OFF\r\nPING\r\n`)
  t.equal(await c.lines(4), '+OK\r\n-ERR MONITOR is not supported through the gateway\r\n-ERR CLIENT REPLY is not supported through the gateway\r\n+PONG\r\n')
})

t.test('a client that half-closes after its last command gets every reply', async t => {
  const gw = await startGateway(t)
  const c = await RawClient.connect(gw.port)
  c.send(`AUTH ${await gw.token()}\r\nSET hc 1\r\nBLPOP nothing 0.2\r\nGET hc\r\n`)
  c.sock.end()
  t.equal(await c.read(() => c.closed), '+OK\r\n+OK\r\n*-1\r\n$1\r\n1\r\n')
})

t.test('a pipeline read in one chunk is recorded as one decision record, in order between its request and its replies', async t => {
  const { readdirSync } = await import('node:fs')
  const { decisionsOfRuns, readRecording, verifyRecording } = await import('@portcullis/core')
  const gw = await startGateway(t, { rules: RULES })
  const c = await RawClient.connect(gw.port)
  c.send(`AUTH ${await gw.token()}\r\n`)
  await c.lines(1)
  // the first command waits for the upstream connection: a round trip of its own
  c.send('GET warm\r\n')
  await c.lines(1)
  const cmds = ['SET a 1', 'GET a', 'FLUSHALL', 'GET secret:x', 'INCR a', 'GET a']
  c.send(cmds.map(x => `${x}\r\n`).join(''))
  t.equal(await c.lines(7), '+OK\r\n$1\r\n1\r\n-NOPERM blocked by rule no-admin: admin commands are off limits\r\n-NOPERM blocked by rule secrets-off: blocked by rule secrets-off\r\n:2\r\n$1\r\n2\r\n')
  c.close()
  // the session ends when the client leaves: its recording is sealed then
  const file = async () => {
    for (let i = 0; i < 200; i++) {
      const f = readdirSync(gw.recordings, { recursive: true }).map(String).find(n => n.endsWith('.pcr'))
      if (f) {
        const path = `${gw.recordings}/${f}`
        const types: string[] = []
        for await (const e of readRecording(path)) types.push(e.type)
        if (types.includes('seal')) return path
      }
      await new Promise(r => setImmediate(r))
    }
    throw new Error('no sealed recording')
  }
  const path = await file()
  const entries = []
  for await (const e of readRecording(path)) entries.push(e)
  const decisions = entries.filter(e => e.type === 'decision')
  t.match(decisions[0]!.payload, { statement: 'GET warm', action: 'allow' }, 'a round trip of one command: the record as it always was')
  // …and it holds its request: two records a round trip, not three
  const warm = decisions[0]!.payload.request as { command: string; raw: Uint8Array }
  t.equal(warm?.command, 'GET', 'the decision holds the request it answers')
  t.equal(Buffer.from(warm.raw).toString(), 'GET warm\r\n', 'with its bytes')
  t.notOk(entries.some(e => e.type === 'request' && e.payload.command === 'GET'), 'which has no record of its own')
  // the pipeline: the commands decided in one pass share a record (the codec ends a pass where it
  // waits, e.g. on the lane's window)
  // several decisions in one record come as runs of one answer, the operations in columns
  const flat = decisions.slice(1).flatMap(e => (Array.isArray(e.payload.runs) ? decisionsOfRuns(e.payload.runs as Record<string, unknown>[]) : [e.payload]))
  t.same(flat.map(d => [d.statement, d.action, d.rule]), [['SET a ?', 'allow', 'agents-rw'], ['GET a', 'allow', 'agents-rw'], ['FLUSHALL', 'block', 'no-admin'], ['GET secret:x', 'block', 'secrets-off'], ['INCR a', 'allow', 'agents-rw'], ['GET a', 'allow', 'agents-rw']], 'every command, in order, with its decision')
  t.match(flat[3], { class: 'read', resources: ['secret:x'], reason: 'blocked by rule secrets-off', fingerprint: String }, 'and its operation')
  t.ok(decisions.length - 1 < cmds.length && decisions.slice(1).some(e => Array.isArray(e.payload.runs)), `fewer decision records (${decisions.length - 1}) than commands (${cmds.length})`)
  const request = entries.findIndex(e => e.type === 'request' && String(e.payload.command).startsWith('SET'))
  const held = entries.findIndex(e => Array.isArray(e.payload.runs))
  const reply = entries.findIndex((e, i) => i > request && e.type === 'response')
  t.ok(request < held && held < reply, 'after the request, before the replies')
  t.equal((await verifyRecording(path)).status, 'intact', 'and the chain is whole')
  t.equal(gw.audit().filter(e => String(e.statement).startsWith('GET ')).length, 4, 'the audit still has one line per command')
})

t.test('audit.reads: summary writes one line for a session’s allowed reads; writes and refusals keep a line each', async t => {
  const gw = await startGateway(t, { rules: RULES, audit: '{ reads: summary }' })
  const c = await RawClient.connect(gw.port)
  c.send(`AUTH ${await gw.token()}\r\n`)
  await c.lines(1)
  c.send('SET a 1\r\nGET a\r\nGET a\r\nGET b\r\nGET secret:x\r\nMGET a b\r\nDEL b\r\n')
  t.equal(await c.lines(8), '+OK\r\n$1\r\n1\r\n$1\r\n1\r\n$-1\r\n-NOPERM blocked by rule secrets-off: blocked by rule secrets-off\r\n*2\r\n$1\r\n1\r\n$-1\r\n:0\r\n')
  const before = gw.audit().filter(e => e.statement !== undefined || e.reads !== undefined)
  t.same(before.map(e => [e.statement, e.decision]), [['SET a ?', 'allow'], ['GET secret:x', 'block'], ['DEL b', 'allow']], 'writes, deletes and refusals: a line each, at once')
  c.close()
  // the session's end writes the summary of what it read
  for (let i = 0; i < 500 && !gw.audit().some(e => e.reads !== undefined); i++) await new Promise(r => setTimeout(r, 5))
  const summary = gw.audit().filter(e => e.reads !== undefined)
  t.equal(summary.length, 1)
  t.match(summary[0], { class: 'read', decision: 'allow', reads: 4, target: 'cache', principal: { sub: 'agent-1' } })
  t.same([...(summary[0]!.resources as string[])].sort(), ['a', 'b'], 'the distinct keys read')
  t.equal((summary[0]!.fingerprints as string[]).length, 3, 'distinct fingerprints: GET a, GET b, MGET a b')
})
