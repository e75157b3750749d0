import t, { type Test } from 'tap'
import { Socket, connect } from 'node:net'
import { once } from 'node:events'
import { execFile as execFileCb } from 'node:child_process'
import { promisify } from 'node:util'
import { existsSync } from 'node:fs'
import { serializePasswordMessage, serializeParse, serializeQuery, serializeStartupMessage } from '../src/frontend.ts'
import { BufferWriter } from '../src/buffer-writer.ts'
import { Framer } from '../src/framer.ts'
import pg from 'pg'
import { startGateway, type Gateway } from './harness.ts'
import { loadClassifier } from '../src/classify/index.ts'
import { parseSql } from '../src/classify/parser.ts'
import { LineageAnalyzer, opaqueReason, type Column, type Value } from '../src/classify/lineage.ts'
import { maskText, parseArray, parseRecord, serializeArray, serializeRecord, type MaskNode } from '../src/structured.ts'
import type { MaskPlan } from '@portcullis/core/types'

// ---- the analysis on parse trees (no server) -------------------------------------------------

const TABLES: Record<string, string[]> = {
  customers: ['id', 'email', 'name', 'note'],
  orders: ['id', 'customer_id', 'total'],
  swapped: ['name', 'email'],
}
const VIEWS: Record<string, string> = { swapped: 'select email as name, name as email from customers' }

function analyse(sql: string): (Value | undefined)[] | string {
  const tree = parseSync(sql)
  const a = new LineageAnalyzer(name => {
    const table = name.replace(/^public\./, '')
    const cols = TABLES[table]?.map((column): Column => ({ schema: 'public', table, column }))
    return cols && { columns: cols, view: VIEWS[table] ? parseSync(VIEWS[table]) : undefined }
  })
  const r = a.result(tree)
  return r.columns ?? `unknown: ${r.unknown}`
}

function parseSync(sql: string) {
  const stmt = parseSql(sql).stmts[0]!.stmt!
  const d = (stmt as { DeclareCursorStmt?: { query: Record<string, unknown> } }).DeclareCursorStmt
  return d ? d.query : stmt
}

/** the source columns of each output column, 'table.column' sorted; '!' + reason when opaque */
function sources(sql: string): string[] {
  const r = analyse(sql)
  if (typeof r === 'string') return [r]
  return r.map(v => {
    const why = v && opaqueReason(v)
    if (why) return `!${why}`
    return (v?.sources ?? []).map(c => `${c.table}.${c.column}`).sort().join(',')
  })
}

