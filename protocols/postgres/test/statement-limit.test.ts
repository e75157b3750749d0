// limits.maxStatementBytes on the wire: SQL text longer than the target classifies is refused before
// it is parsed (libpg_query's memory grows to its largest parse and never shrinks), with Postgres's
// program_limit_exceeded, whatever the rules allow; the session goes on as after any error, and the
// statement never reaches the server.
import t from 'tap'
import pg from 'pg'
import { serializeParse, serializeQuery } from '../src/frontend.ts'
import { BufferWriter } from '../src/buffer-writer.ts'
import { startGateway } from './harness.ts'
import { dataRows, errorFields, extendedStatement, RawSession, SYNC } from './raw-session.ts'

const MAX = 4096
// a statement the rules would let through: every class is allowed for agents
const ALLOW_ALL = [{ id: 'anything', when: { groups: ['agents'] }, action: 'allow' }]

/** an INSERT of `bytes` bytes whose unique tag shows in pg_stat_activity if the server ever sees it */
function insert(tag: string, bytes: number): string {
  const head = `INSERT INTO lim SELECT 1 /* ${tag} */ WHERE 1 IN (`
  const list = '1,'.repeat(Math.floor((bytes - head.length - 2) / 2)) + '1'
  return head + list + ' '.repeat(bytes - head.length - list.length - 1) + ')'
}

t.test('an over-long Query or Parse gets one 54000 ErrorResponse, nothing reaches the server, the session goes on', async t => {
  const gw = await startGateway({ limits: { maxStatementBytes: MAX }, rules: ALLOW_ALL })
  t.teardown(() => gw.stop())
  const direct = new pg.Client({ host: gw.pg.host, port: gw.pg.port, user: gw.pg.user, password: gw.pg.password, database: gw.pg.database })
  await direct.connect()
  t.teardown(() => direct.end())
  await direct.query('CREATE TABLE lim (id int)')
  const rows = async () => Number((await direct.query('SELECT count(*) AS n FROM lim')).rows[0].n)
  // what the session's backend last ran (pg_stat_activity shows a Parse's text too)
  const serverSaw = async (tag: string) =>
    (await direct.query(`SELECT count(*) AS n FROM pg_stat_activity WHERE pid <> pg_backend_pid() AND query LIKE $1`, [`%${tag}%`])).rows[0].n !== '0'

  const s = new RawSession(gw)
  t.teardown(() => s.socket.destroy())
  t.equal((await s.start(await gw.token())).at(-1)?.code, 'Z', 'logged in')

  const fits = insert('tag-fits', MAX)
  t.equal(Buffer.byteLength(fits), MAX)
  s.socket.write(serializeQuery(fits))
  t.same((await s.until('Z'))!.map(f => f.code), ['C', 'Z'], `a statement of exactly ${MAX} bytes runs`)
  t.equal(await rows(), 1)
  t.ok(await serverSaw('tag-fits'), 'the probe sees what the server ran')

  s.socket.write(serializeQuery(insert('tag-query', MAX + 1)))
  const q = (await s.until('Z'))!
  t.same(q.map(f => f.code), ['E', 'Z'], 'Query: one ErrorResponse, then ReadyForQuery, as Postgres answers a failed Query')
  const qe = errorFields(q[0])
  t.equal(qe.C, '54000', 'program_limit_exceeded')
  t.equal(qe.S, 'ERROR')
  t.equal(qe.M, `statement too long to classify: ${MAX + 1} bytes of SQL text, this gateway classifies at most ${MAX} (limits.maxStatementBytes)`)
  t.notOk(await serverSaw('tag-query'), 'the server never saw the statement')
  t.equal(await rows(), 1, 'nothing was inserted')

  // bytes, not characters: 2,100 two-byte characters are 4,200 bytes
  const wide = `SELECT '${'é'.repeat(2100)}' AS x`
  t.ok(wide.length < MAX && Buffer.byteLength(wide) > MAX)
  s.socket.write(serializeQuery(wide))
  t.equal(errorFields((await s.until('Z'))!.find(f => f.code === 'E')).C, '54000', 'the bound counts UTF-8 bytes')

  // Parse, Bind, Execute, Sync in one write: Postgres fails the Parse and skips to the Sync
  const bind = new BufferWriter().cstring('').cstring('big').int16(0).int16(0).int16(0).message('B')
  const execute = new BufferWriter().cstring('').int32(0).message('E')
  s.socket.write(Buffer.concat([serializeParse('big', insert('tag-parse', MAX * 4)), bind, execute, SYNC]))
  const p = (await s.until('Z'))!
  t.same(p.map(f => f.code), ['E', 'Z'], 'Parse: one ErrorResponse, the Bind and Execute skipped, then ReadyForQuery')
  t.equal(errorFields(p[0]).C, '54000')
  t.notOk(await serverSaw('tag-parse'), 'the server never saw the Parse')
  t.equal(await rows(), 1, 'nothing was inserted')

  // the statement was never prepared: binding it later is refused like any unknown name
  s.socket.write(Buffer.concat([bind, execute, SYNC]))
  t.equal(errorFields((await s.until('Z'))!.find(f => f.code === 'E')).C, '26000', 'prepared statement "big" does not exist')

  s.socket.write(Buffer.concat([extendedStatement('SELECT 2 AS two'), SYNC]))
  const after = (await s.until('Z'))!
  t.same(dataRows(after), [['2']], 'the session goes on: the next statement is answered')
  t.notOk(s.closed)
})

t.test('the default bound is 32 KiB', async t => {
  const gw = await startGateway({ rules: ALLOW_ALL })
  t.teardown(() => gw.stop())
  const direct = new pg.Client({ host: gw.pg.host, port: gw.pg.port, user: gw.pg.user, password: gw.pg.password, database: gw.pg.database })
  await direct.connect()
  t.teardown(() => direct.end())
  await direct.query('CREATE TABLE lim (id int)')
  const s = new RawSession(gw)
  t.teardown(() => s.socket.destroy())
  t.equal((await s.start(await gw.token())).at(-1)?.code, 'Z')
  s.socket.write(serializeQuery(insert('tag-default-fits', 32 * 1024)))
  t.same((await s.until('Z'))!.map(f => f.code), ['C', 'Z'], '32,768 bytes run')
  s.socket.write(serializeQuery(insert('tag-default-over', 32 * 1024 + 1)))
  t.equal(errorFields((await s.until('Z'))!.find(f => f.code === 'E')).C, '54000', '32,769 bytes are refused')
})
