// Defer mode on the wire, hand-driven: the request shows (and binds to) the statement the server
// will actually run, even when the client tries to make the gateway's idea of it differ from the
// server's; an approval releases that statement once, and nothing else.
import t from 'tap'
import pg from 'pg'
import { serializeParse, serializeQuery } from '../src/frontend.ts'
import { BufferWriter } from '../src/buffer-writer.ts'
import { DEFAULT_RULES, startGateway } from './harness.ts'
import { errorFields, RawSession, SYNC } from './raw-session.ts'

const approver = { subject: 'dba-1', groups: ['dba'], issuer: 'test' }

const bindExecute = (statement: string) =>
  Buffer.concat([
    new BufferWriter().cstring('').cstring(statement).int16(0).int16(0).int16(0).message('B'),
    new BufferWriter().cstring('').int32(0).message('E'),
    SYNC,
  ])

t.test('a named statement the client tries to redefine is shown, bound and released as the server holds it', async t => {
  const gw = await startGateway({
    rules: [...DEFAULT_RULES.filter(r => r.id !== 'agents-write'), { id: 'deletes', when: { groups: ['agents'], class: ['delete'] }, action: 'approve', approvers: ['dba'] }],
    options: { approvalMode: 'defer' },
  })
  t.teardown(() => gw.stop())
  const direct = new pg.Client({ host: gw.pg.host, port: gw.pg.port, user: gw.pg.user, password: gw.pg.password, database: gw.pg.database })
  await direct.connect()
  t.teardown(() => direct.end())
  await direct.query('CREATE TABLE docs (id int); INSERT INTO docs VALUES (20), (21)')
  const left = async () => (await direct.query('SELECT id FROM docs ORDER BY id')).rows.map(r => r.id)

  const s = new RawSession(gw)
  t.teardown(() => s.socket.destroy())
  t.equal((await s.start(await gw.token('agent-1', ['agents']))).at(-1)?.code, 'Z')
  s.socket.write(Buffer.concat([serializeParse('x', 'DELETE FROM docs WHERE id = 20'), SYNC]))
  t.same((await s.until('Z'))!.map(f => f.code), ['1', 'Z'])
  // Postgres refuses a second statement of the same name: the server still holds id = 20
  s.socket.write(Buffer.concat([serializeParse('x', 'DELETE FROM docs WHERE id = 21'), SYNC]))
  const dup = (await s.until('Z'))!
  t.equal(errorFields(dup.find(f => f.code === 'E')).C, '42P05', 'prepared statement "x" already exists')

  s.socket.write(bindExecute('x'))
  const first = (await s.until('Z'))!
  const err = errorFields(first.find(f => f.code === 'E'))
  t.equal(err.C, 'PA001', 'deferred')
  const id = /request (apr_\w+)/.exec(err.M!)![1]!
  const req = gw.core.approvals.get(id)!
  t.equal(req.sent?.text, 'DELETE FROM docs WHERE id = 20', 'the approver is shown what the server runs, not the refused redefinition')
  t.same(await left(), [20, 21], 'nothing ran')
  await gw.core.approvals.approve(id, approver)

  // an unnamed statement with the other value is another statement
  s.socket.write(Buffer.concat([serializeParse('', 'DELETE FROM docs WHERE id = 21'), bindExecute('')]))
  t.equal(errorFields((await s.until('Z'))!.find(f => f.code === 'E')).C, 'PA001', 'id = 21 is not released')
  // the approved one runs, once: sent again (pipelined right behind it) it asks again
  s.socket.write(Buffer.concat([bindExecute('x'), bindExecute('x')]))
  const ran = (await s.until('Z'))!
  t.ok(ran.some(f => f.code === 'C' && f.raw.toString('latin1').includes('DELETE 1')), 'DELETE 1')
  t.notOk(ran.some(f => f.code === 'E'), 'no error in its batch')
  const again = (await s.until('Z'))!
  t.equal(errorFields(again.find(f => f.code === 'E')).C, 'PA001', 'the second Execute is a new request')
  t.same(await left(), [21])
})

