// The skeleton cache (classify/lexer.ts, classify/literal.ts) must never change an answer: every
// statement classified through the cache — exact hit, skeleton hit or miss — gets the Operation a
// fresh parse of that very text gives (deep equality, PREPARE bodies included). The statements: every
// SQL string in this package's tests and the bench, hand-written templates for the constants the
// analysis reads (LIMIT, SET, set_config, COPY, WHERE, function and relation names in strings), each
// with its constants replaced by random ones of every lexical kind and its whitespace by random
// comments and newlines; and pairs built to fool a scanner that is not the server's.
import t, { type Test } from 'tap'
import { readFileSync, readdirSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { isDeepStrictEqual } from 'node:util'
import ts from 'typescript'
import { scanSync } from '@libpg-query/parser'
import { mulberry32 } from '@portcullis/fixtures/random'
import type { Operation } from '@portcullis/core/types'
import {
  classifierCacheStats,
  classifySql,
  clearClassifierCache,
  loadClassifier,
  preparedStatements,
  setClassifierCacheSize,
} from '../src/classify/index.ts'
import { keyHash, scanSkeleton, skeletonOf } from '../src/classify/lexer.ts'

// 100,000 fresh parses: about 25 s of CPU, several times that in wall time on a busy machine
t.setTimeout(600_000)
await loadClassifier()
// the reference: a second instance of the classifier with its cache off, so every call parses
const freshModule = new URL('../src/classify/index.ts?fresh', import.meta.url).href
const fresh = (await import(freshModule)) as typeof import('../src/classify/index.ts')
await fresh.loadClassifier()
fresh.setClassifierCacheSize(0)

const here = dirname(fileURLToPath(import.meta.url))
const STATEMENTS = Number(process.env.LITERAL_CACHE_STATEMENTS ?? 100_000)

// a seeded generator: a failure names its seed and replays
const SEED = Number(process.env.LITERAL_CACHE_SEED ?? 20261201)
const random = mulberry32(SEED)
const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)]!

// --- the corpus: SQL strings of the tests and the bench --------------------------------------
const SQL_START = /^\s*(?:select|insert|update|delete|with|copy|set|reset|show|create|drop|alter|begin|commit|rollback|savepoint|release|start|end|abort|explain|prepare|execute|deallocate|discard|do|grant|revoke|truncate|declare|fetch|move|close|listen|unlisten|notify|values|table|call|lock|vacuum|analyze|merge|refresh|comment|security|load|reindex|cluster|checkpoint)\b/i

function stringsOf(file: string): string[] {
  const source = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.Latest, false)
  const out: string[] = []
  const visit = (node: ts.Node): void => {
    if (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) out.push(node.text)
    else if (ts.isTemplateExpression(node)) {
      // `… ${x} …`: each substitution becomes a constant (replaced with random ones below)
      out.push(node.head.text + node.templateSpans.map(s => '42' + s.literal.text).join(''))
    }
    ts.forEachChild(node, visit)
  }
  visit(source)
  return out.filter(s => SQL_START.test(s) && s.length < 4000)
}

function filesUnder(dir: string): string[] {
  const out: string[] = []
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.isDirectory() && e.name !== 'node_modules') out.push(...filesUnder(join(dir, e.name)))
    else if (e.isFile() && e.name.endsWith('.ts')) out.push(join(dir, e.name))
  }
  return out
}

const corpusFiles = [...filesUnder(here), ...filesUnder(join(here, '../../../bench'))].filter(f => !f.endsWith('classify-literal-cache.test.ts'))
const corpus = [...new Set(corpusFiles.flatMap(stringsOf))]

