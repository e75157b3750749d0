// Scoped retrieval on Redis: two tenants through one gateway, a real redis-server 7 with Debian's
// RediSearch module. Every key, channel and index a command names must be inside the caller's
// scope; SCAN is constrained, FT.SEARCH gets the tenant's tag filter AND-ed on. Asserted on the
// replies the client got and on the upstream (read directly, as the gateway's ACL user).
import t from 'tap'
import { createClient } from '@redis/client'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { readRecording } from '@portcullis/core'
import { RawClient, startGateway, type Gateway } from './harness.ts'

function newClient(port: number, username: string, password: string) {
  return createClient({ socket: { port, host: '127.0.0.1' }, username, password })
}
type Client = ReturnType<typeof newClient>

const SCOPE = `{ keys: ['tenant:\${claims.tenant}:*'], indexes: ['docs', 'idx_\${claims.tenant}'], tag: { field: tenant, value: '\${claims.tenant}' } }`

async function clientFor(t: { teardown(fn: () => unknown): void }, gw: Gateway, tenant: unknown, sub = 'agent-1'): Promise<Client> {
  const token = await gw.issuer.mint({ sub, groups: ['agents'], ...(tenant === undefined ? {} : { extra: { tenant } }) })
  const c = newClient(gw.port, sub, token)
  c.on('error', () => {})
  t.teardown(() => (c.isOpen ? c.destroy() : undefined))
  await c.connect()
  return c
}

async function rawFor(t: { teardown(fn: () => unknown): void; equal(a: unknown, b: unknown): void }, gw: Gateway, tenant: unknown): Promise<RawClient> {
  const token = await gw.issuer.mint({ sub: 'agent-1', groups: ['agents'], ...(tenant === undefined ? {} : { extra: { tenant } }) })
  const c = await RawClient.connect(gw.port)
  t.teardown(() => c.close())
  c.send(`*3\r\n$4\r\nAUTH\r\n$7\r\nagent-1\r\n$${token.length}\r\n${token}\r\n`)
  const auth = await c.lines(1)
  t.equal(auth.startsWith('+OK') || auth.startsWith('-'), true)
  return c
}

