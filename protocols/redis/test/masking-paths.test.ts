// Every path that returns data under a mask plan is masked or refused, checked on the raw reply
// bytes from a real Redis 7 (with RediSearch where installed): no clear value in any byte, in
// text, hex or base64. Data is written straight to Redis, so only replies cross the gateway.
import t from 'tap'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { Redis } from 'ioredis'
import { encodeCommand } from '../src/resp.ts'
import { RawClient, startGateway, type Gateway } from './harness.ts'

const run = promisify(execFile)

// keys+fields: rules by key glob and hash field name, no detectors (so nothing is masked by luck);
// detect: detectors and a pattern only
const MASKING = `
  - { id: secret-keys, when: { groups: [keyed] }, keys: ["secret:*"], method: redact }
  - { id: pii-fields, when: { groups: [keyed] }, fields: [email, ssn], method: redact }
  - { id: detect, when: { groups: [detect] }, detectors: [email, card], method: redact }
  - { id: pattern, when: { groups: [detect] }, patterns: [{ name: popular, regex: "key:[0-9]+|real reply" }], method: redact }`
const RULES = `
  - { id: all, when: { groups: [keyed, detect], class: [read, write, delete, admin, session] }, action: allow }`

const SECRET = 'TOPSECRET-7f3a'
const SSN = '078-05-1120'
const EMAIL = 'ann.smith@corp.example'
const CLEAR = [SECRET, SSN, '987654321', '424242', EMAIL, 'bob.jones@corp.example', 'eve@example.org', '4111111111111111', 'key:123', 'real reply']

/** no clear value in the bytes, in any encoding the test knows */
function assertMasked(t: { pass(m: string): void; fail(m: string): void }, bytes: string, what: string): void {
  const buf = Buffer.from(bytes, 'latin1')
  for (const v of CLEAR) {
    for (const enc of [v, Buffer.from(v).toString('hex'), Buffer.from(v).toString('base64')]) {
      if (buf.includes(enc)) {
        t.fail(`${what}: "${v}" in the reply bytes ${JSON.stringify(bytes.slice(0, 400))}`)
        return
      }
    }
  }
  t.pass(`${what}: no clear value in ${buf.length} bytes`)
}

interface Conversation {
  /** sends commands (one write), returns every byte of their replies */
  send(...cmds: (string | Buffer)[][]): Promise<string>
  raw: RawClient
  close(): void
}

async function conversation(gw: Gateway, groups: string[], resp: 2 | 3): Promise<Conversation> {
  const c = await RawClient.connect(gw.port)
  const token = await gw.token(`${groups[0]}-user`, groups)
  c.send(resp === 3 ? `HELLO 3 AUTH agent ${token}\r\n` : `AUTH ${token}\r\n`)
  await c.read(s => (resp === 3 ? s.includes('modules') && s.endsWith('\r\n') : s === '+OK\r\n'))
  await new Promise(r => setTimeout(r, 20))
  await c.read(() => true)
  let n = 0
  return {
    async send(...cmds) {
      // a marker after the commands: its echo ends their replies
      const marker = `end-of-replies-${++n}`
      c.send(Buffer.concat([...cmds.map(a => encodeCommand(a)), encodeCommand(['ECHO', marker])]))
      const out = await c.read(s => s.endsWith(`${marker}\r\n`))
      return out.slice(0, out.lastIndexOf(`$${marker.length}\r\n`))
    },
    raw: c,
    close: () => c.close(),
  }
}

async function seed(gw: Gateway): Promise<void> {
  const r = new Redis({ port: gw.redis.port, username: 'gateway', password: gw.redis.password })
  await r.set('secret:1', SECRET)
  await r.set('open:1', 'public-value')
  await r.set('secret:n', '424242')
  await r.hset('user:1', 'name', 'Ann', 'email', EMAIL, 'ssn', SSN)
  await r.hset('user:2', 'ssn', '987654321')
  await r.hset('secret:h', 'name', SECRET)
  await r.sadd('secret:set', SECRET)
  await r.sadd('open:set', 'x')
  await r.zadd('secret:z', 1, SECRET)
  await r.rpush('secret:list', SECRET, SECRET, SECRET, SECRET)
  await r.xadd('secret:stream', '1-1', 'name', SECRET)
  await r.xadd('open:stream', '1-1', 'email', EMAIL, 'name', 'Ann')
  await r.rpush('ids', '1')
  await r.quit()
}

