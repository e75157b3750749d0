// Resolves RowDescription column identities (table OID + attribute number) to schema.table.column
// through the gateway's own upstream connection, so that `SELECT email AS e` is still the email
// column. One connection and one cache per target; the connection closes itself when idle.
import type { TargetConfig } from '@portcullis/core/types'
import { PortcullisError } from '@portcullis/core/errors'
import { BufferReader } from './buffer-reader.ts'
import { Framer } from './framer.ts'
import { parseDataRow, parseNoticeFields } from './backend.ts'
import { serializeQuery, TERMINATE } from './frontend.ts'
import { connectUpstream, upstreamStartupParameters, type UpstreamConnection } from './upstream.ts'

export interface ColumnIdentity {
  schema: string
  table: string
  column: string
  /** for a view column: same-named columns of the relations the view reads */
  base: { schema: string; table: string; column: string }[]
  /** the view reads columns none of its own names match (computed or renamed) */
  viewOpaque: boolean
}

export interface ColumnName {
  schema: string
  table: string
  column: string
}

export interface NamedRelation {
  columns: ColumnName[]
  /** for a view: its query (pg_get_viewdef) */
  viewDef?: string
  /** relations of the same unqualified name in other schemas: the session may read any of them */
  others: ColumnName[][]
  /** columns of inheritance children and partitions, whose rows a read of the parent returns */
  descendants: ColumnName[]
}

/** the relation name of an unqualified name as written in SQL; null when it is qualified */
function bareName(name: string): string | null {
  if (/^[a-z_][a-z0-9_$]*$/.test(name)) return name
  const q = /^"((?:[^"]|"")*)"$/.exec(name)
  return q ? q[1]!.replace(/""/g, '"') : null
}

interface RelationInfo {
  columns: Map<number, ColumnIdentity>
}

const IDLE_MS = 10_000
const MAX_NAMES = 10_000

export class Catalog {
  private conn: UpstreamConnection | undefined
  private connecting: Promise<UpstreamConnection> | undefined
  private queue: Promise<unknown> = Promise.resolve()
  private idle: NodeJS.Timeout | undefined
  private readonly relations = new Map<number, RelationInfo>()
  private readonly typeNames = new Map<number, string>()
  /** relation name as written in SQL → its columns in order; null: no such relation */
  private readonly byName = new Map<string, NamedRelation | null>()
  /** changes whenever a relation is learnt or forgotten: what was built from the cache is stale */
  generation = 0

  constructor(
    private readonly target: TargetConfig,
    private password: () => Promise<string | undefined>,
  ) {}

  /** the newest session's secret lookup: an older session may be closed when we reconnect */
  usePassword(password: () => Promise<string | undefined>): void {
    this.password = password
  }

  /** cached: undefined until resolve() has seen the relation */
  column(tableOid: number, attributeNumber: number): ColumnIdentity | undefined {
    return this.relations.get(tableOid)?.columns.get(attributeNumber)
  }

  typeName(oid: number): string | undefined {
    return this.typeNames.get(oid)
  }

  has(tableOid: number): boolean {
    return this.relations.has(tableOid)
  }

  forget(tableOid: number): void {
    if (this.relations.delete(tableOid)) this.generation++
    // a relation changed under a cached column list: every list is looked up again
    if (this.byName.size > 0) {
      this.byName.clear()
      this.generation++
    }
  }

  /** cached by loadRelations: the columns of a relation named as in SQL; null when there is none */
  relationByName(name: string): NamedRelation | null | undefined {
    return this.byName.get(name)
  }

  /** looks these names up again (a column list may have changed since: ALTER TABLE) */
  reloadRelations(names: string[]): Promise<void> {
    for (const n of names) this.byName.delete(n)
    this.generation++
    return this.loadRelations(names)
  }

  /** every cached column list is stale (a result did not have the shape the lists said) */
  forgetRelationNames(): void {
    if (this.byName.size === 0) return
    this.byName.clear()
    this.generation++
  }