// constants the analysis reads, and places where a string is a name or code
const TEMPLATES = [
  'SELECT abalance FROM pgbench_accounts WHERE aid = 48213;',
  'UPDATE pgbench_accounts SET abalance = abalance + -1234 WHERE aid = 5;',
  'INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (1, 2, 3, 4, CURRENT_TIMESTAMP);',
  "SELECT id, embedding FROM items ORDER BY embedding <-> '[1,2,3]' LIMIT 5",
  "SELECT id FROM items ORDER BY embedding <=> '[1,2,3]'::vector LIMIT 10 OFFSET 2",
  'SELECT * FROM items ORDER BY 1 LIMIT 2',
  "SELECT * FROM (SELECT embedding FROM items LIMIT 3) s",
  'SELECT * FROM t LIMIT 0',
  'SELECT x FROM t FETCH FIRST 3 ROWS ONLY',
  'SET statement_timeout = 5000',
  "SET client_encoding = 'UTF8'",
  "SET client_encoding TO 'SJIS'",
  "SET standard_conforming_strings = 'on'",
  'SET standard_conforming_strings = off',
  "SET search_path = 'public', 'x'",
  "SET TIME ZONE 'UTC'",
  "SET SESSION AUTHORIZATION 'bob'",
  "SET ROLE 'admin'",
  "SELECT set_config('application_name', 'x', false)",
  "SELECT set_config('standard_conforming_strings', 'off', false)",
  "SELECT set_config('role', 'postgres', true)",
  "COPY t TO '/tmp/x'",
  "COPY t FROM STDIN WITH (ENCODING 'SJIS')",
  "COPY t FROM STDIN (FORMAT csv, DELIMITER ',', NULL 'x')",
  'COPY (SELECT embedding FROM items LIMIT 5) TO STDOUT',
  "SELECT pg_read_file('/etc/passwd')",
  "SELECT 'pg_read_file'::regproc",
  "SELECT nextval('seq')",
  "SELECT 'customers'::regclass",
  "SELECT * FROM pg_catalog.pg_settings WHERE name = 'standard_conforming_strings'",
  "UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'",
  'DELETE FROM t WHERE 1 = 1',
  'DELETE FROM t WHERE 1 = 2',
  "UPDATE t SET a = 1 WHERE 'a' = 'a'",
  "DELETE FROM t WHERE 't'::boolean",
  'DELETE FROM t WHERE id = 5 OR 1 = 1',
  'DELETE FROM t WHERE id = 5',
  'DELETE FROM t WHERE a = a',
  "EXPLAIN (ANALYZE 'off') DELETE FROM t",
  'EXPLAIN (ANALYZE 0) DELETE FROM t',
  "EXPLAIN (FORMAT 'json') SELECT 1",
  "DO $$ BEGIN PERFORM pg_read_file('x'); END $$",
  "CREATE FUNCTION f() RETURNS int AS 'select 1' LANGUAGE sql",
  'PREPARE p AS SELECT * FROM items ORDER BY embedding <-> $1 LIMIT 3',
  "PREPARE q AS DELETE FROM t WHERE id = 5; EXECUTE q",
  'EXECUTE p(5)',
  'SELECT 1::float(24)',
  "SELECT interval '1 day', int4 '5', N'nat', E'esc\\n', B'0101', X'1F', $$d$$, $t$x$t$",
  'FETCH 5 FROM c',
  "NOTIFY ch, 'payload'",
  "SELECT pg_notify('ch', 'payload')",
  "CREATE TABLE t (a varchar(5) DEFAULT 'x', b numeric(10, 2))",
  "ALTER ROLE r PASSWORD 'secret'",
  "CREATE USER MAPPING FOR u SERVER s OPTIONS (password 'secret')",
  'SELECT * FROM t WHERE a IN (1, 2, 3) AND b BETWEEN 1.5 AND 2e3',
  "SELECT dblink_exec('host=x', 'drop table t')",
  'DECLARE c CURSOR FOR SELECT embedding FROM items LIMIT 5',
  "SELECT 1; DROP TABLE x; SELECT 'a'",
  "LOAD 'plpgsql'",
  "COMMENT ON TABLE t IS 'text'",
  "SELECT current_setting('is_superuser')",
  'SELECT $1 + 5, -5, - 5, 5 - -5, x*-5, 2147483647, 2147483648, 007, .5, 5., 1e3, 1.5E-3 FROM t',
  "SELECT 'a' || 'b' AS c, 'x'::text COLLATE \"C\" FROM t",
  "SELECT U&'d\\0061t', U&'d!0061t' UESCAPE '!', U&\"d\\0061t\" FROM t",
  "SELECT xmlelement(name foo, 'bar'), jsonb_path_query('{}', '$.a')",
  "INSERT INTO t VALUES (1, 'a', 1.5, B'01', X'ff', N'x', E'\\n', $$d$$) ON CONFLICT (a) DO UPDATE SET b = 'z'",
  "SELECT CASE WHEN a = 1 THEN 'one' ELSE 'other' END FROM t ORDER BY a DESC LIMIT 10",
  "VALUES (1, 'a'), (2, 'b')",
  "WITH x AS (DELETE FROM t WHERE a = 1 RETURNING *) SELECT * FROM x LIMIT 1",
  "SELECT lo_import('/etc/passwd'), query_to_xml('select 1', true, false, '')",
  "ALTER SYSTEM SET work_mem = '1GB'",
  "CREATE OPERATOR === (PROCEDURE = 'pg_read_file', LEFTARG = text)",
  "SELECT 'a'\n'b', 'c' -- joined\n 'd'",
  "SELECT E'\\x41', E'\\101', E'\\u00e9', E'\\''",
]