t.test('lineage on parse trees', async t => {
  await loadClassifier()
  t.same(sources('select email, lower(email), id + 1, name from customers'), ['customers.email', 'customers.email', 'customers.id', 'customers.name'])
  t.same(sources('select * from customers'), ['customers.id', 'customers.email', 'customers.name', 'customers.note'])
  t.same(sources('select c.*, o.total from customers c join orders o on o.customer_id = c.id'), ['customers.id', 'customers.email', 'customers.name', 'customers.note', 'orders.total'])
  t.same(sources('select * from customers join orders using (id)'), ['customers.id,orders.id', 'customers.email', 'customers.name', 'customers.note', 'orders.customer_id', 'orders.total'])
  t.same(sources("select case when email like 'a%' then 'x' else name end from customers"), ['customers.email,customers.name'], 'a CASE result tells of its condition')
  t.same(sources('select coalesce(note, email) from customers'), ['customers.email,customers.note'])
  t.same(sources('select (select email from customers c2 where c2.id = c.id) from customers c'), ['customers.email'])
  t.same(sources('with w(e) as (select email from customers) select upper(e) from w'), ['customers.email'])
  t.same(sources('select x from (select email, name from customers) s(x, y)'), ['customers.email'])
  t.same(sources("select 'nobody' union all select email from customers"), ['customers.email'], 'set operations by position')
  t.same(sources('with recursive r(n, e) as (select 1, email from customers union all select n + 1, e from r where n < 3) select e from r'), ['customers.email'])
  t.same(sources('select c from customers c'), ['customers.email,customers.id,customers.name,customers.note'])
  t.same(sources('select l.e from customers c, lateral (select lower(c.email) as e) l'), ['customers.email'])
  t.same(sources('select row_number() over (order by email) from customers'), ['customers.email'], 'a window ordering is a derivation')
  t.same(sources('select count(*), count(email) from customers'), ['', ''], 'a count tells no value')
  t.same(sources('values (1), (2)'), [''])
  t.same(sources("select email in ('a', 'b'), id between 1 and 2, name is json from customers"), ['customers.email', 'customers.id', 'customers.name'])
  t.same(sources('select email from customers where exists (select 1 from orders)'), ['customers.email'])
  // whole rows keep their parts
  const whole = analyse('select row_to_json(c), array_agg(email), row(id, email) from customers c') as Value[]
  t.equal(whole[0]!.parts?.kind, 'json')
  t.ok((whole[0]!.parts as { keys: Map<string, Value> }).keys.has('email'))
  t.equal(whole[1]!.parts?.kind, 'array')
  t.equal(whole[2]!.parts?.kind, 'record')
  // what cannot be told
  t.match(sources('select myfunc(c) from customers c')[0], /^!function myfunc over a whole row/)
  t.match(sources('select r.x from customers c, lateral rows_of(c.id) r')[0], /^!/)
  t.match(sources('select nosuch.x from customers')[0], /^!column "nosuch.x" cannot be resolved/)
  t.match(sources('select * from unknown_table')[0], /^unknown:/)
  t.match(sources('select xmlelement(name x, c) from customers c')[0], /^!/)
  t.same(sources('insert into orders (id, total) select id, id from customers returning total'), ['customers.id,orders.total'], 'RETURNING gives back what was written')
  t.same(sources('update customers set note = email returning note'), ['customers.email,customers.note'])
  t.same(sources('select (c).* from customers c'), ['customers.id', 'customers.email', 'customers.name', 'customers.note'])
  t.same(sources('select j.* from customers c, jsonb_each(to_jsonb(c)) j'), ['customers.email,customers.id,customers.name,customers.note', 'customers.email,customers.id,customers.name,customers.note'])
  t.same(sources('select name, u from customers c, unnest(array[c.email]) u'), ['customers.name', 'customers.email'])
  t.match(sources('select * from customers c, jsonb_populate_record(null::customers, to_jsonb(c)) r')[0], /^unknown:/)
  t.same(sources('select name, lower(email) from swapped'), ['customers.email,swapped.name', 'customers.name,swapped.email'], "a view's columns are what its query makes them")
})

t.test('masking inside record, array and JSON text', async t => {
  const plan = { apply: (m: string, v: string) => (m === 'null' ? null : `<${v.length}>`) } as unknown as MaskPlan
  t.same(parseRecord('(1,"a b",,"q""x\\\\y",z)'), ['1', 'a b', null, 'q"x\\y', 'z'])
  t.same(parseRecord('()'), [null])
  t.equal(serializeRecord(['1', 'a b', null, 'q"x', '']), '(1,"a b",,"q""x","")')
  t.same(parseArray('{a,"b c",NULL,"NULL",{d}}')?.items, ['a', 'b c', null, 'NULL', ['d']])
  t.equal(parseArray('[0:1]={x,y}')?.prefix, '[0:1]=')
  t.equal(serializeArray(['a', 'b c', null, 'NULL', '']), '{a,"b c",NULL,"NULL",""}')
  const whole: MaskNode = { method: 'redact' }
  t.equal(maskText({ method: 'redact', record: [undefined, whole, undefined] }, '(1,"x@y.example",Ann)', plan), '(1,<11>,Ann)')
  t.equal(maskText({ method: 'redact', array: whole }, '{"a b",NULL,c}', plan), '{<3>,NULL,<1>}')
  t.equal(maskText({ method: 'redact', array: { method: 'redact', record: [undefined, whole] } }, '{"(1,x@y)","(2,z@w)"}', plan), '{"(1,<3>)","(2,<3>)"}')
  const json: MaskNode = { method: 'redact', json: { keys: new Map([['email', whole]]) } }
  t.equal(maskText(json, '{"id": 9007199254740993, "email": "x@y.example", "n": {"email": 1}}', plan), '{"id": 9007199254740993, "email": "<11>", "n": {"email": 1}}', 'only the keys at that level; other values keep their exact text')
  t.equal(maskText({ method: 'redact', json: { keys: new Map(), element: json } }, '[{"email":"a"}, null, {"email":null}]', plan), '[{"email":"<1>"}, null, {"email":null}]')
  t.equal(maskText(json, '[1]', plan), '<3>', 'not the shape the lineage says: masked whole')
  t.equal(maskText(json, '{"email": "x"', plan), '<13>', 'not JSON: masked whole')
  t.equal(maskText({ method: 'redact', record: [whole] }, '(1,2)', plan), '<5>', 'a record of another width: masked whole')
})