t.test('key and field rules on every reply shape, RESP2 and RESP3', async t => {
  const gw = await startGateway(t, { masking: MASKING, rules: RULES })
  await seed(gw)
  for (const resp of [2, 3] as const) {
    const c = await conversation(gw, ['keyed'], resp)
    t.teardown(() => c.close())
    const paths: [string, string[]][] = [
      ['GET', ['GET', 'secret:1']],
      ['MGET', ['MGET', 'open:1', 'secret:1']],
      ['GETRANGE', ['GETRANGE', 'secret:1', '0', '-1']],
      ['INCRBY 0 (the value of a masked counter)', ['INCRBY', 'secret:n', '0']],
      ['HGETALL of a masked key (RESP3: a map)', ['HGETALL', 'secret:h']],
      ['HGETALL by field', ['HGETALL', 'user:1']],
      ['HGET / HMGET by field', ['HMGET', 'user:1', 'name', 'email', 'ssn']],
      ['HINCRBY 0 on a masked field', ['HINCRBY', 'user:2', 'ssn', '0']],
      ['HRANDFIELD WITHVALUES (RESP2 flat, RESP3 pairs)', ['HRANDFIELD', 'user:1', '-6', 'WITHVALUES']],
      ['HSCAN by field', ['HSCAN', 'user:1', '0']],
      ['HSCAN of a masked key', ['HSCAN', 'secret:h', '0']],
      ['SSCAN', ['SSCAN', 'secret:set', '0']],
      ['ZSCAN', ['ZSCAN', 'secret:z', '0']],
      ['SMEMBERS (RESP3: a set)', ['SMEMBERS', 'secret:set']],
      ['SRANDMEMBER', ['SRANDMEMBER', 'secret:set', '3']],
      ['SUNION with an open key', ['SUNION', 'open:set', 'secret:set']],
      ['ZRANGE WITHSCORES', ['ZRANGE', 'secret:z', '0', '-1', 'WITHSCORES']],
      ['LRANGE', ['LRANGE', 'secret:list', '0', '-1']],
      ['SORT ALPHA', ['SORT', 'secret:list', 'ALPHA']],
      ['XRANGE of a masked key', ['XRANGE', 'secret:stream', '-', '+']],
      ['XRANGE by field', ['XRANGE', 'open:stream', '-', '+']],
      ['XREAD (RESP3: a map)', ['XREAD', 'STREAMS', 'secret:stream', 'open:stream', '0', '0']],
      ['BLPOP names its key', ['BLPOP', 'secret:list', '0']],
      ['LMPOP', ['LMPOP', '1', 'secret:list', 'LEFT']],
      ['LMOVE into the same masking', ['LMOVE', 'secret:list', 'secret:list', 'LEFT', 'RIGHT']],
    ]
    for (const [what, cmd] of paths) {
      const out = await c.send(cmd)
      t.notMatch(out, /^-/, `${what} (RESP${resp}) is answered`)
      assertMasked(t, out, `${what} (RESP${resp})`)
    }
    // a pipeline of all of them in one write, and the same inside MULTI/EXEC
    const all = paths.map(p => p[1]).filter(p => p[0] !== 'BLPOP')
    assertMasked(t, await c.send(...all), `a pipeline of ${all.length} (RESP${resp})`)
    const exec = await c.send(['MULTI'], ...all, ['EXEC'])
    t.notMatch(exec, /EXECABORT/)
    assertMasked(t, exec, `MULTI/EXEC of ${all.length} (RESP${resp})`)
  }
})