// --- random constants of every lexical kind ----------------------------------------------------
const STRING_CONTENT = [
  '', 'abc', "it''s", "a'';drop table x;--", 'a\\', '\\\\', 'é漢😀', '$$', '$a$', '/* */', '--', '\n', '\r\n',
  'on', 'off', 'true', '1', 'pg_read_file', 'customers', 'standard_conforming_strings', 'SJIS', 'UTF8',
  'public', 'role', '/etc/passwd', '[1,2,3]', 'select 1', '  ', '"q"', 'x'.repeat(70), 'a\0b', '\f\v\b',
]
const INTEGERS = ['0', '1', '5', '42', '48213', '007', '2147483647', '2147483648', '99999999999999999999', '24', '53', '3']
const FLOATS = ['1.5', '.5', '5.', '1e3', '1.5E-3', '0.0', '2e+9', '3.14159265358979']
const BITS = ["B'0101'", "b''", "X'1F'", "x'FFFF'", "B'012'", "X'zz'"]

function stringLiteral(): string {
  const body = pick(STRING_CONTENT)
  switch (Math.floor(random() * 10)) {
    case 0: return `E'${pick(['\\n', '\\\\', "\\'", "''", 'plain', '\\t\\b', '\\x41', '\\101', '\\u00e9', '\\q'])}'`
    case 1: return `$$${body.replaceAll('$$', '')}$$`
    case 2: return `$tag$${body}$tag$`
    case 3: return `N'${body}'`
    case 4: return `'${body}'\n'${pick(STRING_CONTENT)}'`
    case 5: return `'${body}'\r\n\f '${pick(STRING_CONTENT)}'`
    case 6: return pick([`U&'${body}'`, "U&'d\\0061t'", "U&'d!0061t' UESCAPE '!'", "U&'\\zzzz'"])
    default: return `'${body}'`
  }
}

function literalLike(kind: string): string {
  const same = random() < 0.9
  const k = same ? kind : pick(['ICONST', 'FCONST', 'SCONST', 'BCONST'])
  switch (k) {
    case 'ICONST': return pick(INTEGERS)
    case 'FCONST': return pick(FLOATS)
    case 'BCONST':
    case 'XCONST': return pick(BITS)
    default: return stringLiteral()
  }
}

const SEPARATORS = [' ', ' ', ' ', '\n', '  ', '\t', '/* c */', '/* a /* nested */ b */', "/* ' */", '-- c\n', '--\n', '\r\n']
const CONSTANTS = new Set(['ICONST', 'FCONST', 'SCONST', 'USCONST', 'BCONST', 'XCONST'])

interface Piece {
  text: string
  constant?: string
}

/** The template split into tokens (libpg_query's scanner), separators left out; undefined if it does not scan. */
function piecesOf(template: string): Piece[] | undefined {
  let tokens
  try {
    tokens = scanSync(template).tokens
  } catch {
    return undefined
  }
  const bytes = Buffer.from(template, 'utf8')
  return tokens
    .filter(tk => tk.tokenName !== 'SQL_COMMENT' && tk.tokenName !== 'C_COMMENT')
    .map(tk => {
      const text = bytes.subarray(tk.start, tk.end).toString('utf8')
      return CONSTANTS.has(tk.tokenName) || /^\$(?:[A-Za-z_][\w]*)?\$/.test(text) || /^[bBxX]'/.test(text)
        ? { text, constant: tk.tokenName === 'USCONST' ? 'SCONST' : tk.tokenName }
        : { text }
    })
}