  /** looks up the column lists of these relation names (as in SQL) in one query */
  async loadRelations(names: string[]): Promise<void> {
    const missing = [...new Set(names)].filter(n => !this.byName.has(n))
    if (missing.length === 0) return
    // E'' literals read the same whatever standard_conforming_strings says
    const lit = (v: string | null) => (v === null ? 'NULL' : `E'${v.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`)
    const list = missing.map(lit).join(',')
    const bare = missing.map(n => lit(bareName(n))).join(',')
    // An unqualified name is every relation of that name, in any schema: the session's search_path
    // (which this connection does not share) decides which one it reads. The one on this
    // connection's path comes first and gives the column list; the others add their same-named
    // columns as sources, so a changed search_path cannot pick an unmasked twin.
    const rows = await this.query(
      `SELECT x.name, c.oid, (c.oid = pg_catalog.to_regclass(x.name)) AS on_path, n.nspname, c.relname, a.attname, c.relkind ` +
        `FROM unnest(ARRAY[${list}]::text[], ARRAY[${bare}]::text[]) AS x(name, bare) ` +
        `JOIN pg_catalog.pg_class c ON (x.bare IS NULL AND c.oid = pg_catalog.to_regclass(x.name)) OR (c.relname = x.bare AND c.relkind IN ('r', 'v', 'm', 'f', 'p')) ` +
        `JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace ` +
        `JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped ` +
        `ORDER BY x.name, on_path DESC NULLS LAST, c.oid, a.attnum`,
    )
    const found = new Map<string, NamedRelation>()
    const views: { name: string; oid: string }[] = []
    const oidsOf = new Map<string, string[]>()
    let last = ''
    for (const [name, oid, , schema, table, column, relkind] of rows) {
      let rel = found.get(name!)
      const key = `${name}\0${oid}`
      const oids = oidsOf.get(name!) ?? []
      if (!oids.includes(oid!)) oids.push(oid!)
      oidsOf.set(name!, oids)
      if (!rel) {
        rel = { columns: [], others: [], descendants: [] }
        found.set(name!, rel)
        last = key
        if (relkind === 'v' || relkind === 'm') views.push({ name: name!, oid: oid! })
      } else if (key !== last) {
        rel.others.push([])
        last = key
      }
      const col = { schema: schema!, table: table!, column: column! }
      if (rel.others.length === 0) rel.columns.push(col)
      else rel.others[rel.others.length - 1]!.push(col)
    }
    // a parent's rows include its children's (inheritance, partitions): their columns are sources too
    const all = [...new Set([...oidsOf.values()].flat())]
    if (all.length > 0) {
      const kids = await this.query(
        `WITH RECURSIVE d(root, oid) AS (SELECT i.inhparent, i.inhrelid FROM pg_catalog.pg_inherits i WHERE i.inhparent = ANY('{${all.join(',')}}'::oid[]) ` +
          `UNION SELECT d.root, i.inhrelid FROM d JOIN pg_catalog.pg_inherits i ON i.inhparent = d.oid) ` +
          `SELECT d.root, n.nspname, c.relname, a.attname FROM d JOIN pg_catalog.pg_class c ON c.oid = d.oid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace ` +
          `JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped`,
      )
      for (const [name, oids] of oidsOf) {
        const rel = found.get(name)!
        for (const [root, schema, table, column] of kids) if (oids.includes(root!)) rel.descendants.push({ schema: schema!, table: table!, column: column! })
      }
    }
    // a view's (or materialized view's) columns are what its query makes of other relations' columns
    if (views.length > 0) {
      const defs = await this.query(`SELECT c.oid, pg_catalog.pg_get_viewdef(c.oid) FROM pg_catalog.pg_class c WHERE c.oid = ANY('{${views.map(v => v.oid).join(',')}}'::oid[])`)
      const byOid = new Map(defs.map(([oid, def]) => [oid, def]))
      for (const v of views) {
        const def = byOid.get(v.oid)
        if (def) found.get(v.name)!.viewDef = def
      }
    }
    // bounded: names that do not exist cost an entry each
    if (this.byName.size + missing.length > MAX_NAMES) this.byName.clear()
    for (const n of missing) this.byName.set(n, found.get(n) ?? null)
    this.generation++
  }

  hasType(oid: number): boolean {
    return this.typeNames.has(oid)
  }

  async resolve(tableOids: number[], typeOids: number[]): Promise<void> {
    const tables = [...new Set(tableOids)].filter(o => o !== 0 && !this.relations.has(o))
    const types = [...new Set(typeOids)].filter(o => !this.typeNames.has(o))
    if (tables.length === 0 && types.length === 0) return
    if (types.length) {
      for (const [oid, name] of await this.query(`SELECT t.oid, t.typname FROM pg_catalog.pg_type t WHERE t.oid = ANY('{${types.join(',')}}'::oid[])`)) {
        this.typeNames.set(Number(oid), name!)
      }
      for (const o of types) if (!this.typeNames.has(o)) this.typeNames.set(o, '')
    }
    if (tables.length === 0) return
    const oids = `'{${tables.join(',')}}'::oid[]`
    const cols = await this.query(
      `SELECT c.oid, a.attnum, n.nspname, c.relname, a.attname, c.relkind FROM pg_catalog.pg_attribute a ` +
        `JOIN pg_catalog.pg_class c ON c.oid = a.attrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace ` +
        `WHERE c.oid = ANY(${oids}) AND a.attnum > 0 AND NOT a.attisdropped`,
    )
    // for views: the base columns the view's rewrite rule depends on
    const deps = await this.query(
      `SELECT r.ev_class, n.nspname, c.relname, a.attname FROM pg_catalog.pg_rewrite r ` +
        `JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_rewrite'::regclass AND d.objid = r.oid AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjsubid > 0 ` +
        `JOIN pg_catalog.pg_class c ON c.oid = d.refobjid AND c.oid <> r.ev_class JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace ` +
        `JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum = d.refobjsubid WHERE r.ev_class = ANY(${oids})`,
    )
    const baseByView = new Map<number, { schema: string; table: string; column: string }[]>()
    for (const [view, schema, table, column] of deps) {
      const list = baseByView.get(Number(view)) ?? []
      list.push({ schema: schema!, table: table!, column: column! })
      baseByView.set(Number(view), list)
    }
    this.generation++
    for (const o of tables) this.relations.set(o, { columns: new Map() })
    for (const [oid, attnum, schema, table, column] of cols) {
      const base = baseByView.get(Number(oid)) ?? []
      const own = new Set(cols.filter(r => r[0] === oid).map(r => r[4]))
      this.relations.get(Number(oid))!.columns.set(Number(attnum), {
        schema: schema!,
        table: table!,
        column: column!,
        base: base.filter(b => b.column === column),
        viewOpaque: base.some(b => !own.has(b.column)),
      })
    }
  }