// ---- through the gateway, against Postgres 15 ------------------------------------------------

const EMAIL = 'ann.secret@hidden-example.com'
const EMAIL2 = 'bob.private@covert-mail.org'
const ID = 987654321

/** every form a test knows a clear value may take on the wire */
function encodings(v: string): Buffer[] {
  const b = Buffer.from(v)
  const out = [b, Buffer.from(b.toString('hex')), Buffer.from(b.toString('hex').toUpperCase()), Buffer.from(JSON.stringify(v).slice(1, -1))]
  // base64 at each of the three alignments the value can start at
  for (let k = 0; k < 3; k++) {
    const s = Buffer.concat([Buffer.alloc(k, 0x20), b]).toString('base64')
    out.push(Buffer.from(s.slice(Math.ceil((k * 4) / 3) + 2, -4)))
  }
  return out
}

const SECRETS = [EMAIL, EMAIL2, 'ann.secret', 'hidden-example', 'bob.private', 'covert-mail', [...EMAIL].reverse().join(''), String(ID)]

/** the first clear value found in the bytes, in any encoding */
function leak(bytes: Buffer): string | undefined {
  for (const s of SECRETS) {
    for (const e of encodings(s)) {
      if (e.length >= 6 && bytes.includes(e)) return `${JSON.stringify(s)} (as ${JSON.stringify(e.toString())})`
    }
  }
  return undefined
}

function assertClean(t: Test, bytes: Buffer, what: string): void {
  const found = leak(bytes)
  if (found) t.fail(`${what}: the client received ${found}`)
  else t.pass(`${what}: no clear value in any byte received`)
}

/** a pg client whose every received byte is kept */
async function tapped(t: Test, gw: Gateway, opts: Partial<pg.ClientConfig> = {}): Promise<{ c: pg.Client; received: () => Buffer; reset: () => void }> {
  const chunks: Buffer[] = []
  const sock = new Socket()
  sock.on('data', b => chunks.push(b))
  const c = new pg.Client({ connectionString: await gw.url(), stream: () => sock, ...opts })
  c.on('error', () => {})
  await c.connect()
  t.teardown(() => c.end().catch(() => {}))
  return { c, received: () => Buffer.concat(chunks), reset: () => (chunks.length = 0) }
}

/** raw frontend messages; every byte back is kept. `exchange` sends and waits for n ReadyForQuery */
async function rawClient(t: Test, gw: Gateway) {
  const sock = connect({ host: gw.host, port: gw.port })
  await once(sock, 'connect')
  t.teardown(() => sock.destroy())
  const framer = new Framer(1 << 24)
  let all: Buffer[] = []
  let ready = 0
  let wake: (() => void) | undefined
  sock.on('data', chunk => {
    all.push(chunk)
    for (const f of framer.push(chunk)) if (f.code === 0x5a) ready++
    wake?.()
  })
  const exchange = async (bytes: Buffer, n = 1): Promise<Buffer> => {
    all = []
    ready = 0
    sock.write(bytes)
    while (ready < n) await new Promise<void>(r => (wake = r))
    return Buffer.concat(all)
  }
  sock.write(serializeStartupMessage({ user: 'agent-1', database: 'app' }))
  await new Promise(r => setTimeout(r, 50))
  await exchange(serializePasswordMessage(await gw.token()))
  return { exchange }
}