t.test('an approved SQL EXECUTE is not released again once its prepared statement could have been redefined', async t => {
  const gw = await startGateway({
    rules: [...DEFAULT_RULES.filter(r => r.id !== 'agents-write'), { id: 'deletes', when: { groups: ['agents'], class: ['delete'] }, action: 'approve', approvers: ['dba'] }],
    options: { approvalMode: 'defer' },
  })
  t.teardown(() => gw.stop())
  const direct = new pg.Client({ host: gw.pg.host, port: gw.pg.port, user: gw.pg.user, password: gw.pg.password, database: gw.pg.database })
  await direct.connect()
  t.teardown(() => direct.end())
  await direct.query('CREATE TABLE docs (id int); INSERT INTO docs VALUES (20), (21)')
  const s = new RawSession(gw)
  t.teardown(() => s.socket.destroy())
  t.equal((await s.start(await gw.token('agent-1', ['agents']))).at(-1)?.code, 'Z')
  const query = async (sql: string) => {
    s.socket.write(serializeQuery(sql))
    return (await s.until('Z'))!
  }
  t.notOk((await query('PREPARE p AS DELETE FROM docs WHERE id = $1')).some(f => f.code === 'E'))
  const first = errorFields((await query('EXECUTE p(20)')).find(f => f.code === 'E'))
  t.equal(first.C, 'PA001')
  const id = /request (apr_\w+)/.exec(first.M!)![1]!
  await gw.core.approvals.approve(id, approver)
  // the same text now runs another body: it must be asked for again
  t.notOk((await query('DEALLOCATE p; PREPARE p AS DELETE FROM docs WHERE id = $1 OR id = 21')).some(f => f.code === 'E'))
  const again = errorFields((await query('EXECUTE p(20)')).find(f => f.code === 'E'))
  t.equal(again.C, 'PA001', 'EXECUTE p(20) after p was redefined is a new request')
  t.notMatch(again.M!, id)
  t.same((await direct.query('SELECT id FROM docs ORDER BY id')).rows.map(r => r.id), [20, 21], 'nothing ran')
})

t.test('wait mode: an Execute behind a Parse Postgres refused is skipped, never held for an approver (the client gets one error and its ReadyForQuery)', async t => {
  const gw = await startGateway({
    rules: [...DEFAULT_RULES.filter(r => r.id !== 'agents-write'), { id: 'deletes', when: { groups: ['agents'], class: ['delete'] }, action: 'approve', approvers: ['dba'] }],
  })
  t.teardown(() => gw.stop())
  const direct = new pg.Client({ host: gw.pg.host, port: gw.pg.port, user: gw.pg.user, password: gw.pg.password, database: gw.pg.database })
  await direct.connect()
  t.teardown(() => direct.end())
  await direct.query('CREATE TABLE docs (id int); INSERT INTO docs VALUES (40)')
  const s = new RawSession(gw)
  t.teardown(() => s.socket.destroy())
  t.equal((await s.start(await gw.token('agent-1', ['agents']))).at(-1)?.code, 'Z')
  const batch = 'SELECT 1; DELETE FROM docs WHERE id = 40'
  const answer = async () => {
    const frames = (await s.until('Z'))!
    const errors = frames.filter(f => f.code === 'E')
    t.equal(errors.length, 1, 'one ErrorResponse, as from Postgres')
    t.equal(errorFields(errors[0]).C, '42601', 'Postgres refused the batch at Parse')
    t.equal(frames.at(-1)?.code, 'Z', 'then ReadyForQuery, without an approver')
    t.notOk(gw.core.approvals.list().some(a => a.status === 'pending'), 'no approval request left pending')
  }
  // all in one write: the Execute is held while the Parse's error is on its way, then withdrawn
  s.socket.write(Buffer.concat([serializeParse('', batch), bindExecute('')]))
  await answer()
  // the error already in before the Execute comes: nothing to decide
  s.socket.write(Buffer.concat([serializeParse('', batch), new BufferWriter().cstring('').cstring('').int16(0).int16(0).int16(0).message('B')]))
  await s.until('E')
  s.socket.write(Buffer.concat([new BufferWriter().cstring('').int32(0).message('E'), SYNC]))
  const rest = (await s.until('Z'))!
  t.same(rest.map(f => f.code), ['Z'], 'only the ReadyForQuery of the failed batch')
  t.notOk(gw.core.approvals.list().some(a => a.status === 'pending'), 'no approval request')
  // the session goes on, and nothing of the batches ran
  s.socket.write(serializeQuery('SELECT 3'))
  t.ok((await s.until('Z'))!.some(f => f.code === 'D'), 'the next query is answered')
  t.same((await direct.query('SELECT id FROM docs')).rows, [{ id: 40 }], 'the DELETE never ran')
})
