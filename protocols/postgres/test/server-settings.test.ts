import t from 'tap'
import pg from 'pg'
import { serializeQuery } from '../src/frontend.ts'
import { BufferWriter } from '../src/buffer-writer.ts'
import { DEFAULT_RULES, startGateway } from './harness.ts'
import { RawSession, SYNC, errorFields, extendedStatement, parameterStatus } from './raw-session.ts'

// Whatever statement makes the server read SQL unlike the gateway's parser, or run the session as
// another role — an admin statement a rule allowed, or a function whose body the classifier cannot
// see — the server's ParameterStatus report of it ends the session with a FATAL that says why.
t.test('a server that now reads SQL unlike the gateway, or runs as another role, ends the session', async t => {
  const gw = await startGateway({
    rules: [
      // a permissive rule: the dba group may run admin statements (the strictest matching rule
      // wins, so the default block of admin is kept to the agents)
      { id: 'dba-all', when: { groups: ['dba'], class: ['session', 'read', 'write', 'admin'] }, action: 'allow' },
      ...DEFAULT_RULES.filter(r => r.id !== 'no-danger'),
      { id: 'no-danger', when: { groups: ['agents'], class: ['bulk-delete', 'admin'] }, action: 'block', reason: 'dangerous statements are not allowed' },
    ],
  })
  t.teardown(() => gw.stop())
  const direct = new pg.Client({ connectionString: gw.pg.url })
  await direct.connect()
  t.teardown(() => direct.end())
  await direct.query(`
    CREATE TABLE victims (id int);
    INSERT INTO victims VALUES (1), (2);
    -- an application's helper: the classifier sees a call, never the set_config inside
    CREATE FUNCTION app_set(n text, v text) RETURNS text LANGUAGE sql AS $$ SELECT set_config(n, v, false) $$;
    CREATE ROLE plain_role NOLOGIN;
    GRANT SELECT ON victims TO plain_role;
  `)
  const victims = async () => (await direct.query('SELECT count(*)::int AS n FROM victims')).rows[0].n as number

  /** runs `sql` on a new session and returns everything the client received after it */
  async function runs(groups: string[], sql: string, after?: string) {
    const c = new RawSession(gw)
    const login = await c.start(await gw.token(groups[0] + '-1', groups))
    t.equal(login.at(-1)?.code, 'Z', 'logged in')
    c.socket.write(serializeQuery(sql))
    const first = await c.until('CE')
    // the follow-up a client would send once the statement completed
    if (after && !c.closed) c.socket.write(serializeQuery(after))
    const rest = await c.rest()
    return [...(first ?? []), ...rest]
  }

  const scsOff = `SELECT 'a\\' , $$'; DELETE FROM victims; --$$`

  t.test('UPDATE pg_settings … standard_conforming_strings allowed by a rule: FATAL, and the next "read" never runs', async t => {
    const got = await runs(['dba'], "UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'", scsOff)
    const fatal = got.find(f => f.code === 'E')
    t.match(errorFields(fatal), { S: 'FATAL', C: '42501', M: /standard_conforming_strings=off/ })
    // the update rule of pg_settings is a SELECT set_config(…): its row, UPDATE n, then the FATAL
    t.match(got.map(f => f.code).join(''), /^(TD+)?CE$/, 'no ReadyForQuery, no answer to the follow-up')
    t.same(parameterStatus(got), {}, 'the report itself never reaches the client')
    t.equal(got.at(-1), fatal, 'the FATAL is the last message')
    t.equal(await victims(), 2, 'the rows are still there')
  })

  t.test('a function whose body calls set_config (classified read): the report alone ends the session', async t => {
    const got = await runs(['agents'], "SELECT app_set('standard_conforming_strings', 'off')", scsOff)
    t.match(errorFields(got.find(f => f.code === 'E')), { S: 'FATAL', C: '42501', M: /standard_conforming_strings=off/ })
    t.equal(got.map(f => f.code).join(''), 'TDCE', 'the call completes, its report ends the session')
    t.equal(await victims(), 2)
  })

  t.test('client_encoding changed to a client-only encoding through a PREPAREd statement: FATAL', async t => {
    const c = new RawSession(gw)
    await c.start(await gw.token('agent-1', ['agents']))
    c.socket.write(serializeQuery('PREPARE enc(text, text) AS SELECT app_set($1, $2)'))
    t.ok(await c.until('Z'))
    c.socket.write(serializeQuery("EXECUTE enc('client_encoding', 'SJIS')"))
    const got = await c.rest()
    t.match(errorFields(got.find(f => f.code === 'E')), { S: 'FATAL', C: '42501', M: /client_encoding=SJIS/ })
    t.notOk(got.some(f => f.code === 'Z'))
  })

  t.test('the session switched to a non-superuser role by set_config: is_superuser changed, FATAL', async t => {
    const got = await runs(['agents'], "SELECT app_set('role', 'plain_role')", 'SELECT count(*) FROM victims')
    t.match(errorFields(got.find(f => f.code === 'E')), { S: 'FATAL', C: '42501', M: /is_superuser changed/ })
    t.equal(got.map(f => f.code).join(''), 'TDCE', "app_set's own row, then the FATAL: the follow-up never ran")
  })

  t.test('SET SESSION AUTHORIZATION allowed by a rule still ends the session: the identity is the target\'s', async t => {
    const got = await runs(['dba'], 'SET SESSION AUTHORIZATION plain_role')
    t.match(errorFields(got.find(f => f.code === 'E')), { S: 'FATAL', C: '42501', M: /(session_authorization|is_superuser) changed/ })
  })

  t.test('a statement pipelined behind an admin one waits for its answer, and so never runs under the changed setting', async t => {
    const c = new RawSession(gw)
    await c.start(await gw.token('dba-1', ['dba']))
    // both Queries in one write: the second must not reach the server before the first's answer
    c.socket.write(Buffer.concat([serializeQuery("UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'"), serializeQuery(scsOff)]))
    const got = await c.rest()
    t.match(errorFields(got.find(f => f.code === 'E')), { S: 'FATAL', M: /standard_conforming_strings=off/ })
    t.match(got.map(f => f.code).join(''), /^(TD+)?CE$/)
    t.equal(await victims(), 2, 'the pipelined DELETE never ran')
  })

  t.test('in one extended batch, a statement after an admin Execute is refused (and the batch rolls back)', async t => {
    const c = new RawSession(gw)
    await c.start(await gw.token('dba-1', ['dba']))
    // the server would Parse, Bind and run the second statement under the new setting before any
    // report could come (reports come at ReadyForQuery)
    c.socket.write(Buffer.concat([
      extendedStatement("UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'"),
      extendedStatement('SELECT count(*) FROM victims'),
      SYNC,
    ]))
    const got = (await c.until('Z'))!
    t.match(got.filter(f => f.code === 'E').map(errorFields), [{ S: 'ERROR', C: '42501', M: /after an admin statement in the same batch is refused/ }])
    t.notOk(got.some(f => f.code === 'D' && got.indexOf(f) > got.findIndex(g => g.code === 'C')), 'the second statement returned no row')
    // the refusal failed the batch's implicit transaction: the setting went back with it
    c.socket.write(serializeQuery('SHOW standard_conforming_strings'))
    const shown = (await c.until('Z'))!
    t.ok(shown.some(f => f.code === 'D' && f.raw.includes(Buffer.from('on'))), 'standard_conforming_strings is on again')
    c.socket.end()
  })

  t.test('an admin Execute that changes the setting: its report at Sync ends the session', async t => {
    const c = new RawSession(gw)
    await c.start(await gw.token('dba-1', ['dba']))
    c.socket.write(Buffer.concat([extendedStatement("SELECT set_config('client_encoding', 'BIG5', false)"), SYNC, serializeQuery(scsOff)]))
    const got = await c.rest()
    t.match(errorFields(got.find(f => f.code === 'E')), { S: 'FATAL', C: '42501', M: /client_encoding=BIG5/ })
    t.notOk(got.some(f => f.code === 'Z'), 'no ReadyForQuery: the pipelined Query was never sent')
    t.equal(await victims(), 2)
  })

  t.test('admin statements that change no setting keep working pipelined, COPY … FROM STDIN included', async t => {
    const c = new RawSession(gw)
    await c.start(await gw.token('dba-1', ['dba']))
    c.socket.write(Buffer.concat([serializeQuery('ANALYZE victims'), serializeQuery('SELECT count(*) FROM victims')]))
    t.match((await c.until('Z'))!.map(f => f.code).join(''), /^C+Z$/, 'ANALYZE answered')
    t.ok((await c.until('Z'))!.some(f => f.code === 'D'), 'then the pipelined SELECT')
    // an admin COPY FROM STDIN: the server asks for data the gateway must not hold back
    c.socket.write(serializeQuery("COPY victims FROM STDIN WHERE length(pg_read_file('PG_VERSION')) > 0"))
    t.ok(await c.until('G'), 'CopyInResponse')
    c.socket.write(Buffer.concat([new BufferWriter().bytes(Buffer.from('3\n')).message('d'), Buffer.from([0x63, 0, 0, 0, 4])]))
    t.match(await c.until('Z'), [{ code: 'C' }, { code: 'Z' }])
    t.equal(await victims(), 3)
    await direct.query('DELETE FROM victims WHERE id = 3')
    c.socket.end()
  })

  t.test('a role or database default that makes the server read SQL differently: new sessions are refused', async t => {
    for (const [set, reset, message] of [
      ["ALTER ROLE portcullis SET client_encoding = 'SJIS'", 'ALTER ROLE portcullis RESET client_encoding', /client_encoding=SJIS/],
      ['ALTER DATABASE app SET standard_conforming_strings = off', 'ALTER DATABASE app RESET standard_conforming_strings', /standard_conforming_strings=off/],
    ] as const) {
      await direct.query(set)
      try {
        const c = new RawSession(gw)
        const got = await c.start(await gw.token('agent-1', ['agents']))
        t.same(got.map(f => f.code), ['E'], 'one error, no session')
        t.match(errorFields(got[0]), { S: 'FATAL', M: message })
        t.notOk(got.some(f => f.code === 'S'), 'no setting of the refused session reached the client')
      } finally {
        await direct.query(reset)
      }
    }
  })

  t.test('settings the parser reads alike pass, reports and all', async t => {
    const c = new RawSession(gw)
    const login = await c.start(await gw.token('agent-1', ['agents']))
    t.equal(parameterStatus(login).standard_conforming_strings, 'on')
    c.socket.write(serializeQuery("SET client_encoding = 'LATIN1'; SET application_name = 'reporter'; SELECT app_set('DateStyle', 'German')"))
    const got = (await c.until('Z'))!
    t.same(parameterStatus(got), { client_encoding: 'LATIN1', application_name: 'reporter', DateStyle: 'German, DMY' }, 'the reports are forwarded')
    c.socket.write(serializeQuery('SELECT 1'))
    t.ok((await c.until('Z'))!.some(f => f.code === 'D'), 'the session goes on')
    c.socket.end()
  })
})