const msg = (code: string, body: BufferWriter) => body.message(code)
const bind = (portal: string, stmt: string, resultFormat: number) => msg('B', new BufferWriter().cstring(portal).cstring(stmt).int16(0).int16(0).int16(1).int16(resultFormat))
const describe = (kind: 'S' | 'P', name: string) => msg('D', new BufferWriter().int8(kind.charCodeAt(0)).cstring(name))
const execute = (portal: string) => msg('E', new BufferWriter().cstring(portal).int32(0))
const sync = () => msg('S', new BufferWriter())

t.test('masking follows the data', async t => {
  const gw = await startGateway({
    rules: [
      { id: 'session', when: { class: ['session'] }, action: 'allow' },
      { id: 'agents', when: { groups: ['agents'], class: ['read', 'write'] }, action: 'allow' },
      { id: 'no-danger', when: { class: ['bulk-delete', 'admin'] }, action: 'block', reason: 'dangerous statements are not allowed' },
    ],
    masking: [
      { id: 'pii', when: { targets: ['db'] }, columns: ['customers.email'], method: 'redact' },
      { id: 'ids', when: { targets: ['db'] }, columns: ['customers.id'], method: 'hash' },
    ],
  })
  t.teardown(() => gw.stop())
  const setup = new pg.Client({ connectionString: gw.pg.url })
  await setup.connect()
  t.teardown(() => setup.end())
  await setup.query(`create table customers (id int primary key, email text, name text, note text)`)
  await setup.query(`insert into customers values ($1, $2, 'Ann', 'likes tea'), (2, $3, 'Bob', 'plain')`, [ID, EMAIL, EMAIL2])
  await setup.query(`create function peek(customers) returns text language sql as 'select $1.email'`)
  await setup.query(`create function rows_of(int) returns setof customers language sql as 'select * from customers where id = $1'`)
  await setup.query(`create view swapped as select email as name, name as email from customers`)
  await setup.query(`create view loud as select id, upper(email) as shout, name from customers`)
  await setup.query(`create function open_cur() returns refcursor language plpgsql as $$ declare r refcursor := 'fn_cur'; begin open r for select lower(email) from customers; return r; end $$`)

  t.test('the byte check finds each encoding when nothing masks it (straight to Postgres)', async t => {
    const chunks: Buffer[] = []
    const sock = new Socket()
    sock.on('data', b => chunks.push(b))
    const raw = new pg.Client({ connectionString: gw.pg.url, stream: () => sock })
    await raw.connect()
    t.teardown(() => raw.end())
    for (const sql of ["select encode(convert_to(email, 'UTF8'), 'base64') from customers", 'select reverse(email) from customers', 'select email::bytea from customers', 'select to_json(email) from customers', 'select id from customers']) {
      chunks.length = 0
      await raw.query(sql)
      t.ok(leak(Buffer.concat(chunks)), `found in: ${sql}`)
    }
  })

  const followed: [string, string][] = [
    ['lower', 'select lower(email) from customers'],
    ['replace', "select replace(email, '@', ' at ') from customers"],
    ['reverse', 'select reverse(email) from customers'],
    ['split_part', "select split_part(email, '@', 1), split_part(email, '@', 2) from customers"],
    ['translate', "select translate(email, '@.', '#!') from customers"],
    ['base64', "select encode(convert_to(email, 'UTF8'), 'base64') from customers"],
    ['::bytea', 'select email::bytea from customers'],
    ['concat', "select concat('<', email, '>') from customers"],
    ['||', "select 'mail: ' || email from customers"],
    ['format', "select format('%s!', email) from customers"],
    ['CASE', "select case when id > 0 then email else 'none' end from customers"],
    ['COALESCE', "select coalesce(email, 'none') from customers"],
    ['scalar subquery', 'select (select c2.email from customers c2 where c2.id = c.id) || \'\' from customers c'],
    ['CTE with a renamed column', "with w(e) as (select email from customers) select e || '' from w"],
    ['subquery in FROM with column aliases', "select x || '' from (select email, name from customers) s(x, y)"],
    ['UNION with an unmasked first branch', "select 'nobody@nowhere.example' union all select email from customers"],
    ['whole row', 'select c from customers c'],
    ['row_to_json', 'select row_to_json(c) from customers c'],
    ['to_jsonb', 'select to_jsonb(c) from customers c'],
    ['row_to_json pretty', 'select row_to_json(c, true) from customers c'],
    ['json_agg', 'select json_agg(c) from customers c'],
    ['ARRAY[]', 'select array[email, name] from customers'],
    ['array_agg', 'select array_agg(email) from customers'],
    ['ROW()', 'select row(email, name) from customers'],
    ['string_agg', "select string_agg(email, ',') from customers"],
    ['id + 0 (hash-masked id)', 'select id + 0 from customers'],
    ['id::text (hash-masked id)', 'select id::text from customers'],
    ['lateral join', "select l.e from customers c, lateral (select c.email || '' as e) l"],
    ['window function', "select first_value(email) over (order by id) || '' from customers"],
    ['json_build_object', "select json_build_object('who', name, 'mail', email) from customers"],
    ['jsonb_build_array', 'select jsonb_build_array(email, name) from customers'],
    ['row_to_json of a subquery', 'select row_to_json(s) from (select email as e, name from customers) s'],
    ['c.* inside ROW', 'select row(c.*) from customers c'],
    ['array of rows', 'select array_agg(c) from customers c'],
    ['a view that renames a masked column', 'select name from swapped'],
    ['an expression over a computed view column', 'select lower(shout) from loud'],
    ['(c).*', 'select (c).* from customers c'],
    ['jsonb_each of a whole row', 'select j.key, j.value from customers c, jsonb_each_text(to_jsonb(c)) j'],
    ['unnest of an array of the column', 'select u from customers c, unnest(array[c.email]) u'],
    ['UPDATE … RETURNING', "update customers set note = note where name = 'Bob' returning lower(email)"],
  ]
  for (const [label, sql] of followed) {
    t.test(`${label}: ${sql}`, async t => {
      const { c, received } = await tapped(t, gw)
      const r = await c.query(sql)
      t.ok(r.rows.length > 0, 'rows came back')
      assertClean(t, received(), 'text format')
      const bin = await tapped(t, gw, { binary: true } as Partial<pg.ClientConfig>)
      await bin.c.query({ text: sql, values: [], queryMode: 'extended' } as pg.QueryConfig)
      assertClean(t, bin.received(), 'binary format')
    })
  }

  t.test('a search_path that picks a masked twin of an unmasked table is followed', async t => {
    await setup.query('create schema vault')
    await setup.query('create table vault.accounts (id int, secret text)')
    await setup.query('create table public.accounts (id int, secret text)')
    await setup.query(`insert into vault.accounts values (1, $1)`, [EMAIL])
    const gw2 = await startGateway({ pg: gw.pg, masking: [{ id: 'vault', when: { targets: ['db'] }, columns: ['vault.accounts.secret'], method: 'redact' }] })
    t.teardown(() => gw2.stop())
    const { c, received } = await tapped(t, gw2)
    await c.query('set search_path = vault, public')
    const r = await c.query("select secret, lower(secret) as l, accounts from accounts")
    t.same(r.rows[0], { secret: '[REDACTED]', l: '[REDACTED]', accounts: '(1,[REDACTED])' })
    assertClean(t, received(), 'search_path twin')
  })

  t.test('a parent table returns its children\'s rows: a rule on the child follows them', async t => {
    await setup.query('create table people (id int, mail text)')
    await setup.query('create table staff () inherits (people)')
    await setup.query('insert into staff values (1, $1)', [EMAIL2])
    const gw3 = await startGateway({ pg: gw.pg, masking: [{ id: 'staff', when: { targets: ['db'] }, columns: ['staff.mail'], method: 'redact' }] })
    t.teardown(() => gw3.stop())
    const { c, received } = await tapped(t, gw3)
    const r = await c.query('select mail, lower(mail) as l, p from people p')
    t.same(r.rows[0], { mail: '[REDACTED]', l: '[REDACTED]', p: '(1,[REDACTED])' })
    assertClean(t, received(), 'inheritance parent')
  })

  t.test('a whole row keeps its other fields; the masked ones are masked inside it', async t => {
    const { c } = await tapped(t, gw)
    const r = await c.query('select c as whole, row_to_json(c) as j, to_jsonb(c) as jb, array[email, name] as a from customers c where name = $1', ['Ann'])
    const row = r.rows[0]
    t.match(row.whole, /^\(hash:[0-9a-f]+,\[REDACTED\],Ann,"likes tea"\)$/)
    t.same({ ...row.j, id: typeof row.j.id }, { id: 'string', email: '[REDACTED]', name: 'Ann', note: 'likes tea' })
    t.equal(row.jb.email, '[REDACTED]')
    t.equal(row.jb.name, 'Ann')
    // an array's elements are masked alike: which element came from the masked column is not kept
    t.same(row.a, ['[REDACTED]', '[REDACTED]'])
  })

  t.test('texts that differ only in constants are classified each on its own under column rules (json_build_object keys are constants)', async t => {
    const { c } = await tapped(t, gw)
    // simple protocol: the classification cache would otherwise share one text's parse with the other
    const first = await c.query("select json_build_object('a', email, 'b', name) as j from customers where name = 'Ann'")
    t.same(first.rows[0].j, { a: '[REDACTED]', b: 'Ann' })
    const swapped = await c.query("select json_build_object('b', email, 'a', name) as j from customers where name = 'Ann'")
    t.same(swapped.rows[0].j, { b: '[REDACTED]', a: 'Ann' }, 'the masked key follows this text, not the first one')
  })

  t.test('a JSON value masked whole is still JSON', async t => {
    const { c } = await tapped(t, gw)
    const r = await c.query("select to_json(email) as j, to_jsonb(lower(email)) as jb, to_jsonb(c) -> 'email' as e from customers c where name = 'Ann'")
    t.same(r.rows[0], { j: '[REDACTED]', jb: '[REDACTED]', e: '[REDACTED]' })
  })

  t.test('a derived value of a non-text type becomes NULL', async t => {
    const { c } = await tapped(t, gw)
    const r = await c.query('select id + 0 as n, length(email) as l, name from customers order by name')
    t.same(r.rows[0], { n: null, l: null, name: 'Ann' })
  })

  t.test('EXECUTE of a SQL PREPARE follows its body', async t => {
    const { c, received } = await tapped(t, gw)
    await c.query('prepare p as select lower(email) as e from customers')
    const r = await c.query('execute p')
    t.equal(r.rows[0].e, '[REDACTED]')
    assertClean(t, received(), 'EXECUTE')
    // the EXECUTE runs the body prepared before it, not the one its text prepares after it
    const after = await c.query("execute p; deallocate p; prepare p as select name as e from customers")
    const rows = (after as unknown as pg.QueryResult[])[0]!.rows
    t.same(rows.map(x => x.e), ["[REDACTED]", "[REDACTED]"], "the earlier body is the one masked by")
    const inText = await c.query("prepare p2 as select name as e from customers; deallocate p2; prepare p2 as select lower(email) as e from customers; execute p2")
    t.ok((inText as unknown as pg.QueryResult[])[3]!.rows.every(x => x.e === '[REDACTED]'), 'the last PREPARE before the EXECUTE')
    assertClean(t, received(), 'EXECUTE after a re-PREPARE')
  })

  t.test('FETCH from a SQL cursor follows the DECLARE', async t => {
    const { c, received } = await tapped(t, gw)
    await c.query('begin')
    await c.query("declare k cursor for select upper(email) as e, name, c as whole from customers c order by name")
    const r = await c.query('fetch all from k')
    t.same(r.rows.map(x => x.e), ['[REDACTED]', '[REDACTED]'])
    t.same(r.rows.map(x => x.name), ['Ann', 'Bob'])
    await c.query('commit')
    assertClean(t, received(), 'FETCH')
  })

  t.test('psycopg2 named (server-side) cursors and psql: DECLARE/FETCH by real clients', async t => {
    const env = { ...process.env, PGHOST: gw.host, PGPORT: String(gw.port), PGUSER: 'agent-1', PGDATABASE: 'app', PGPASSWORD: await gw.token(), PGSSLMODE: 'disable' }
    const script = [
      'import psycopg2, os, sys',
      "c = psycopg2.connect(host=os.environ['PGHOST'], port=os.environ['PGPORT'], user='agent-1', password=os.environ['PGPASSWORD'], dbname='app', sslmode='disable')",
      "cur = c.cursor(name='srv')",
      "cur.itersize = 1",
      "cur.execute(\"select upper(email), row_to_json(cu), name from customers cu order by name\")",
      'for row in cur: print(repr(row))',
      'c.close()',
    ].join('\n')
    const execFile = promisify(execFileCb)
    const py = await execFile(existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3', ['-c', script], { env })
    t.match(py.stdout, /'\[REDACTED\]'/)
    t.match(py.stdout, /'Ann'/)
    t.notOk(leak(Buffer.from(py.stdout)), 'psycopg2 rows hold no clear value')
    const psql = await execFile('psql', ['-XAt', '-c', "select reverse(email), c from customers c", '-c', "select to_jsonb(c) from customers c"], { env })
    t.notOk(leak(Buffer.from(psql.stdout)), 'psql output holds no clear value')
    t.match(psql.stdout, /Ann/)
  })

  t.test('extended protocol without Describe of a derived column (prepared statement reused)', async t => {
    const { c, received } = await tapped(t, gw)
    for (let i = 0; i < 3; i++) {
      const r = await c.query({ name: 'named-lower', text: 'select lower(email) as e from customers where name = $1', values: ['Ann'] })
      t.equal(r.rows[0].e, '[REDACTED]')
    }
    assertClean(t, received(), 'named statement')
  })

  t.test('raw protocol: Parse/Bind/Describe/Execute of derived columns, text and binary, reused', async t => {
    const { exchange } = await rawClient(t, gw)
    const sql = "select reverse(email), encode(email::bytea, 'hex'), c, to_jsonb(c), array_agg(email) over () from customers c"
    for (const format of [0, 1]) {
      const first = await exchange(Buffer.concat([serializeParse('s1', sql), bind('', 's1', format), describe('P', ''), execute(''), sync()]))
      t.ok(first.includes(Buffer.from('T')), 'a RowDescription came')
      assertClean(t, first, `format ${format}, first run`)
      // the statement run again, described as a statement this time
      const again = await exchange(Buffer.concat([describe('S', 's1'), bind('p2', 's1', format), execute('p2'), sync()]))
      assertClean(t, again, `format ${format}, again`)
      await exchange(Buffer.concat([msg('C', new BufferWriter().int8(0x53).cstring('s1')), sync()]))
    }
    // a simple query of several statements: each RowDescription masked by its own lineage
    const multi = await exchange(serializeQuery("select 1; select lower(email), name from customers; select c from customers c"))
    assertClean(t, multi, 'several statements in one Query')
    t.ok(multi.includes(Buffer.from('Ann')), 'unmasked columns still pass')
  })

  t.test('COPY (query) TO STDOUT is masked by the query\'s lineage', async t => {
    const { exchange } = await rawClient(t, gw)
    const out = await exchange(serializeQuery("copy (select lower(email), name, c from customers c) to stdout"))
    assertClean(t, out, 'COPY text')
    t.ok(out.includes(Buffer.from('Ann')), 'unmasked columns still pass')
    const csv = await exchange(serializeQuery("copy (select upper(email) from customers) to stdout with (format csv)"))
    assertClean(t, csv, 'COPY csv')
    const mixed = await exchange(serializeQuery("select lower(name) from customers; copy (select lower(email) from customers) to stdout"))
    assertClean(t, mixed, 'COPY after a SELECT in one Query')
    t.ok(mixed.includes(Buffer.from('ann')), 'the SELECT ran, unmasked where it may be')
    const table = await exchange(serializeQuery("select 1; copy customers to stdout; copy public.customers (name, email) to stdout with (format csv)"))
    assertClean(t, table, 'COPY table after a SELECT in one Query')
    t.ok(table.includes(Buffer.from('Bob')), 'unmasked columns still pass')
  })

  t.test('a write that moves masked data into a column masked less is refused', async t => {
    const { c } = await tapped(t, gw)
    for (const sql of [
      'update customers set note = email',
      "update customers set note = lower(email) || '' where name = 'Ann'",
      'create table copied as select email from customers',
      'select email into copied2 from customers',
      "insert into customers (id, email, name, note) values (5, 'x@y.example', 'X', 'n') on conflict (id) do update set note = customers.email",
      'with w as (update customers set note = email returning 1) select count(*) from w',
      'explain analyze update customers set note = email',
      "prepare mv as update customers set note = email where name = 'Ann'; execute mv",
    ]) {
      const err = await c.query(sql).then(
        () => undefined,
        (e: { code?: string; message?: string }) => e,
      )
      t.equal(err?.code, '42501', sql)
      t.match(err?.message, /masking: the statement writes masked column public\.customers\.email/, sql)
    }
    const notes = await setup.query('select note from customers order by name')
    t.same(notes.rows.map(r => r.note), ['likes tea', 'plain'], 'nothing was written upstream')
    const exists = await setup.query("select to_regclass('copied') as a, to_regclass('copied2') as b")
    t.same(exists.rows[0], { a: null, b: null }, 'no table was created')
    // a masked value into a column masked alike is fine
    await c.query("update customers set email = lower(email) where name = 'Bob'")
  })

  t.test('FETCH from a cursor name declared twice is refused (which query it runs is not known)', async t => {
    const { c } = await tapped(t, gw)
    await c.query('begin')
    await c.query('declare k3 cursor for select lower(email) from customers')
    await c.query('declare k3 cursor for select name from customers').catch(() => undefined)
    await c.query('rollback')
    await c.query('begin')
    const err = await c.query('fetch all from k3').then(
      () => undefined,
      (e: { code?: string; message?: string }) => e,
    )
    t.equal(err?.code, '42501')
    t.match(err?.message, /masking: cannot tell/)
    await c.query('rollback')
  })

  const refused: [string, string, RegExp][] = [
    ['a user function over a whole row', 'select peek(c) from customers c', /function peek over a whole row/],
    ['a function returning rows of a table, beside it', 'select r.email from customers c, lateral rows_of(c.id) r', /rows_of/],
    ['XML over a whole row', 'select xmlforest(c.*) from customers c', /.+/],
    ['TABLESAMPLE', 'select * from customers tablesample system (100)', /TABLESAMPLE|RangeTableSample/],
    ['FETCH from a cursor a function opened', "select open_cur(); fetch all from fn_cur", /cursor "fn_cur" is not known/],
    ['a cursor over a whole row into a user function', 'declare k2 cursor with hold for select peek(c) from customers c', /peek/],
  ]
  for (const [label, sql, why] of refused) {
    t.test(`refused before it runs: ${label}`, async t => {
      const { c, received } = await tapped(t, gw)
      const err = await c.query(sql).then(
        () => undefined,
        (e: { code?: string; message?: string }) => e,
      )
      t.equal(err?.code, '42501', sql)
      t.match(err?.message, /masking: cannot tell/)
      t.match(err?.message, /customers\.(email|id)|\(cursor fn_cur\)/, 'the error names the masked column (or the cursor it cannot see into)')
      t.match(err?.message, why)
      assertClean(t, received(), label)
    })
  }
})

t.test('detectors scan inside arrays, records and JSON', async t => {
  const gw = await startGateway({ masking: [{ id: 'free-text', when: { targets: ['db'] }, detectors: ['email'], method: 'redact' }] })
  t.teardown(() => gw.stop())
  const { c, received } = await tapped(t, gw)
  const r = await c.query(
    `select array['write to ${EMAIL}'] as a, row(1, '${EMAIL}') as r, json_build_object('m', '${EMAIL}') as j, jsonb_build_array('${EMAIL}') as jb`,
  )
  t.same(r.rows[0].a, ['write to [REDACTED:email]'])
  t.equal(r.rows[0].j.m, '[REDACTED:email]')
  assertClean(t, received(), 'text format')
  const bin = await tapped(t, gw, { binary: true } as Partial<pg.ClientConfig>)
  await bin.c.query({ text: `select array['write to ${EMAIL}'] as a, row(1, '${EMAIL}') as r`, values: [], queryMode: 'extended' } as pg.QueryConfig)
  assertClean(t, bin.received(), 'binary format')
})