  /** the columns of a relation named as in SQL ('customers', 'public.customers'), in order */
  async relationColumns(name: string): Promise<{ schema: string; table: string; column: string }[]> {
    const quoted = name.replace(/'/g, "''")
    const rows = await this.query(
      `SELECT n.nspname, c.relname, a.attname FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_class c ON c.oid = a.attrelid ` +
        `JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass('${quoted}') AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum`,
    )
    return rows.map(([schema, table, column]) => ({ schema: schema!, table: table!, column: column! }))
  }

  /**
   * Runs `fn` on the catalog's connection, queued behind (and ahead of) the lookups: explain.ts
   * holds it for one estimate. `fn` leaves the connection idle, or destroys its socket.
   */
  exclusive<T>(fn: (socket: UpstreamConnection['socket']) => Promise<T>): Promise<T> {
    const run = this.queue.then(async () => {
      if (this.idle) clearTimeout(this.idle)
      try {
        return await fn((await this.connection()).socket)
      } finally {
        this.idle = setTimeout(() => this.close(), IDLE_MS)
        this.idle.unref()
      }
    })
    this.queue = run.catch(() => undefined)
    return run
  }

  private query(sql: string): Promise<(string | null)[][]> {
    const run = this.queue.then(() => this.run(sql))
    this.queue = run.catch(() => undefined)
    return run
  }

  private async connection(): Promise<UpstreamConnection> {
    if (this.conn && !this.conn.socket.destroyed) return this.conn
    this.connecting ??= (async () => {
      const c = await connectUpstream(this.target, await this.password(), upstreamStartupParameters(this.target, { application_name: 'portcullis-catalog' }, 'gateway'))
      c.socket.on('error', () => c.socket.destroy())
      c.socket.on('close', () => {
        if (this.conn === c) this.conn = undefined
      })
      c.socket.unref()
      // handed over paused (nothing read is dropped before a listener exists); between lookups the
      // catalog has nothing to read, so it flows as a plain socket
      c.socket.resume()
      this.conn = c
      return c
    })().finally(() => (this.connecting = undefined))
    return this.connecting
  }

  private async run(sql: string): Promise<(string | null)[][]> {
    if (this.idle) clearTimeout(this.idle)
    const conn = await this.connection()
    const socket = conn.socket
    const framer = new Framer(64 << 20)
    const rows: (string | null)[][] = []
    try {
      return await new Promise((resolve, reject) => {
        let error: string | undefined
        const onData = (chunk: Buffer) => {
          try {
            for (const f of framer.push(chunk)) {
              const r = new BufferReader(f.raw, f.bodyOffset)
              switch (f.code) {
                case 0x44: // D
                  rows.push(parseDataRow(r).map(v => (v === null ? null : v.toString('utf8'))))
                  break
                case 0x45: // E
                  error = parseNoticeFields(r).M
                  break
                case 0x5a: // Z
                  cleanup()
                  if (error) reject(new PortcullisError('UPSTREAM_UNAVAILABLE', `catalog lookup failed: ${error}`))
                  else resolve(rows)
                  break
              }
            }
          } catch (err) {
            cleanup()
            reject(err)
          }
        }
        const onClose = () => {
          cleanup()
          reject(new PortcullisError('UPSTREAM_UNAVAILABLE', 'catalog connection closed'))
        }
        const cleanup = () => {
          socket.off('data', onData)
          socket.off('close', onClose)
        }
        socket.on('data', onData)
        socket.on('close', onClose)
        socket.write(serializeQuery(sql))
      })
    } finally {
      this.idle = setTimeout(() => this.close(), IDLE_MS)
      this.idle.unref()
    }
  }

  close(): void {
    const c = this.conn
    this.conn = undefined
    if (c && !c.socket.destroyed) c.socket.end(TERMINATE)
  }
}

const catalogs = new Map<string, { target: TargetConfig; catalog: Catalog }>()

/** one catalog per target (a new target config object — a reload — starts a fresh cache) */
export function catalogFor(target: TargetConfig, password: () => Promise<string | undefined>): Catalog {
  const hit = catalogs.get(target.name)
  if (hit && hit.target === target) {
    hit.catalog.usePassword(password)
    return hit.catalog
  }
  hit?.catalog.close()
  const catalog = new Catalog(target, password)
  catalogs.set(target.name, { target, catalog })
  return catalog
}
