// Tools for a Postgres target: query, list_tables, describe_table. Every statement runs over a pg
// connection to the target's own listener, authenticated with the caller's token as the password,
// so the Postgres codec classifies, decides, holds, masks, records and audits it as it would a
// psql client's. list_tables and describe_table are catalog reads by the caller (decided like any
// read), and list only the tables the rules let the caller read.
import type { Socket } from 'node:net'
import pg from 'pg'
import { z } from 'zod'
import type { McpServer } from '@modelcontextprotocol/sdk/server/mcp.js'
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js'
import type { Operation, Peer } from '@portcullis/core'
import { num, type CallContext } from './context.ts'
import { Pool } from './pool.ts'
import { progressOf, type Extra, type Progress } from './progress.ts'
import { ok, pendingError, renderRows, toolError, unreachable } from './result.ts'
import { toolName } from './names.ts'

/** the Postgres codec's SQLSTATE for defer mode's refusal (protocols/postgres/src/approval.ts) */
const SQLSTATE_APPROVAL_PENDING = 'PA001'
const HELD_NOTICE = /^statement held for approval: request (\S+)/
const PENDING_MESSAGE = /request (\S+)/

interface PgConn {
  client: pg.Client
  /** the last ReadyForQuery status: 'I' idle, 'T' in a transaction, 'E' failed transaction */
  status: string
  broken: boolean
  progress?: Progress
}

/** a value the driver's parser cannot read (a masked value in a typed column) stays the text it was */
function lenientParser(oid: number, format?: string): (v: string) => unknown {
  const parse = pg.types.getTypeParser(oid, (format ?? 'text') as 'text') as (v: string) => unknown
  return (v: string) => {
    try {
      const r = parse(v)
      if (typeof r === 'number' && Number.isNaN(r)) return v
      if (r instanceof Date && Number.isNaN(r.getTime())) return v
      if (Buffer.isBuffer(r)) return '\\x' + r.toString('hex')
      return r
    } catch {
      return v
    }
  }
}

async function connect(ctx: CallContext, peer: Peer): Promise<PgConn> {
  const socket = (await peer.connect()) as Socket
  // pg opens its own socket with connect(); this one is open already, so connect() says so at once
  Object.assign(socket, {
    connect() {
      process.nextTick(() => socket.emit('connect'))
      return socket
    },
  })
  const client = new pg.Client({
    stream: () => socket,
    // the gateway puts the upstream's user and database in their place; the token says who this is
    user: ctx.principal.subject,
    database: peer.name,
    password: ctx.token(),
    application_name: 'portcullis-mcp',
    types: { getTypeParser: lenientParser as never },
  })
  const conn: PgConn = { client, status: 'I', broken: false }
  client.on('error', () => (conn.broken = true))
  client.on('end', () => (conn.broken = true))
  client.on('notice', (n) => {
    const m = HELD_NOTICE.exec(n.message ?? '')
    if (m) conn.progress?.held(m[1]!)
  })
  ;(client as unknown as { connection: NodeJS.EventEmitter }).connection.on('readyForQuery', (msg: { status: string }) => (conn.status = msg.status))
  try {
    await client.connect()
  } catch (err) {
    socket.destroy()
    throw err
  }
  return conn
}

function poolOf(ctx: CallContext, peer: Peer): Pool<PgConn> {
  return ctx.pool(peer, () =>
    new Pool<PgConn>({
      create: () => connect(ctx, peer),
      destroy: (c) => void c.client.end().catch(() => {}),
      max: num(ctx.options, 'poolSize', 4),
      idleMs: num(ctx.options, 'poolIdleMs', 60_000),
    }),
  )
}

type Param = string | number | boolean | null

interface Ran {
  ran: true
  columns: string[]
  rows: Record<string, unknown>[]
  rowCount: number | null
  command: string
  truncated: boolean
}

const ONE_STATEMENT = 'this tool runs exactly one SQL statement per call (no ";"-separated batches): send each statement as a call of its own'

