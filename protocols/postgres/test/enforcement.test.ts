// Enforcement that no message sequence walks around (issue 10, items 1 and 2): raw frontend
// messages against a real Postgres 15 whose upstream role is a superuser, asserting on every byte
// the client received, on the messages the gateway sent upstream (a tap) and on the upstream itself.
import t from 'tap'
import pg from 'pg'
import { readdirSync } from 'node:fs'
import { join } from 'node:path'
import { readRecording } from '@portcullis/core'
import { startPostgres } from '@portcullis/fixtures/postgres'
import { classifySql, loadClassifier } from '../src/classify/index.ts'
import { startGateway, type Gateway } from './harness.ts'
import { bind, close, codes, describe, errorOf, execute, parse, query, RawClient, rowsOf, sync, UpstreamTap } from './wire.ts'

const EMAIL = 'ann@example.com'
const KEY = 'sk_live_0123456789'
const SECRETS = [EMAIL, KEY, 'bob@example.com', 'sk_live_9876543210']

/** no secret in any form the test knows: text, base64 */
function leaks(bytes: Buffer): string[] {
  const text = bytes.toString('latin1')
  return SECRETS.filter(s => text.includes(s) || text.includes(Buffer.from(s).toString('base64')))
}

t.test('enforcement on every message sequence', async t => {
  const pgServer = await startPostgres()
  t.teardown(() => pgServer.stop())
  const direct = new pg.Client({ connectionString: pgServer.url })
  await direct.connect()
  t.teardown(() => direct.end())
  const su = await direct.query('select rolsuper from pg_roles where rolname = current_user')
  t.equal(su.rows[0].rolsuper, true, 'the upstream role is a superuser: a bypass would do real damage')
  await direct.query(`create table customers (id int primary key, email text, api_key text, name text)`)
  await direct.query(`insert into customers values (1, '${EMAIL}', '${KEY}', 'Ann'), (2, 'bob@example.com', 'sk_live_9876543210', 'Bob')`)
  await direct.query(`create table victims (id int)`)
  const refill = () => direct.query('truncate victims; insert into victims select generate_series(1, 5)')
  const victims = async () => (await direct.query('select count(*)::int as n from victims')).rows[0].n as number
  await refill()

  const masking = [{ id: 'pii', when: { targets: ['db'] }, columns: ['customers.email', 'customers.api_key'], method: 'redact' }]
  const tap = new UpstreamTap(pgServer)
  const gw = await startGateway({ pg: await tap.start(), masking })
  t.teardown(async () => {
    await gw.stop()
    await tap.stop()
  })
  const plainTap = new UpstreamTap(pgServer)
  const plain = await startGateway({ pg: await plainTap.start() })
  t.teardown(async () => {
    await plain.stop()
    await plainTap.stop()
  })

  // the upstream connection of each client, and how many messages it had sent when the login ended
  const upstreamOf = new Map<RawClient, { tap: UpstreamTap; conn: number; from: number }>()
  const open = async (t: { teardown(fn: () => unknown): void }, g: Gateway = gw): Promise<RawClient> => {
    const tp = g === gw ? tap : plainTap
    const conn = tp.connections.length
    const c = new RawClient(g)
    await c.login(await g.token())
    upstreamOf.set(c, { tap: tp, conn, from: tp.messages(conn).length })
    t.teardown(() => c.socket.destroy())
    return c
  }
  /** the messages the gateway has sent upstream for this client since its login */
  const upstream = (c: RawClient) => {
    const u = upstreamOf.get(c)!
    return u.tap.messages(u.conn).slice(u.from)
  }
  const sent = (c: RawClient) => codes(upstream(c))

  t.test('Parse/Bind/Execute/Sync without Describe: masked, the RowDescription the gateway asked for is not forwarded', async t => {
    const c = await open(t)
    c.send(parse('', 'select id, email, api_key, name from customers order by id'), bind('', ''), execute(''), sync())
    const got = await c.batches(1)
    t.equal(codes(got), '12DDCZ', 'exactly what Postgres sends for that batch')
    t.same(rowsOf(got), [
      ['1', '[REDACTED]', '[REDACTED]', 'Ann'],
      ['2', '[REDACTED]', '[REDACTED]', 'Bob'],
    ])
    t.same(leaks(c.allReceived()), [])
    t.equal(sent(c), 'PBDES', 'one Describe of the portal added before the Execute')
  })

  t.test('binary result format: masked in place', async t => {
    const c = await open(t)
    c.send(parse('', 'select email, api_key, id from customers where id = $1'), bind('', '', ['1'], 1), execute(''), sync())
    const got = await c.batches(1)
    t.equal(codes(got), '12DCZ')
    const [row] = rowsOf(got)
    t.equal(row![0], '[REDACTED]')
    t.equal(row![1], '[REDACTED]')
    t.same(Buffer.from(row![2]!, 'latin1'), Buffer.from([0, 0, 0, 1]), 'the int stays binary')
    t.same(leaks(c.allReceived()), [])
  })

  t.test('a named statement Described once, then run with Bind/Execute/Sync only (pgjdbc, pgx): masked every time', async t => {
    const c = await open(t)
    c.send(parse('s1', 'select email, api_key from customers where id = $1'), describe('S', 's1'), sync())
    const first = await c.batches(1)
    t.equal(codes(first), '1tTZ', 'the statement Describe is the client’s: forwarded')
    for (let i = 0; i < 4; i++) {
      c.send(bind('', 's1', [String(1 + (i % 2))], i % 2), execute(''), sync())
      const got = await c.batches(1)
      t.equal(codes(got), '2DCZ')
      t.same(rowsOf(got)[0], ['[REDACTED]', '[REDACTED]'], `execution ${i + 1}`)
    }
    t.same(leaks(c.allReceived()), [])
  })

  t.test('a portal the client Described in the batch: no Describe added, its RowDescription reaches the client once', async t => {
    const c = await open(t)
    c.send(parse('', 'select email from customers order by id'), bind('', ''), describe('P', ''), execute(''), sync())
    const got = await c.batches(1)
    t.equal(codes(got), '12TDDCZ')
    t.same(rowsOf(got), [['[REDACTED]'], ['[REDACTED]']])
    t.equal(sent(c), 'PBDES', 'only the client’s Describe')
  })

  t.test('a portal Described, then rebound in the same batch with another statement: the new portal is described again', async t => {
    const c = await open(t)
    c.send(
      parse('a', 'select name from customers order by id'),
      parse('b', 'select api_key from customers order by id'),
      bind('', 'a'),
      describe('P', ''),
      bind('', 'b'),
      execute(''),
      sync(),
    )
    const got = await c.batches(1)
    t.equal(codes(got), '112T2DDCZ')
    t.same(rowsOf(got), [['[REDACTED]'], ['[REDACTED]']])
    t.same(leaks(c.allReceived()), [])
  })

  t.test('a portal re-executed after PortalSuspended, across Syncs, inside a transaction: masked each time', async t => {
    const c = await open(t)
    c.send(query('begin'))
    await c.batches(1)
    c.send(parse('', 'select email from customers order by id'), bind('p1', ''), execute('p1', 1), sync())
    const one = await c.batches(1)
    t.equal(codes(one), '12DsZ')
    c.send(execute('p1', 1), sync())
    const two = await c.batches(1)
    t.equal(codes(two), 'DsZ')
    c.send(execute('p1', 1), sync(), query('commit'))
    const three = await c.batches(2)
    t.equal(codes(three), 'CZCZ', 'the portal is exhausted')
    t.same(rowsOf([...one, ...two]), [['[REDACTED]'], ['[REDACTED]']])
    t.same(leaks(c.allReceived()), [])
  })

  t.test('a SQL cursor run as a protocol portal: decided as its query, masked', async t => {
    const c = await open(t)
    const before = gw.audit.length
    c.send(query('begin; declare cur cursor for select id, email, api_key from customers order by id'))
    t.equal(codes(await c.batches(1)), 'CCZ')
    c.send(execute('cur', 1), sync())
    const one = await c.batches(1)
    t.equal(codes(one), 'DsZ')
    c.send(execute('cur'), sync(), query('fetch all from cur'))
    const rest = await c.batches(2)
    t.same(rowsOf([...one, ...rest]), [['1', '[REDACTED]', '[REDACTED]']].concat([['2', '[REDACTED]', '[REDACTED]']]))
    t.same(leaks(c.allReceived()), [])
    c.send(query('close cur'), execute('cur'), sync())
    const gone = await c.batches(2)
    t.equal(errorOf(gone)?.C, '34000', 'a closed cursor is unknown: refused by the gateway')
    c.send(query('commit'))
    await c.batches(1)
    await new Promise(r => setTimeout(r, 50))
    const ran = gw.audit.slice(before).find(a => /^declare cur/i.test(String(a.statement)) && a.rows === 1)
    t.match(ran, { class: 'read', decision: 'allow', resources: ['customers'] }, 'the Execute of the cursor is audited as its query')
  })

  t.test('a WITH HOLD cursor outlives its transaction; other portals do not', async t => {
    const c = await open(t)
    c.send(query('begin; declare h cursor with hold for select email from customers order by id; declare n cursor for select 1'), query('commit'))
    await c.batches(2)
    c.send(execute('h'), sync())
    const got = await c.batches(1)
    t.same(rowsOf(got), [['[REDACTED]'], ['[REDACTED]']])
    c.send(execute('n'), sync())
    t.equal(errorOf(await c.batches(1))?.C, '34000', 'the cursor closed at commit is unknown')
    c.send(query('close all'), execute('h'), sync())
    t.equal(errorOf(await c.batches(2))?.C, '34000', 'CLOSE ALL closes the held cursor too')
  })

  t.test('an earlier error in the batch: the added Describe is skipped with everything else, the session stays in step', async t => {
    const c = await open(t)
    c.send(parse('', 'select nosuchcolumn from customers'), bind('', ''), execute(''), sync())
    const got = await c.batches(1)
    t.equal(codes(got), 'EZ')
    t.equal(errorOf(got)?.C, '42703')
    c.send(parse('bad', 'select 1/0'), sync(), parse('', 'select email from customers where id = 1'), bind('', ''), execute(''), sync())
    const next = await c.batches(2)
    t.equal(codes(next), '1Z12DCZ')
    c.send(bind('', 'bad'), execute(''), parse('', 'select email from customers where id = 2'), bind('', ''), execute(''), sync())
    const failed = await c.batches(1)
    t.equal(codes(failed), 'EZ', 'the failing Bind (1/0 is folded when planning) skips the rest of the batch')
    t.equal(errorOf(failed)?.C, '22012')
    c.send(query('select email from customers where id = 1'))
    t.same(rowsOf(await c.batches(1)), [['[REDACTED]']])
    t.same(leaks(c.allReceived()), [])
  })

  t.test('a Query inside a failed extended batch is skipped by the server: the gateway counts no answer for it', async t => {
    const c = await open(t)
    c.send(parse('', 'selec broken'), query('prepare qx as select 1'), sync(), bind('', 'qx'), execute(''), sync(), query('select 2'))
    const got = await c.batches(3)
    t.equal(codes(got), 'EZEZTDCZ')
    t.match(errorOf(got.slice(2)), { C: '26000' }, 'the PREPARE never ran: qx is unknown')
  })

  t.test('COPY FROM STDIN through the extended protocol, with the Sync libpq sends before the data: the session stays in step', async t => {
    await direct.query('create table copied (id int)')
    const c = await open(t)
    const data = (text: string) => {
      const body = Buffer.from(text)
      const head = Buffer.alloc(5)
      head[0] = 0x64
      head.writeInt32BE(4 + body.length, 1)
      return Buffer.concat([head, body])
    }
    c.send(parse('', 'copy copied from stdin'), bind('', ''), execute(''), sync())
    // the server ignores that Sync while it reads the data; the Sync after CopyDone is answered
    c.send(data('1\n2\n'), Buffer.from([0x63, 0, 0, 0, 4]), sync())
    t.equal(codes(await c.batches(1)), '12GCZ')
    c.send(parse('', 'select email from customers where id = 1'), bind('', ''), execute(''), sync())
    const next = await c.batches(1)
    t.equal(codes(next), '12DCZ')
    t.same(rowsOf(next), [['[REDACTED]']])
    t.equal((await direct.query('select count(*)::int as n from copied')).rows[0].n, 2)
  })

  t.test('an empty mask plan sends nothing extra', async t => {
    const c = await open(t, plain)
    c.send(parse('', 'select id from customers order by id'), bind('', ''), execute(''), sync())
    t.equal(codes(await c.batches(1)), '12DDCZ')
    c.send(bind('', ''), execute(''), sync())
    await c.batches(1)
    t.equal(sent(c), 'PBESBES')
  })

  t.test('Parse s twice: the server keeps the first; Bind s runs what the server holds (the DELETE), and is decided as it', async t => {
    await refill()
    const c = await open(t)
    c.send(parse('s', 'delete from victims'), sync(), parse('s', 'select 1'), sync(), bind('', 's'), execute(''), sync())
    const got = await c.batches(3)
    t.equal(codes(got).slice(0, 3), '1ZE', 'the second Parse is refused by the server')
    t.match(errorOf(got.slice(2)), { C: '42P05' })
    const last = got.slice(4)
    t.match(errorOf(last), { C: '42501', M: /blocked by rule no-danger/ }, 'the DELETE the server holds is what was decided')
    t.equal(await victims(), 5, 'nothing deleted')
    // the same in one batch: the failing Parse skips the Bind and Execute
    c.send(parse('s', 'select 1'), bind('', 's'), execute(''), sync())
    t.equal(codes(await c.batches(1)), 'EZ')
    t.equal(await victims(), 5)
  })

  t.test('SQL PREPARE then protocol Bind/Execute: decided, audited and recorded like a protocol statement', async t => {
    await refill()
    const c = await open(t)
    const before = gw.audit.length
    c.send(query('prepare p as delete from victims'), bind('', 'p'), execute(''), sync())
    const got = await c.batches(2)
    t.match(errorOf(got.slice(got.findIndex(m => m.code === 'Z') + 1)), { C: '42501', M: /no-danger/ })
    t.equal(await victims(), 5, 'the review’s bypass deleted every row: no more')
    c.send(query('prepare r as select pg_read_file(\'/etc/hostname\')'), bind('', 'r'), execute(''), sync())
    t.match(errorOf((await c.batches(2)).slice(1)), { C: '42501' }, 'pg_read_file through a SQL PREPARE is admin')
    c.send(query("prepare role as select set_config('role', 'pg_read_server_files', false)"), bind('', 'role'), execute(''), sync())
    await c.batches(2)
    c.send(query('prepare who as select current_user::text'), bind('', 'who'), execute(''), sync())
    const who = await c.batches(2)
    t.same(rowsOf(who), [['portcullis']], 'set_config(role) was refused: current_user unchanged')
    await new Promise(r => setTimeout(r, 50))
    const lines = gw.audit.slice(before)
    t.match(
      lines.find(a => /prepare p as delete from victims/i.test(String(a.statement)) && a.decision === 'block'),
      { class: 'bulk-delete', rule: 'no-danger' },
      'an audit line for the Bind/Execute of the SQL-prepared DELETE',
    )
    t.ok(lines.find(a => String(a.statement).includes('current_user') && a.decision === 'allow' && a.rows === 1))
    // the recording holds the decision on what the Bind/Execute ran
    c.socket.destroy()
    await new Promise(r => setTimeout(r, 300))
    const decisions: Record<string, unknown>[] = []
    for (const f of readdirSync(gw.recordings, { recursive: true }).map(String).filter(f => /\.[a-z]+$/.test(f))) {
      for await (const e of readRecording(join(gw.recordings, f))) if (e.type === 'decision') decisions.push(e.payload)
    }
    t.ok(
      decisions.some(d => d.action === 'block' && d.class === 'bulk-delete' && /prepare p as delete from victims/i.test(String(d.statement))),
      'a decision record for the SQL-prepared DELETE run by Bind/Execute',
    )
  })

  t.test('DEALLOCATE s; PREPARE s AS DELETE … over a protocol statement: Bind s is the DELETE', async t => {
    await refill()
    const c = await open(t)
    c.send(parse('s9', 'select 1'), sync())
    await c.batches(1)
    c.send(query('deallocate s9; prepare s9 as delete from victims'), bind('', 's9'), execute(''), sync())
    const got = await c.batches(2)
    t.match(errorOf(got.slice(got.findIndex(m => m.code === 'Z') + 1)), { C: '42501' })
    t.equal(await victims(), 5)
    // PREPARE over an existing name fails: the model keeps the first
    c.send(query('prepare s9 as select 1'), bind('', 's9'), execute(''), sync())
    const again = await c.batches(2)
    t.match(errorOf(again), { C: '42P05' })
    t.match(errorOf(again.slice(again.findIndex(m => m.code === 'Z') + 1)), { C: '42501' }, 'still the DELETE')
    c.send(query('deallocate all'), bind('', 's9'), execute(''), sync())
    const all = await c.batches(2)
    t.match(errorOf(all.slice(1)), { C: '26000', M: 'prepared statement "s9" does not exist' })
    t.equal(await victims(), 5)
  })

  t.test('PREPARE, DEALLOCATE and DECLARE run through the extended protocol change the same model', async t => {
    await refill()
    const c = await open(t)
    // in one batch: the PREPARE's effect is predicted for the Bind after it (an error would skip both)
    c.send(parse('', 'prepare z as delete from victims'), bind('', ''), execute(''), bind('', 'z'), execute(''), sync())
    const got = await c.batches(1)
    t.equal(codes(got), '12C2EZ')
    t.match(errorOf(got), { C: '42501', M: /no-danger/ }, 'the body of a PREPARE run as a portal is what Bind z runs')
    t.equal(await victims(), 5)
    c.send(parse('', 'deallocate z'), bind('', ''), execute(''), sync(), bind('', 'z'), execute(''), sync())
    const gone = await c.batches(2)
    t.equal(codes(gone), '12CZEZ')
    t.match(errorOf(gone), { C: '26000' })
    c.send(query('begin'), parse('', 'declare pc cursor for select email, api_key from customers order by id'), bind('', ''), execute(''), sync(), execute('pc'), sync(), query('commit'))
    const cur = await c.batches(4)
    t.same(rowsOf(cur), [
      ['[REDACTED]', '[REDACTED]'],
      ['[REDACTED]', '[REDACTED]'],
    ])
    t.same(leaks(c.allReceived()), [])
  })

  t.test('a protocol statement `EXECUTE p` is classified as p stands when it runs', async t => {
    await refill()
    const c = await open(t)
    c.send(query('prepare p as select 1'), parse('ex', 'execute p'), sync())
    await c.batches(2)
    c.send(query('deallocate p; prepare p as delete from victims'), bind('', 'ex'), execute(''), sync())
    const got = await c.batches(2)
    t.match(errorOf(got.slice(got.findIndex(m => m.code === 'Z') + 1)), { C: '42501', M: /no-danger/ })
    t.equal(await victims(), 5)
    // the same inside one batch, the redefinition run as portals before the Execute
    c.send(query('deallocate p; prepare p as select 1'))
    await c.batches(1)
    c.send(
      parse('d', 'deallocate p'),
      bind('pd', 'd'),
      execute('pd'),
      parse('r', 'prepare p as delete from victims'),
      bind('pr', 'r'),
      execute('pr'),
      bind('', 'ex'),
      execute(''),
      sync(),
    )
    const one = await c.batches(1)
    t.match(errorOf(one), { C: '42501', M: /no-danger/ })
    t.equal(await victims(), 5)
  })

  t.test('DISCARD ALL forgets statements and portals', async t => {
    const c = await open(t)
    c.send(parse('d1', 'select 1'), sync(), query('discard all'), bind('', 'd1'), execute(''), sync())
    const got = await c.batches(3)
    t.match(errorOf(got.slice(3)), { C: '26000' })
  })

  t.test('unknown names are refused by the gateway, never forwarded', async t => {
    const c = await open(t)
    c.send(bind('', 'nope'), execute(''), sync())
    const got = await c.batches(1)
    t.equal(codes(got), 'EZ')
    t.match(errorOf(got), { C: '26000', M: 'prepared statement "nope" does not exist' })
    c.send(execute('nowhere'), sync())
    const ex = await c.batches(1)
    t.equal(codes(ex), 'EZ')
    t.match(errorOf(ex), { C: '34000', M: 'portal "nowhere" does not exist' })
    t.notOk(upstream(c).some(m => m.code === 'B' || m.code === 'E'), 'no Bind or Execute reached the server')
  })

  t.test('the unnamed statement: a failed Parse leaves none; a simple Query destroys it', async t => {
    const c = await open(t)
    c.send(parse('', 'select 1'), sync(), parse('', 'selec broken'), sync(), bind('', ''), execute(''), sync())
    const got = await c.batches(3)
    t.equal(codes(got), '1ZEZEZ')
    t.match(errorOf(got.slice(2, 4)), { C: '42601' })
    t.match(errorOf(got.slice(4)), { C: '26000', M: 'unnamed prepared statement does not exist' })
    c.send(parse('', 'select 2'), sync(), query('select 3'), bind('', ''), execute(''), sync())
    const q = await c.batches(3)
    t.match(errorOf(q.slice(q.findIndex(m => m.code === 'Z') + 1).slice(4)), { C: '26000' })
  })

  t.test('transaction end closes protocol portals', async t => {
    const c = await open(t)
    c.send(query('begin'), parse('', 'select email from customers'), bind('tp', ''), sync(), query('commit'), execute('tp'), sync())
    const got = await c.batches(4)
    t.match(errorOf(got.slice(got.length - 2)), { C: '34000' })
  })

  t.test('a pipeline of batches that depend on one another: each waits for what it names', async t => {
    const c = await open(t)
    c.send(
      parse('q1', 'select email, name from customers where id = $1'),
      sync(),
      bind('', 'q1', ['1']),
      execute(''),
      sync(),
      close('S', 'q1'),
      sync(),
      bind('', 'q1', ['2']),
      execute(''),
      sync(),
    )
    const got = await c.batches(4)
    t.equal(codes(got), '1Z2DCZ3ZEZ')
    t.same(rowsOf(got), [['[REDACTED]', 'Ann']])
    t.match(errorOf(got.slice(7)), { C: '26000' }, 'closed once CloseComplete came: unknown')
  })

  t.test('names that are not UTF-8 end the session (two byte strings must never share one entry)', async t => {
    const c = await open(t)
    const raw = parse('x', 'select 1')
    const bad = Buffer.concat([raw.subarray(0, 5), Buffer.from([0xff]), raw.subarray(6)])
    c.send(bad)
    const got = await c.untilReady()
    t.equal(got, undefined)
  })
})

t.test('FETCH takes the facts of the cursor it reads (ClassifyContext.cursors)', async t => {
  await loadClassifier()
  const query = classifySql('select email from customers')
  const fetch = classifySql('fetch 10 from c', { cursors: new Map([['c', query]]) })
  t.same(fetch.resources, ['customers'])
  t.equal(fetch.class, 'read')
  t.equal(fetch.facts.fetch, 'c')
  const local = classifySql('declare c2 cursor for select api_key from customers; fetch all from c2')
  t.same(local.statements[1]!.resources, ['customers'], 'a DECLARE earlier in the same text')
  t.equal(local.statements[0]!.facts!.declare, 'c2')
})