t.test('what cannot be masked is refused before it reaches Redis', async t => {
  const gw = await startGateway(t, { masking: MASKING, rules: RULES, redis: { debugCommand: true } })
  await seed(gw)
  const c = await conversation(gw, ['keyed'], 2)
  t.teardown(() => c.close())
  const refused: [string, string[]][] = [
    ['DUMP of a masked key', ['DUMP', 'secret:1']],
    ['DUMP of a hash with masked fields', ['DUMP', 'user:1']],
    ['LCS', ['LCS', 'secret:1', 'open:1']],
    ['GETBIT', ['GETBIT', 'secret:1', '3']],
    ['BITFIELD GET', ['BITFIELD', 'secret:1', 'GET', 'u8', '0']],
    ['LPOS', ['LPOS', 'secret:list', SECRET]],
    ['HVALS (no field names)', ['HVALS', 'user:1']],
    ['a script', ['EVAL', "return redis.call('GET', 'secret:1')", '0']],
    ['a script declaring no key', ['EVAL', "return redis.call('HGET', 'user:1', 'email')", '0']],
    ['SORT … GET a masked field', ['SORT', 'ids', 'BY', 'nosort', 'GET', 'user:*->email']],
    ['SORT … GET other keys', ['SORT', 'ids', 'BY', 'nosort', 'GET', 'secret:*']],
    ['XINFO STREAM', ['XINFO', 'STREAM', 'secret:stream', 'FULL']],
    ['DEBUG OBJECT', ['DEBUG', 'OBJECT', 'secret:1']],
    ['SLOWLOG GET', ['SLOWLOG', 'GET']],
  ]
  for (const [what, cmd] of refused) {
    const out = await c.send(cmd)
    t.match(out, /^-NOPERM masking: /, `${what} is refused`)
    assertMasked(t, out, what)
  }
  // copies of masked data into keys no rule covers: refused, and nothing was written upstream
  const copies: [string, string[]][] = [
    ['COPY', ['COPY', 'secret:1', 'open:copy']],
    ['RENAME', ['RENAME', 'secret:h', 'open:renamed']],
    ['LMOVE', ['LMOVE', 'secret:list', 'open:list', 'LEFT', 'RIGHT']],
    ['SUNIONSTORE', ['SUNIONSTORE', 'open:union', 'secret:set']],
    ['SORT … STORE', ['SORT', 'secret:list', 'ALPHA', 'STORE', 'open:sorted']],
  ]
  for (const [what, cmd] of copies) t.match(await c.send(cmd), /^-NOPERM masking: .* would copy masked key/, `${what} is refused`)
  const r = new Redis({ port: gw.redis.port, username: 'gateway', password: gw.redis.password })
  t.teardown(() => r.disconnect())
  t.equal(await r.exists('open:copy', 'open:renamed', 'open:list', 'open:union', 'open:sorted'), 0, 'no copy reached Redis')
  t.equal(await r.exists('secret:h'), 1)
  // inside MULTI a refusal is a queuing error: EXEC fails as a whole, as Redis fails it
  const tx = await c.send(['MULTI'], ['SET', 'open:tx', 'x'], ['DUMP', 'secret:1'], ['EXEC'])
  t.match(tx, /^\+OK\r\n\+QUEUED\r\n-NOPERM masking: [^\r]*\r\n-EXECABORT /)
  t.equal(await r.exists('open:tx'), 0, 'the transaction did not run')
  // harmless reads of masked keys still work
  t.equal(await c.send(['STRLEN', 'secret:1'], ['TTL', 'secret:1'], ['OBJECT', 'ENCODING', 'secret:1'], ['EXISTS', 'secret:1']), `:${SECRET.length}\r\n:-1\r\n$6\r\nembstr\r\n:1\r\n`)
  t.match(gw.audit().find(e => e.statement === 'DUMP secret:1'), { error: /cannot be masked/ }, 'the audit line says why')
})