/** one statement through the target's codec (extended protocol: one statement per call) */
async function run(ctx: CallContext, peer: Peer, sql: string, params: Param[], extra: Extra): Promise<Ran | CallToolResult> {
  const pool = poolOf(ctx, peer)
  let conn: PgConn
  try {
    conn = await pool.acquire()
  } catch (err) {
    const e = err as { code?: string; message: string; severity?: string }
    // the codec's own refusal at startup (a bad token: 28P01) is the target's answer, said as it was
    if (typeof e.code === 'string' && e.severity) return toolError(e.message, { code: e.code, target: peer.name })
    return unreachable(peer.name)
  }
  const progress = progressOf(extra, peer.name)
  conn.progress = progress
  const onAbort = () => {
    // a client that cancels the call: the connection is closed, which withdraws a held approval
    conn.broken = true
    conn.client.end().catch(() => {})
  }
  extra.signal.addEventListener('abort', onAbort, { once: true })
  try {
    const res = await conn.client.query({ text: sql, values: params, rowMode: 'array', queryMode: 'extended' } as pg.QueryConfig)
    const maxRows = num(ctx.options, 'maxRows', 1000)
    const columns = uniqueNames(res.fields.map((f) => f.name))
    const rows = (res.rows as unknown[][]).slice(0, maxRows).map((r) => Object.fromEntries(columns.map((c, i) => [c, r[i]])))
    return { ran: true, columns, rows, rowCount: res.rowCount, command: res.command, truncated: res.rows.length > maxRows }
  } catch (err) {
    const e = err as { code?: string; message: string; detail?: string; hint?: string; severity?: string }
    if (typeof e.code !== 'string' || !e.severity) return unreachable(peer.name)
    if (e.severity === 'FATAL' || e.severity === 'PANIC') conn.broken = true
    if (e.code === SQLSTATE_APPROVAL_PENDING) {
      const id = PENDING_MESSAGE.exec(e.message)?.[1]
      if (id) return pendingError(peer.name, id, e.message, e.code)
    }
    // the extended protocol takes one statement; Postgres's own words for a batch do not say what to do
    const batch = e.code === '42601' && /multiple commands/.test(e.message)
    const hint = batch ? ONE_STATEMENT : e.hint
    return toolError(hint === ONE_STATEMENT ? `${e.message}: ${ONE_STATEMENT}` : e.message, { code: e.code, target: peer.name, ...(e.detail ? { detail: e.detail } : {}), ...(hint ? { hint } : {}) })
  } finally {
    progress.stop()
    conn.progress = undefined
    extra.signal.removeEventListener('abort', onAbort)
    // a connection left inside a transaction would carry it into the caller's next call: closed instead
    pool.release(conn, conn.broken || conn.status !== 'I')
  }
}

const isRan = (r: Ran | CallToolResult): r is Ran => (r as { ran?: unknown }).ran === true

function uniqueNames(names: string[]): string[] {
  const seen = new Map<string, number>()
  return names.map((n) => {
    const k = seen.get(n) ?? 0
    seen.set(n, k + 1)
    return k === 0 ? n : `${n}_${k + 1}`
  })
}

