// The control store's tables, created and migrated at start. Each migration runs once, in order,
// inside one transaction that holds an advisory lock: three gateways starting at once migrate once.
// A migration is never edited after release; a change is a new entry at the end.

/** SQL for schema `s` (already quoted) */
const MIGRATIONS: ((s: string) => string)[] = [
  s => `
    CREATE TABLE ${s}.instances (
      id text PRIMARY KEY,
      host text NOT NULL,
      pid integer NOT NULL,
      started timestamptz NOT NULL,
      lease_until timestamptz NOT NULL,
      state text NOT NULL CHECK (state IN ('alive', 'gone'))
    );
    CREATE TABLE ${s}.requests (
      id text PRIMARY KEY,
      instance text,
      status text NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'expired', 'withdrawn')),
      expires timestamptz NOT NULL,
      updated timestamptz NOT NULL DEFAULT now(),
      body jsonb NOT NULL
    );
    CREATE INDEX requests_pending ON ${s}.requests (instance) WHERE status = 'pending';
    CREATE INDEX requests_updated ON ${s}.requests (updated);
    CREATE TABLE ${s}.grants (
      subject text NOT NULL,
      target text NOT NULL,
      fingerprint text NOT NULL,
      until timestamptz NOT NULL,
      approval_id text NOT NULL,
      PRIMARY KEY (subject, target, fingerprint)
    );
    CREATE TABLE ${s}.revocations (
      subject text NOT NULL DEFAULT '',
      jti text NOT NULL DEFAULT '',
      created timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (subject, jti)
    );
    CREATE TABLE ${s}.sessions (
      id text PRIMARY KEY,
      instance text NOT NULL,
      body jsonb NOT NULL
    );
    CREATE INDEX sessions_instance ON ${s}.sessions (instance);
    CREATE TABLE ${s}.changes (
      seq bigserial PRIMARY KEY,
      at timestamptz NOT NULL DEFAULT now(),
      kind text NOT NULL,
      body jsonb NOT NULL
    );
  `,
  // 2: minApprovals (each approver's vote, once) and defer mode's one release
  s => `
    ALTER TABLE ${s}.requests
      ADD COLUMN votes jsonb NOT NULL DEFAULT '[]'::jsonb,
      ADD COLUMN min_approvals integer NOT NULL DEFAULT 1 CHECK (min_approvals >= 1),
      ADD COLUMN released timestamptz;
  `,
  // 3: upstream objects a scope created through the gateway (OpenAI-compatible files, vector
  // stores, batches): the first owner of an id keeps it
  s => `
    CREATE TABLE ${s}.objects (
      target text NOT NULL,
      kind text NOT NULL,
      id text NOT NULL,
      scope text NOT NULL,
      created timestamptz NOT NULL DEFAULT now(),
      PRIMARY KEY (target, kind, id)
    );
  `,
]

export const SCHEMA_VERSION = MIGRATIONS.length

/** a key for pg_advisory_xact_lock: migrations, and every write that appends to `changes` */
export const MIGRATE_LOCK = 0x70637331 // 'pcs1'
export const CHANGES_LOCK = 0x70637332 // 'pcs2'

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`
}

export interface Queryable {
  query(text: string, values?: unknown[]): Promise<{ rows: Record<string, unknown>[]; rowCount: number | null }>
}

/**
 * creates the schema or brings it to SCHEMA_VERSION; refuses a schema newer than this code. `to`
 * stops at an earlier released version (tests build the schema an older gateway left behind).
 */
export async function migrate(client: Queryable, schema: string, to = SCHEMA_VERSION): Promise<number> {
  const s = quoteIdent(schema)
  await client.query('BEGIN')
  try {
    await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATE_LOCK])
    await client.query(`CREATE SCHEMA IF NOT EXISTS ${s}`)
    await client.query(`CREATE TABLE IF NOT EXISTS ${s}.schema_version (version integer NOT NULL, applied timestamptz NOT NULL DEFAULT now())`)
    const { rows } = await client.query(`SELECT coalesce(max(version), 0) AS v FROM ${s}.schema_version`)
    const current = Number(rows[0]!.v)
    if (current > SCHEMA_VERSION)
      throw new Error(`control store schema ${schema} is at version ${current}, newer than this gateway knows (${SCHEMA_VERSION}); upgrade the gateway`)
    for (let v = current + 1; v <= Math.min(to, SCHEMA_VERSION); v++) {
      await client.query(MIGRATIONS[v - 1]!(s))
      await client.query(`INSERT INTO ${s}.schema_version (version) VALUES ($1)`, [v])
    }
    await client.query('COMMIT')
    return current
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {})
    throw err
  }
}