function command(...args: string[]): string {
  return `*${args.length}\r\n` + args.map(a => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')
}

t.test('two tenants through one gateway: keys, SCAN, scripts, pub/sub and RediSearch stay inside the scope', async t => {
  const gw = await startGateway(t, { redis: { search: true }, scope: SCOPE })
  const up = createClient({ socket: { port: gw.redis.port, host: gw.redis.host }, username: gw.redis.user!, password: gw.redis.password! })
  up.on('error', () => {})
  t.teardown(() => (up.isOpen ? up.destroy() : undefined))
  await up.connect()
  await up.set('tenant:acme:doc1', 'acme one')
  await up.set('tenant:acme:doc2', 'acme two')
  await up.set('tenant:globex:doc1', 'globex secret')
  await up.set('tenant:*:doc1', 'the tenant called star')

  const acme = await clientFor(t, gw, 'acme')

  t.test('keys inside the scope work; one outside is -NOPERM and never reaches the upstream', async t => {
    t.equal(await acme.get('tenant:acme:doc1'), 'acme one')
    await t.rejects(acme.get('tenant:globex:doc1'), /NOPERM scope: key "tenant:globex:doc1" is outside/)
    await t.rejects(acme.mGet(['tenant:acme:doc1', 'tenant:globex:doc1']), /NOPERM scope/)
    await t.rejects(acme.rename('tenant:acme:doc2', 'tenant:globex:doc2'), /NOPERM scope/, 'the second key of RENAME')
    await t.rejects(acme.copy('tenant:globex:doc1', 'tenant:acme:stolen'), /NOPERM scope/)
    await t.rejects(acme.set('tenant:globex:doc1', 'defaced'), /NOPERM scope/)
    await t.rejects(acme.sendCommand(['OBJECT', 'ENCODING', 'tenant:globex:doc1']), /NOPERM scope/)
    await t.rejects(acme.sendCommand(['WATCH', 'tenant:globex:doc1']), /NOPERM scope/)
    t.equal(await up.get('tenant:globex:doc1'), 'globex secret', 'upstream untouched')
    t.equal(await up.exists('tenant:acme:doc2'), 1, 'the refused RENAME moved nothing')
    t.equal(await up.exists('tenant:acme:stolen'), 0)
  })

  t.test('commands that reach keys they do not name are refused', async t => {
    await up.rPush('tenant:acme:list', ['1', '2'])
    t.same(await acme.sendCommand(['SORT', 'tenant:acme:list']), ['1', '2'], 'SORT of its own key')
    await t.rejects(acme.sendCommand(['SORT', 'tenant:acme:list', 'BY', 'tenant:globex:*']), /NOPERM scope: SORT may reach keys/)
    await t.rejects(acme.sendCommand(['SORT', 'tenant:acme:list', 'GET', 'tenant:globex:doc1']), /NOPERM scope/)
    await t.rejects(acme.sendCommand(['EVAL', "return redis.call('GET', 'tenant:globex:doc1')", '0']), /NOPERM scope: EVAL is refused/)
    await t.rejects(acme.sendCommand(['EVAL', "return redis.call('GET', KEYS[1])", '1', 'tenant:acme:doc1']), /NOPERM scope: EVAL/, 'declared keys are not enough')
    for (const cmd of [['RANDOMKEY'], ['DBSIZE'], ['FLUSHDB'], ['PUBSUB', 'CHANNELS'], ['MIGRATE', '127.0.0.1', '1', 'tenant:acme:doc1', '0', '1000']])
      await t.rejects(acme.sendCommand(cmd), /NOPERM scope/, cmd.join(' '))
    t.equal(await up.dbSize(), 5, 'nothing flushed')
    t.equal(await acme.ping(), 'PONG', 'keyless commands that read nothing still work')
  })

  t.test('SCAN without MATCH is constrained to the scope; MATCH and KEYS outside it are refused', async t => {
    const seen: string[] = []
    let cursor = '0'
    do {
      const [next, keys] = (await acme.sendCommand(['SCAN', cursor, 'COUNT', '2'])) as [string, string[]]
      seen.push(...keys)
      cursor = next
    } while (cursor !== '0')
    t.same(seen.sort(), ['tenant:acme:doc1', 'tenant:acme:doc2', 'tenant:acme:list'])
    await t.rejects(acme.sendCommand(['SCAN', '0', 'MATCH', '*']), /NOPERM scope: SCAN MATCH "\*"/)
    await t.rejects(acme.sendCommand(['SCAN', '0', 'MATCH', 'tenant:*']), /NOPERM scope/)
    await t.rejects(acme.sendCommand(['SCAN', '0', 'MATCH', 'tenant:acme:*', 'MATCH', '*']), /NOPERM scope/, 'the last MATCH counts, as in Redis')
    const [, inside] = (await acme.sendCommand(['SCAN', '0', 'MATCH', 'tenant:acme:doc*', 'COUNT', '1000'])) as [string, string[]]
    t.same(inside.sort(), ['tenant:acme:doc1', 'tenant:acme:doc2'])
    await t.rejects(acme.keys('*'), /NOPERM scope: KEYS/)
    t.same((await acme.keys('tenant:acme:*')).sort(), ['tenant:acme:doc1', 'tenant:acme:doc2', 'tenant:acme:list'])
  })

  t.test('a tenant called * is no wildcard: its pattern is escaped', async t => {
    const star = await clientFor(t, gw, '*', 'agent-star')
    t.equal(await star.get('tenant:*:doc1'), 'the tenant called star')
    await t.rejects(star.get('tenant:acme:doc1'), /NOPERM scope/)
    const [, keys] = (await star.sendCommand(['SCAN', '0', 'COUNT', '1000'])) as [string, string[]]
    t.same(keys, ['tenant:*:doc1'], 'SCAN MATCH tenant:\\*:* finds its own key only')
  })

  t.test('pub/sub: channels inside the scope only; PSUBSCRIBE patterns must lie inside it', async t => {
    const c = await rawFor(t, gw, 'acme')
    c.send(command('SUBSCRIBE', 'tenant:globex:news'))
    t.match(await c.lines(1), /^-NOPERM scope: channel "tenant:globex:news"/)
    c.send(command('PSUBSCRIBE', 'tenant:*'))
    t.match(await c.lines(1), /^-NOPERM scope: channel pattern "tenant:\*"/)
    c.send(command('PUBLISH', 'tenant:globex:news', 'spoofed'))
    t.match(await c.lines(1), /^-NOPERM scope/)
    c.send(command('PSUBSCRIBE', 'tenant:acme:*'))
    t.match(await c.read(s => s.includes('psubscribe')), /psubscribe/)
    const pub = await clientFor(t, gw, 'acme', 'agent-pub')
    t.equal(await pub.publish('tenant:acme:news', 'hello'), 1)
    t.match(await c.read(s => s.includes('hello')), /tenant:acme:news[\s\S]*hello/)
  })

  t.test('a token without the tenant claim cannot log in', async t => {
    const c = await RawClient.connect(gw.port)
    t.teardown(() => c.close())
    const token = await gw.issuer.mint({ sub: 'agent-9', groups: ['agents'], extra: { tenant: 7 } })
    c.send(command('AUTH', 'agent-9', token))
    t.match(await c.lines(1), /^-WRONGPASS .*claim claims\.tenant is not a string/)
    c.send(command('GET', 'tenant:acme:doc1'))
    t.match(await c.lines(1), /^-NOAUTH/)
  })

  t.test('RediSearch: the tag filter is AND-ed onto every query; other indexes and FT.* commands are refused', async t => {
    if (!gw.redis.hasSearch) {
      t.fail('RediSearch is not installed (bootstrap installs redis-redisearch): the FT.* scope is not proven here')
      return
    }
    t.equal(await up.sendCommand(['FT.CREATE', 'docs', 'SCHEMA', 'title', 'TEXT', 'tenant', 'TAG']), 'OK')
    t.equal(await up.sendCommand(['FT.CREATE', 'idx_globex', 'SCHEMA', 'title', 'TEXT', 'tenant', 'TAG']), 'OK')
    await up.sendCommand(['FT.ADD', 'docs', 'a1', '1.0', 'FIELDS', 'title', 'rocket plans', 'tenant', 'acme'])
    await up.sendCommand(['FT.ADD', 'docs', 'g1', '1.0', 'FIELDS', 'title', 'rocket doomsday', 'tenant', 'globex'])
    await up.sendCommand(['FT.ADD', 'docs', 'g2', '1.0', 'FIELDS', 'title', 'doomsday device', 'tenant', 'globex'])
    await up.sendCommand(['FT.ADD', 'idx_globex', 'x1', '1.0', 'FIELDS', 'title', 'rocket', 'tenant', 'globex'])
    const ids = (reply: unknown) => (reply as unknown[]).filter((v, i) => i > 0 && i % 2 === 1).map(String).sort()
    t.same(ids(await acme.sendCommand(['FT.SEARCH', 'docs', 'rocket'])), ['a1'])
    t.same(ids(await up.sendCommand(['FT.SEARCH', 'docs', 'rocket'])), ['a1', 'g1'], 'without the scope the upstream finds both')
    t.same(ids(await acme.sendCommand(['FT.SEARCH', 'docs', 'rocket | doomsday'])), ['a1'], '| alternatives stay inside the AND')
    t.same(ids(await acme.sendCommand(['FT.SEARCH', 'docs', '(rocket) | (@tenant:{globex})'])), ['a1'])
    t.same(ids(await acme.sendCommand(['FT.SEARCH', 'docs', '@tenant:{globex}'])), [], 'naming the other tenant finds nothing')
    t.same(ids(await acme.sendCommand(['FT.SEARCH', 'docs', '-@tenant:{acme}'])), [], 'must_not of its own tenant finds nothing')
    await t.rejects(acme.sendCommand(['FT.SEARCH', 'docs', 'rocket) | (@tenant:{globex}']), /NOPERM scope: the query does not parse/)
    await t.rejects(acme.sendCommand(['FT.SEARCH', 'docs', 'x \\) | (@tenant:{globex}']), /NOPERM scope/, 'an escaped ) does not balance an open (')
    await t.rejects(acme.sendCommand(['FT.SEARCH', 'idx_globex', 'rocket']), /NOPERM scope: index "idx_globex" is outside/)
    t.same(ids(await acme.sendCommand(['FT.SEARCH', 'docs', '@tenant:{acme|globex}'])), ['a1'], 'a tag alternative naming the other tenant')
    t.same(ids(await acme.sendCommand(['FT.SEARCH', 'docs', 'rocket', 'INKEYS', '1', 'g1'])), [], 'a document id of the other tenant (INKEYS)')
    await t.rejects(acme.sendCommand(['FT.GET', 'docs', 'g1']), /NOPERM scope/, 'a document of the other tenant by id')
    await t.rejects(acme.sendCommand(['FT.MGET', 'docs', 'a1', 'g1']), /NOPERM scope/)
    t.equal(await up.sendCommand(['HGET', 'g1', 'title']), 'rocket doomsday', 'the document is there to be refused')
    await t.rejects(acme.sendCommand(['FT.TAGVALS', 'docs', 'tenant']), /NOPERM scope: FT.TAGVALS is refused/)
    await t.rejects(acme.sendCommand(['FT.CREATE', 'idx_acme', 'SCHEMA', 'title', 'TEXT']), /NOPERM scope/)
    await t.rejects(acme.sendCommand(['FT._LIST']), /NOPERM scope/)
    const agg = (await acme.sendCommand(['FT.AGGREGATE', 'docs', 'rocket | doomsday', 'LOAD', '1', '@tenant'])) as unknown[]
    t.match(JSON.stringify(agg.slice(1)), /acme/)
    t.notMatch(JSON.stringify(agg), /globex/, 'FT.AGGREGATE is filtered the same way')
  })

  t.test('the recording shows the scope applied to each command', async t => {
    await acme.get('tenant:acme:doc1')
    await acme.quit().catch(() => {})
    for (let i = 0; i < 500 && !gw.audit().some(l => l.scope !== undefined && l.class === 'read'); i++) await new Promise(r => setTimeout(r, 10))
    t.match(gw.audit().find(l => l.scope !== undefined && l.class === 'read'), { scope: /keys=tenant:acme:\*/ })
    const events: Record<string, unknown>[] = []
    const files = readdirSync(gw.recordings, { recursive: true }).map(String).filter(f => /\.[a-z]+$/.test(f))
    for (const f of files) {
      try {
        for await (const e of readRecording(join(gw.recordings, f))) events.push({ type: e.type, ...(e.payload as Record<string, unknown>) })
      } catch {
        // a recording still being written (another client of this test) reads up to where it is
      }
    }
    t.ok(events.some(e => e.type === 'decision' && typeof e.scope === 'string' && /tenant:acme/.test(String(e.scope))), 'decisions carry the scope')
    t.ok(events.some(e => e.event === 'scope-applied' && /MATCH tenant:acme:\*/.test(String(e.applied))), 'the SCAN rewrite is recorded')
    t.ok(events.some(e => e.event === 'scope-refused'), 'so are the refusals')
  })
})