/** A variant: constants replaced (mostly by their own kind), separators varied. */
function variant(pieces: Piece[]): string {
  let out = ''
  const spaced = random() < 0.5
  for (const [n, p] of pieces.entries()) {
    if (n > 0) out += spaced ? pick(SEPARATORS) : ' '
    out += p.constant !== undefined && random() < 0.9 ? literalLike(p.constant) : p.text
  }
  return out
}

// --- the comparison ------------------------------------------------------------------------------
function view(op: Operation, bodiesOf: typeof preparedStatements): unknown {
  return { op, bodies: [...bodiesOf(op)] }
}

let checked = 0
let mismatches = 0
/** Classifies through the cache and afresh; true when the two agree. */
function check(t: Test, sql: string): boolean {
  const before = classifierCacheStats().skeletonHits
  const cached = classifySql(sql)
  const hit = classifierCacheStats().skeletonHits > before
  const reference = fresh.classifySql(sql)
  checked++
  if (!isDeepStrictEqual(view(cached, preparedStatements), view(reference, fresh.preparedStatements))) {
    mismatches++
    if (mismatches <= 5) {
      t.fail(`${hit ? 'skeleton hit' : 'exact hit or parse'} differs from a fresh parse (seed ${SEED})`, {
        sql,
        cached: JSON.stringify(view(cached, preparedStatements)),
        fresh: JSON.stringify(view(reference, fresh.preparedStatements)),
      })
    }
    return false
  }
  return true
}

t.test('the corpus is the suites’ SQL and the templates', async t => {
  t.ok(corpus.length >= 200, `${corpus.length} SQL strings from ${corpusFiles.length} test and bench files`)
})

t.test('texts that differ only in constants, spaces and what comments say share a skeleton', async t => {
  const same = [
    ["SELECT a FROM t WHERE b = 1 AND c = 'x'", "SELECT a FROM t WHERE b = 48213 AND c = $$y$$", "SELECT  a\tFROM t\nWHERE b = 7 AND c = 'it''s'"],
    ["SELECT a /* c */ FROM t -- d\nWHERE b = 7 AND c = 'it''s'", "SELECT a -- x\nFROM t /* y */ WHERE b = 1 AND c = 'x'"],
    ["SELECT 'a'\n'b'", "SELECT 'abc'\r\n  'd'", "SELECT $t$a$b$t$"],
    ["SELECT 1 /* a /* nested */ b */ + 2", "SELECT 3/* c */+\n4"],
    ["SELECT E'\\n'", "SELECT E'x\\''"],
  ]
  for (const group of same) {
    const keys = group.map(s => skeletonOf(s)?.key)
    t.ok(keys[0] !== undefined && keys.every(k => k === keys[0]), `one skeleton: ${JSON.stringify(group)}`)
  }
  const apart = [
    ['SELECT 1', 'SELECT 2147483648'],
    ['SELECT 1', 'SELECT 1.0'],
    ["SELECT 'a'", "SELECT N'a'"],
    ["SELECT 'a'", "SELECT B'0'"],
    ["SELECT B'0'", "SELECT X'0'"],
    ["SELECT 'a'", "SELECT E'a'"],
    ["SELECT 'a'\n'b'", "SELECT 'a' 'b'"],
    ['SELECT a+b', 'SELECT a + b'],
    ['SELECT "A"', 'SELECT a'],
    ['SELECT a', 'SELECT A'],
    ["SELECT E'\\x41'", "SELECT E'\\x42'"],
    // a comment where the other has a space: libpg_query fails `NOT /* c */ IN`, the server does not
    ['SELECT a FROM t WHERE b NOT IN (1)', 'SELECT a FROM t WHERE b NOT/* c */IN (1)'],
    ['SELECT a FROM t WHERE b NOT IN (1)', 'SELECT a FROM t WHERE b NOT -- c\nIN (1)'],
  ]
  for (const [a, b] of apart) t.not(skeletonOf(a!)?.key, skeletonOf(b!)?.key, `apart: ${JSON.stringify(a)} ${JSON.stringify(b)}`)
  const none = [
    "SELECT 'a", 'SELECT "a', 'SELECT $$a', 'SELECT $a$ x $b$', 'SELECT 1 /* /* */', "SELECT U&'a'", 'SELECT U&"a"',
    "SELECT 'a' UESCAPE '!'", 'SELECT 0x1F', 'SELECT 1_000', 'SELECT 1abc', 'SELECT 1e', 'SELECT 1..2', 'SELECT $1abc',
    'SELECT 1\v', 'SELECT \\d', 'SELECT {1}', 'SELECT 1\0', "SELECT 'a' -- c\n'b'", 'SELECT $a', "SELECT 'a\0'", '', ' -- c',
  ]
  for (const s of none) t.equal(skeletonOf(s), undefined, `no skeleton: ${JSON.stringify(s)}`)
})