const quoteIdent = (s: string) => '"' + s.replace(/"/g, '""') + '"'

let explainSql: ((sql: string) => Promise<Operation>) | undefined
/** the Postgres codec's own classification of a read of one table (what the rules would see) */
async function readOf(schema: string, table: string): Promise<Operation> {
  explainSql ??= (await import('@portcullis/postgres')).explainSql
  return explainSql(`SELECT * FROM ${quoteIdent(schema)}.${quoteIdent(table)}`)
}

async function readable(ctx: CallContext, peer: Peer, schema: string, table: string): Promise<boolean> {
  return ctx.peers.wouldDecide(ctx.principal, peer.name, await readOf(schema, table)) !== 'block'
}

const LIST_TABLES = `SELECT table_schema AS schema, table_name AS name, table_type AS type
  FROM information_schema.tables WHERE table_schema NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2`
const FIND_TABLE = `SELECT table_schema AS schema, table_name AS name FROM information_schema.tables
  WHERE table_name = $2 AND ($1::text IS NULL OR table_schema = $1) AND table_schema NOT IN ('pg_catalog', 'information_schema')
  ORDER BY table_schema <> 'public', table_schema LIMIT 1`
const DESCRIBE = `SELECT column_name AS name, data_type AS type, is_nullable = 'YES' AS nullable, column_default AS "default"
  FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position`

export function postgresTools(server: McpServer, ctx: CallContext, peer: Peer): void {
  server.registerTool(
    toolName(peer.name, 'query'),
    {
      description: `Run exactly one SQL statement on ${peer.name} (Postgres) as you, through Portcullis: policy, approvals and masking apply. Several statements separated by ";" are refused: make one call per statement. Use $1, $2… with params for values.`,
      inputSchema: {
        sql: z.string().min(1).describe('exactly one SQL statement (no ";"-separated batch)'),
        params: z.array(z.union([z.string(), z.number(), z.boolean(), z.null()])).max(1000).optional().describe('values for $1, $2, …'),
      },
      annotations: { title: `${peer.name}: SQL`, destructiveHint: true, openWorldHint: false },
    },
    async ({ sql, params }, extra) => {
      const r = await run(ctx, peer, sql, params ?? [], extra)
      if (!isRan(r)) return r
      const summary = `${r.command}${r.rowCount !== null ? ' ' + r.rowCount : ''}${r.truncated ? ` (first ${r.rows.length} rows)` : ''}`
      return ok(
        { target: peer.name, command: r.command, rowCount: r.rowCount, columns: r.columns, rows: r.rows, ...(r.truncated ? { truncated: true } : {}) },
        r.columns.length > 0 ? `${renderRows(r.columns, r.rows)}\n(${summary})` : summary,
      )
    },
  )

  server.registerTool(
    toolName(peer.name, 'list_tables'),
    {
      description: `List the tables of ${peer.name} (Postgres) that you may read.`,
      inputSchema: {},
      annotations: { title: `${peer.name}: tables`, readOnlyHint: true, openWorldHint: false },
    },
    async (_args, extra) => {
      const r = await run(ctx, peer, LIST_TABLES, [], extra)
      if (!isRan(r)) return r
      const tables: Record<string, unknown>[] = []
      for (const t of r.rows) if (await readable(ctx, peer, String(t.schema), String(t.name))) tables.push(t)
      return ok({ target: peer.name, tables }, renderRows(['schema', 'name', 'type'], tables))
    },
  )

  server.registerTool(
    toolName(peer.name, 'describe_table'),
    {
      description: `The columns of one table of ${peer.name} (Postgres) that you may read: name, type, nullable, default.`,
      inputSchema: { table: z.string().min(1).max(200).describe('table name, optionally schema.table') },
      annotations: { title: `${peer.name}: describe`, readOnlyHint: true, openWorldHint: false },
    },
    async ({ table }, extra) => {
      // the name is a value (a bound parameter) and, for the policy, a quoted identifier: never SQL
      const dot = table.indexOf('.')
      const schema = dot > 0 ? table.slice(0, dot) : null
      const name = dot > 0 ? table.slice(dot + 1) : table
      const found = await run(ctx, peer, FIND_TABLE, [schema, name], extra)
      if (!isRan(found)) return found
      const row = found.rows[0]
      // a table that does not exist and one the caller may not read get the same answer
      if (!row || !(await readable(ctx, peer, String(row.schema), String(row.name))))
        return toolError(`no table ${JSON.stringify(table)} that you may read on ${peer.name}`, { code: '42P01', target: peer.name })
      const cols = await run(ctx, peer, DESCRIBE, [String(row.schema), String(row.name)], extra)
      if (!isRan(cols)) return cols
      return ok(
        { target: peer.name, schema: row.schema, table: row.name, columns: cols.rows },
        `${row.schema}.${row.name}\n${renderRows(['name', 'type', 'nullable', 'default'], cols.rows)}`,
      )
    },
  )
}