t.test('detectors reach pub/sub messages (RESP2 and RESP3 pushes), errors, big numbers, verbatim strings and attributes', async t => {
  const gw = await startGateway(t, { masking: MASKING, rules: RULES, redis: { debugCommand: true } })
  const direct = new Redis({ port: gw.redis.port, username: 'gateway', password: gw.redis.password })
  t.teardown(() => direct.disconnect())
  for (const resp of [2, 3] as const) {
    const c = await conversation(gw, ['detect'], resp)
    t.teardown(() => c.close())
    // subscribed (RESP2) a client may only (un)subscribe and PING: read the frames as they come
    c.raw.send('SUBSCRIBE news\r\n')
    t.match(await c.raw.lines(6), /subscribe\r\n\$4\r\nnews\r\n:1\r\n$/)
    await direct.publish('news', 'write to eve@example.org')
    const got = await c.raw.lines(7)
    t.match(got, /^[*>]3\r\n\$7\r\nmessage\r\n\$4\r\nnews\r\n/, `the message came (RESP${resp})`)
    assertMasked(t, got, `pub/sub message (RESP${resp})`)
    c.raw.send('UNSUBSCRIBE news\r\n')
    t.match(await c.raw.lines(6), /unsubscribe\r\n\$4\r\nnews\r\n:0\r\n$/)
    if (resp === 3) {
      const out = await c.send(
        ['EVAL', "redis.setresp(3); return {big_number='4111111111111111'}", '0'],
        ['EVAL', "redis.setresp(3); return {verbatim_string={format='txt', string='mail eve@example.org'}}", '0'],
        ['DEBUG', 'PROTOCOL', 'attrib'],
      )
      t.match(out, /^\$\d+\r\n\[REDACTED:card\]\r\n=\d+\r\ntxt:mail \[REDACTED:email\]\r\n\|1\r\n/, 'a big number becomes masked text; a verbatim string keeps its format')
      assertMasked(t, out, 'big number, verbatim string, attribute')
    }
    const err = await c.send(['EVAL', "return redis.error_reply('ERR no such user eve@example.org')", '0'])
    t.match(err, /^-ERR no such user \[REDACTED:email\]\r\n$/, `an error stays an error (RESP${resp})`)
    assertMasked(t, err, `error reply (RESP${resp})`)
  }
})