t.test('pairs built to fool a scanner that is not the server’s give what a fresh parse gives', async t => {
  // each pair: the first is classified (and cached), then the second must not borrow its answer
  const pairs: [string, string][] = [
    ["select 'a'';drop table x;--'", "select 'b';drop table x;--'"],
    ["select 'a' from t", "select 'a'';drop table x;--' from t"],
    ["select E'\\'';drop table x;--'", "select E'a';drop table x;--'"],
    ["select 'a\\';drop table x;--'", "select 'ab';drop table x;--'"],
    ["select E'a\\\\';drop table x;--'", "select E'ab';drop table x;--'"],
    ['select $$a$$', 'select $$a$b$$;drop table x;--$$'],
    ['select $a$x$a$', 'select $a$x$b$;drop table x;$b$$a$'],
    ['select $a$x$a$', 'select $a$ $a $a$;drop table x'],
    ['select 1 /* c */', 'select 1 /* /* */ ; drop table x; */'],
    ['select 1 /* c */ from t', 'select 1 /* /* */ */ from t; drop table x; --'],
    ['select 1 -- x', 'select 1 -- x\n; drop table x'],
    ["select U&'a' from t", "select U&'a' UESCAPE '!' from t"],
    ["select U&'d!0061t' UESCAPE '!'", "select U&'d!0061t' UESCAPE '?'"],
    ["select U&'\\0061' uescape '\\'", "select U&'\\0061' uescape '!'"],
    ["select 'a'\n'b'", "select 'a' 'b'"],
    ["select 'a'\n'b'", "select 'a'/**/\n'b'"],
    ["select 'a'\n'b'", "select 'a' -- c\n'b'"],
    ["select e'a' from t", "select xe'a' from t"],
    ["select n'a' from t", "select 'a' from t"],
    ["select b'01'", "select x'01'"],
    ['select 1', 'select 0x1f'],
    ['select 1', 'select 1_000'],
    ['select 1 x', 'select 1x'],
    ['select 2147483647', 'select 2147483648'],
    ['select 1.5', 'select 1..5'],
    ['select $1', 'select $1abc'],
    ['select * from t limit 5', 'select * from t limit 500'],
    ["set client_encoding = 'UTF8'", "set client_encoding = 'SJIS'"],
    ["set standard_conforming_strings = 'on'", "set standard_conforming_strings = 'off'"],
    ["select set_config('application_name', 'x', false)", "select set_config('role', 'x', false)"],
    ["copy t to '/tmp/a'", "copy t to '/tmp/b'"],
    ["select pg_read_file('a')", "select pg_read_file('b')"],
    ['delete from t where 1 = 2', 'delete from t where 1 = 1'],
    ["delete from t where 'a' = 'b'", "delete from t where 'a' = 'a'"],
    ['select 1::float(24)', 'select 1::float(53)'],
    ["create operator === (procedure = 'textcat', leftarg = text)", "create operator === (procedure = 'pg_read_file', leftarg = text)"],
    ["do $$ begin perform 1; end $$", "do $$ begin perform pg_read_file('x'); end $$"],
    ["create function f() returns int as 'select 1' language sql", "create function f() returns int as 'select pg_read_file(''x'')' language sql"],
    ["explain (analyze 'off') delete from t", "explain (analyze 'on') delete from t"],
    ['select 1', 'select 1\0; drop table x'],
    ["select 'a'", "select 'a\0'; drop table x; --'"],
    ["select 'a' from t", "select 'a\0b' from t"],
    ['-- comment', '   '],
    ['/* comment */', ''],
    [';', '/* c */;'],
  ]
  for (const [a, b] of pairs) {
    for (const [first, second] of [[a, b], [b, a]] as const) {
      clearClassifierCache()
      check(t, first)
      t.ok(check(t, second), `${JSON.stringify(second)} after ${JSON.stringify(first)}: as a fresh parse`)
    }
  }
})

t.test(`${STATEMENTS} generated statements through the cache give what a fresh parse gives`, async t => {
  clearClassifierCache()
  // the default bound: eviction runs as it does in the gateway
  setClassifierCacheSize(4096)
  const templates = [...corpus, ...TEMPLATES].map(piecesOf).filter((p): p is Piece[] => p !== undefined && p.length > 0)
  const start = checked
  const hitsBefore = classifierCacheStats().skeletonHits
  const errorsBefore = mismatches
  while (checked - start < STATEMENTS) {
    const pieces = pick(templates)
    // runs of texts of one template: skeleton hits, and near-misses around them
    const run = 4 + Math.floor(random() * 16)
    for (let k = 0; k < run && checked - start < STATEMENTS; k++) check(t, variant(pieces))
  }
  const hits = classifierCacheStats().skeletonHits - hitsBefore
  t.equal(mismatches - errorsBefore, 0, `${checked - start} statements, ${hits} skeleton hits, ${templates.length} templates, every one equal to a fresh parse`)
  // the proof proves something only when the skeleton path is taken
  t.ok(hits >= STATEMENTS / 10, `skeleton hits: ${hits}`)
})

t.test('exact: a session under column rules gets an Operation of its own text, never the object shared by skeleton', async t => {
  await loadClassifier()
  clearClassifierCache()
  // column lineage reads the kept parse tree later (json_build_object keys are constants): the
  // tree of another text of the same skeleton would mask the wrong keys. The exact text gets its
  // own Operation, which borrows the skeleton's tree only until an analysis reads a constant of
  // it (lineage-skeleton.test.ts proves the lineage is always the text's own)
  const a = "select json_build_object('a', email, 'b', name) as j from customers"
  const b = "select json_build_object('b', email, 'a', name) as j from customers"
  const first = classifySql(a)
  const shared = classifySql(b)
  t.same(shared, first, 'without exact, the skeleton’s classification is shared')
  t.not(shared, first, 'as an Operation of the text’s own (its lineage is its own: a reload may add column rules)')
  const own = classifySql(b, undefined, { exact: true })
  t.not(own, first, 'with exact, the text has an Operation of its own')
  t.same(own, first, 'with the classification the skeleton holds for every text of it')
  clearClassifierCache()
})