t.test('FT.SEARCH, FT.AGGREGATE and FT.CURSOR READ are masked or refused', async t => {
  const gw = await startGateway(t, { masking: MASKING, rules: RULES, redis: { search: true } })
  if (!gw.redis.hasSearch) {
    t.comment('RediSearch module not installed: FT.* reply masking is covered by reply-masking.test.ts only')
    return
  }
  const r = new Redis({ port: gw.redis.port, username: 'gateway', password: gw.redis.password })
  t.teardown(() => r.disconnect())
  await r.call('FT.CREATE', 'people', 'SCHEMA', 'email', 'TEXT', 'name', 'TEXT', 'ssn', 'TEXT')
  await r.call('FT.ADD', 'people', 'person:1', '1.0', 'FIELDS', 'email', EMAIL, 'name', 'Ann', 'ssn', SSN)
  await r.call('FT.ADD', 'people', 'secret:person', '1.0', 'FIELDS', 'email', 'bob.jones@corp.example', 'name', SECRET)
  for (const resp of [2, 3] as const) {
    const c = await conversation(gw, ['keyed'], resp)
    t.teardown(() => c.close())
    for (const cmd of [
      ['FT.SEARCH', 'people', '*'],
      ['FT.SEARCH', 'people', '*', 'WITHSCORES'],
      ['FT.SEARCH', 'people', 'Ann', 'RETURN', '2', 'email', 'ssn'],
      ['FT.SEARCH', 'people', '*', 'HIGHLIGHT', 'FIELDS', '1', 'email'],
      ['FT.GET', 'people', 'person:1'],
      ['FT.MGET', 'people', 'person:1', 'secret:person'],
    ]) {
      const out = await c.send(cmd)
      t.notMatch(out, /^-/, `${cmd.join(' ')} is answered (RESP${resp})`)
      assertMasked(t, out, `${cmd.join(' ')} (RESP${resp})`)
    }
    // FT.AGGREGATE rows do not name their keys: under key rules it is refused
    t.match(await c.send(['FT.AGGREGATE', 'people', '*', 'LOAD', '1', '@email']), /^-NOPERM masking: FT.AGGREGATE under key masking/)
    t.match(await c.send(['FT.PROFILE', 'people', 'SEARCH', 'QUERY', '*']), /^-NOPERM masking: FT.PROFILE/)
  }
  // field rules only: FT.AGGREGATE and its cursor are masked by field name, expressions refused
  const gw2 = await startGateway(t, {
    masking: `
  - { id: pii-fields, fields: [email, ssn], method: redact }`,
    rules: RULES,
    redis: { search: true },
  })
  const r2 = new Redis({ port: gw2.redis.port, username: 'gateway', password: gw2.redis.password })
  t.teardown(() => r2.disconnect())
  await r2.call('FT.CREATE', 'people', 'SCHEMA', 'email', 'TEXT', 'name', 'TEXT')
  for (let i = 0; i < 3; i++) await r2.call('FT.ADD', 'people', `p:${i}`, '1.0', 'FIELDS', 'email', i === 0 ? EMAIL : `bob.jones@corp.example`, 'name', `N${i}`)
  const c2 = await conversation(gw2, ['keyed'], 2)
  t.teardown(() => c2.close())
  const agg = await c2.send(['FT.AGGREGATE', 'people', '*', 'LOAD', '2', '@email', '@name', 'WITHCURSOR', 'COUNT', '1'])
  t.match(agg, /^\*2\r\n/, 'rows and a cursor')
  assertMasked(t, agg, 'FT.AGGREGATE WITHCURSOR')
  const cursor = /:(\d+)\r\n$/.exec(agg)![1]!
  const more = await c2.send(['FT.CURSOR', 'READ', 'people', cursor])
  t.match(more, /email/)
  assertMasked(t, more, 'FT.CURSOR READ')
  assertMasked(t, await c2.send(['FT.AGGREGATE', 'people', '*', 'LOAD', '1', '@email', 'GROUPBY', '1', '@email']), 'FT.AGGREGATE GROUPBY a masked field')
  t.match(await c2.send(['FT.AGGREGATE', 'people', '*', 'LOAD', '1', '@email', 'APPLY', 'upper(@email)', 'AS', 'shout']), /^-NOPERM masking: FT.AGGREGATE APPLY over masked field email/)
  t.match(await c2.send(['FT.AGGREGATE', 'people', '*', 'GROUPBY', '1', '@name', 'REDUCE', 'TOLIST', '1', '@email', 'AS', 'all']), /^-NOPERM masking: FT.AGGREGATE REDUCE TOLIST over masked field @email/)
  t.match(await c2.send(['FT.SEARCH', 'people', '*', 'SORTBY', 'email', 'WITHSORTKEYS']), /^-NOPERM masking: FT.SEARCH WITHSORTKEYS/)
  t.match(await c2.send(['HVALS', 'p:0']), /^-NOPERM masking: HVALS/)
})

t.test('real clients: masked replies, and a refusal is an ordinary error that leaves the connection in step', async t => {
  const gw = await startGateway(t, { masking: MASKING, rules: RULES })
  await seed(gw)
  const token = await gw.token('keyed-user', ['keyed'])
  const script = `
import redis, sys
r = redis.Redis(host='127.0.0.1', port=int(sys.argv[1]), username='agent', password=sys.argv[2], decode_responses=True)
print(r.hgetall('user:1')['email'], r.get('secret:1'), r.xrange('open:stream')[0][1]['email'])
try:
    r.dump('secret:1')
except redis.exceptions.ResponseError as e:
    print('refused:', str(e).split(':')[0])
p = r.pipeline(transaction=False)
p.get('secret:1'); p.lrange('secret:list', 0, 0); p.get('open:1')
print(p.execute())
`
  const { stdout } = await run('/usr/bin/python3', ['-c', script, String(gw.port), token])
  t.equal(stdout, "[REDACTED] [REDACTED] [REDACTED]\nrefused: masking\n['[REDACTED]', ['[REDACTED]'], 'public-value']\n", 'redis-py')
  const io = new Redis({ port: gw.port, password: token, lazyConnect: true })
  t.teardown(() => io.disconnect())
  await io.connect()
  await t.rejects(io.call('LCS', 'secret:1', 'open:1'), /NOPERM masking: key secret:1 is masked/)
  t.same(await io.zrange('secret:z', 0, -1, 'WITHSCORES'), ['[REDACTED]', '[REDACTED]'], 'ioredis, after the refusal')
})