// Facts that depend on a constant's value (a constant-true WHERE, LIMIT / top-k, SET and
// set_config arguments, COPY targets, a literal that names a function, a relation or a setting):
// the second text of each pair shares the first one's skeleton, or would if the cache ignored
// the value; through the cache, right after the first, it gets what a fresh parse gives it.
const VALUE_PAIRS: [string, string][] = [
  ["DELETE FROM t WHERE 1 = 2", "DELETE FROM t WHERE 1 = 1"],
  ["DELETE FROM t WHERE id = 5", "DELETE FROM t WHERE true"],
  ["DELETE FROM t WHERE 'a' = 'b'", "DELETE FROM t WHERE 'a' = 'a'"],
  ["UPDATE t SET x = 1 WHERE 2 > 3", "UPDATE t SET x = 1 WHERE 3 > 2"],
  ["SELECT * FROM docs ORDER BY embedding <-> '[1,2]' LIMIT 5", "SELECT * FROM docs ORDER BY embedding <-> '[1,2]' LIMIT 5000"],
  ["SET statement_timeout = 1000", "SET statement_timeout = 0"],
  ["SET search_path = 'public'", "SET search_path = 'evil, public'"],
  ["SET ROLE 'reader'", "SET ROLE 'postgres'"],
  ["SET SESSION AUTHORIZATION 'reader'", "SET SESSION AUTHORIZATION 'postgres'"],
  ["SELECT set_config('application_name', 'x', false)", "SELECT set_config('role', 'postgres', false)"],
  ["SELECT set_config('application_name', 'x', false)", "SELECT set_config('search_path', 'x', false)"],
  ["SELECT current_setting('application_name')", "SELECT current_setting('data_directory')"],
  ["SELECT 'now'::regproc", "SELECT 'pg_terminate_backend'::regproc"],
  ["SELECT 'abs'::regprocedure", "SELECT 'pg_read_file(text)'::regprocedure"],
  ["SELECT 'customers'::regclass", "SELECT 'secrets'::regclass"],
  ["SELECT nextval('a')", "SELECT nextval('b')"],
  ["SELECT pg_read_file('x')", "SELECT pg_read_file('/etc/passwd')"],
  ["COPY t TO STDOUT", "COPY t TO '/tmp/x'"],
  ["COPY t FROM STDIN", "COPY t FROM PROGRAM 'id'"],
  ["SELECT dblink_exec('host=a', 'select 1')", "SELECT dblink_exec('host=a', 'drop table x')"],
  ["SELECT query_to_xml('select 1', true, true, '')", "SELECT query_to_xml('select * from secrets', true, true, '')"],
  ["SELECT * FROM t LIMIT 10", "SELECT * FROM t LIMIT ALL"],
  ["SELECT * FROM t LIMIT 10", "SELECT * FROM t LIMIT 1000000"],
  ["SELECT pg_sleep(1)", "SELECT pg_sleep(100000)"],
  ["ALTER SYSTEM SET work_mem = '1MB'", "ALTER SYSTEM SET shared_preload_libraries = 'x'"],
  ["SELECT lo_import('/a')", "SELECT lo_export(1, '/tmp/b')"],
  ["SET LOCAL statement_timeout = '1s'", "SET LOCAL role = 'postgres'"],
  ["SELECT * FROM t OFFSET 5", "SELECT * FROM t OFFSET 5000"],
  ["SELECT to_tsvector('english', 'x')", "SELECT to_tsvector('simple', 'x')"],
  ["SELECT pg_cancel_backend(1)", "SELECT pg_terminate_backend(1)"],
  ["EXPLAIN SELECT 1", "EXPLAIN (ANALYZE true) DELETE FROM t"],
  ["EXPLAIN (ANALYZE false) DELETE FROM t", "EXPLAIN (ANALYZE true) DELETE FROM t"],
  ["DO 'begin null; end'", "DO 'begin drop table x; end'"],
  ["SELECT * FROM t TABLESAMPLE SYSTEM (1)", "SELECT * FROM t TABLESAMPLE SYSTEM (100)"],
  ["SELECT * FROM t FETCH FIRST 5 ROWS ONLY", "SELECT * FROM t FETCH FIRST 500000 ROWS ONLY"],
  ["VACUUM (FULL false) t", "VACUUM (FULL true) t"],
  ["SELECT 1 WHERE 'x' ~ 'y'", "SELECT 1 WHERE 'x' ~ 'x'"],
]

t.test('a fact that depends on a constant is the text’s own, right after a text of the same skeleton', async t => {
  await loadClassifier()
  for (const exact of [false, true]) {
    for (const [first, second] of VALUE_PAIRS) {
      clearClassifierCache()
      classifySql(first, undefined, { exact })
      const cached = classifySql(second, undefined, { exact })
      t.ok(isDeepStrictEqual(view(cached, preparedStatements), view(fresh.classifySql(second), fresh.preparedStatements)), `${exact ? 'exact: ' : ''}${second} after ${first}`)
    }
  }
  clearClassifierCache()
})

t.test('a skeleton is found from its scan without its key being built: the pieces match the key they make, and only it', async t => {
  const texts = [
    'SELECT abalance FROM pgbench_accounts WHERE aid = 12345;',
    "select * from t where a = 'x' and b = E'y' and c = N'z' and d = B'101' and e = X'1F' -- c\n and f = 1.5e3",
    '  SELECT 1 /* a /* nested */ comment */ , $tag$body$tag$ , "Quoted ""id""" , -5, x*-7',
    'SELECT 2147483648, 2147483647, 00000000001, .5, 1.',
    'SELECT ö, "ü" FROM 日本',
  ]
  for (const sql of texts) {
    const scanned = scanSkeleton(sql)!
    const hash = scanned.hash
    const count = scanned.literalCount
    const matchesOwn = (key: string) => scanSkeleton(sql)!.matches(key)
    const sk = skeletonOf(sql)!
    t.equal(hash, keyHash(sk.key), `hash of the pieces is the hash of the key: ${sql}`)
    t.equal(count, sk.literals.length)
    t.ok(matchesOwn(sk.key), 'matches its own key')
    t.notOk(matchesOwn(sk.key.slice(0, -1)), 'not a prefix of it')
    t.notOk(matchesOwn(sk.key + ' '), 'not a longer key')
    t.notOk(matchesOwn(sk.key.replace(/.$/, c => String.fromCharCode(c.charCodeAt(0) ^ 1))), 'not a key one character apart')
  }
})
