// The control store on Postgres: the recommended home when several gateways run.
//
// Every write that others must hear of appends to `changes` in the same transaction and NOTIFYs;
// each instance reads `changes` past the last sequence number it has seen, on a notification and
// on a timer (the fallback when a LISTEN connection is lost without our noticing). Writers take one
// advisory lock before appending, so sequence numbers commit in order and a reader never skips one
// that commits late. After the store was away, reading past the last sequence brings everything that
// happened meanwhile, decisions included.
//
// Each instance holds a lease it renews on a heartbeat; any instance's heartbeat reaps lapsed
// leases: their pending requests read withdrawn, their sessions leave the registry.
//
// This file is the connection (pool, LISTEN, reconnect, health) and the change feed; each role's
// statements have a file of their own, behind the one ControlStore surface: approvals.ts (requests,
// votes, release), grants.ts (approval windows), registry.ts (revocations, sessions, kills),
// objects.ts (scoped objects), leases.ts (instances, heartbeat, reaping).
import { readFileSync } from 'node:fs'
import pg from 'pg'
import {
  PortcullisError,
  type ApprovalGrant,
  type ApprovalRequest,
  type ControlChange,
  type ControlHealth,
  type ControlStore,
  type InstanceInfo,
  type KillRequest,
  type RequestVerdict,
  type RevocationEntry,
  type SessionRecord,
  type UpstreamTls,
} from '@portcullis/core'
import * as approvals from './approvals.ts'
import type { Db, Row } from './db.ts'
import * as grants from './grants.ts'
import * as leases from './leases.ts'
import * as objects from './objects.ts'
import * as registry from './registry.ts'
import { CHANGES_LOCK, migrate, quoteIdent } from './schema.ts'

export interface PostgresControlStoreOptions {
  host: string
  port: number
  database: string
  user: string
  /** resolved on every new connection (a rotated secret is picked up) */
  password?: () => Promise<string>
  tls?: UpstreamTls
  /** default portcullis_control */
  schema?: string
  leaseMs: number
  heartbeatMs: number
  pollMs: number
  /** reconnect backoff, ms: starts at min, doubles up to max */
  backoff?: { minMs: number; maxMs: number }
  /** how long decided requests and changes are kept, ms (default 1 h) */
  retainMs?: number
  log?: (msg: string, fields?: Record<string, unknown>) => void
}

type Settled = Required<Omit<PostgresControlStoreOptions, 'password' | 'tls' | 'log'>> & PostgresControlStoreOptions

/** a connection that failed, as opposed to a statement the server refused */
function isConnectionError(err: unknown): boolean {
  const code = (err as { code?: unknown }).code
  if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) return code.startsWith('08') || code.startsWith('57P') || code === '53300'
  return true
}

/** what health() says: the cause, never an address or a password */
function describe(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown }
  if (typeof e.code === 'string' && /^E[A-Z]+$/.test(e.code)) return `unreachable (${e.code})`
  if (typeof e.code === 'string') return `${e.code}: ${String(e.message).replace(/\d{1,3}(\.\d{1,3}){3}(:\d+)?/g, '[address]')}`
  const m = String(e.message ?? err)
  return /timeout/i.test(m) ? 'unreachable (timeout)' : /terminat|closed|ended/i.test(m) ? 'connection lost' : 'unreachable'
}

export class PostgresControlStore implements ControlStore {
  readonly kind = 'postgres' as const
  readonly #o: Settled
  readonly #s: string
  readonly #channel: string
  readonly #pool: pg.Pool
  /** what the role files use of this store */
  readonly #db: Db
  readonly #log: (msg: string, fields?: Record<string, unknown>) => void
  #instance: InstanceInfo | undefined
  #listener: pg.Client | undefined
  #ok = false
  #error: string | undefined = 'not started'
  #lastSeq = -1
  #reading: Promise<void> | undefined
  #readAgain = false
  #reconnecting = false
  #closed = false
  #timers: NodeJS.Timeout[] = []
  #subscribers = new Set<(c: ControlChange) => void>()
  #healthListeners = new Set<(h: ControlHealth) => void>()

  constructor(opts: PostgresControlStoreOptions) {
    this.#o = {
      schema: 'portcullis_control',
      backoff: { minMs: 100, maxMs: 5000 },
      retainMs: 3_600_000,
      ...opts,
    } as Settled
    this.#s = quoteIdent(this.#o.schema)
    this.#channel = `${this.#o.schema}_changes`
    this.#log = opts.log ?? (() => {})
    this.#db = {
      s: this.#s,
      retainMs: this.#o.retainMs,
      q: (text, values) => this.#q(text, values),
      tx: fn => this.#tx(fn),
      append: (c, changes) => this.#append(c, changes),
      emit: change => this.#emit(change),
    }
    this.#pool = new pg.Pool({ ...this.#clientConfig(), max: 4, idleTimeoutMillis: 30_000 })
    // an idle connection the server dropped: the next query finds out and reconnects
    this.#pool.on('error', err => this.#down(err))
  }

  #clientConfig(): pg.ClientConfig {
    const { host, port, database, user, password, tls } = this.#o
    const timeout = Math.max(1000, Math.min(5000, this.#o.leaseMs))
    return {
      host,
      port,
      database,
      user,
      ...(password ? { password } : {}),
      ssl: tls?.enabled
        ? {
            rejectUnauthorized: tls.rejectUnauthorized ?? true,
            ...(tls.ca ? { ca: readFileSync(tls.ca) } : {}),
            ...(tls.servername ? { servername: tls.servername } : {}),
          }
        : false,
      connectionTimeoutMillis: timeout,
      query_timeout: timeout,
      keepAlive: true,
      application_name: 'portcullis-control',
    }
  }

  health(): ControlHealth {
    return this.#ok ? { kind: 'postgres', ok: true } : { kind: 'postgres', ok: false, error: this.#error ?? 'unavailable' }
  }

  onHealth(fn: (h: ControlHealth) => void): () => void {
    this.#healthListeners.add(fn)
    return () => this.#healthListeners.delete(fn)
  }

  subscribe(onChange: (change: ControlChange) => void): () => void {
    this.#subscribers.add(onChange)
    return () => this.#subscribers.delete(onChange)
  }

  async start(instance: InstanceInfo): Promise<void> {
    this.#instance = instance
    try {
      await this.#connect()
      this.#setHealth(true)
    } catch (err) {
      // the gateway starts anyway: allowed traffic needs no store; approvals wait for it
      this.#down(err)
    }
    this.#every(this.#o.heartbeatMs, () => this.#heartbeat())
    this.#every(this.#o.pollMs, () => (this.#ok ? this.#readChanges() : undefined))
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    for (const t of this.#timers) clearInterval(t)
    if (this.#ok && this.#instance) {
      // leaving on purpose: nothing of ours should wait for the lease to lapse
      await this.#tx(c => leases.giveBack(this.#db, c, this.#instance!.id)).catch(err => this.#log('control store: lease not given back', { error: describe(err) }))
    }
    const l = this.#listener
    this.#listener = undefined
    // bounded: end() on a connection that already broke may never settle
    const bounded = (p: Promise<unknown> | undefined) => Promise.race([p?.catch(() => {}), new Promise(r => setTimeout(r, 1000).unref())])
    await Promise.all([bounded(l?.end()), bounded(this.#pool.end())])
  }

  // ─── approvals (approvals.ts, grants.ts) ───

  putRequest(r: ApprovalRequest): Promise<void> {
    return approvals.putRequest(this.#db, r)
  }

  getRequest(id: string): Promise<ApprovalRequest | undefined> {
    return approvals.getRequest(this.#db, id)
  }

  listRequests(): Promise<ApprovalRequest[]> {
    return approvals.listRequests(this.#db)
  }

  decide(id: string, verdict: RequestVerdict): Promise<ApprovalRequest> {
    return approvals.decide(this.#db, id, verdict)
  }

  release(id: string): Promise<ApprovalRequest | undefined> {
    return approvals.release(this.#db, id)
  }

  findGrant(subject: string, target: string, fingerprint: string): Promise<ApprovalGrant | undefined> {
    return grants.findGrant(this.#db, subject, target, fingerprint)
  }

  grants(): Promise<ApprovalGrant[]> {
    return grants.grants(this.#db)
  }

  // ─── revocations, sessions, kills (registry.ts); scoped objects (objects.ts) ───

  revoke(entry: RevocationEntry): Promise<void> {
    return registry.revoke(this.#db, entry)
  }

  revocations(): Promise<RevocationEntry[]> {
    return registry.revocations(this.#db)
  }

  putSessions(sessions: SessionRecord[]): Promise<void> {
    return registry.putSessions(this.#db, sessions)
  }

  endSession(id: string): Promise<void> {
    return registry.endSession(this.#db, id)
  }

  listSessions(): Promise<SessionRecord[]> {
    return registry.listSessions(this.#db)
  }

  putObjects(target: string, scope: string, kind: string, ids: string[]): Promise<void> {
    return objects.putObjects(this.#db, target, scope, kind, ids)
  }

  ownedObjects(target: string, scope: string, kind: string, ids: string[]): Promise<string[]> {
    return objects.ownedObjects(this.#db, target, scope, kind, ids)
  }

  dropObjects(target: string, scope: string, kind: string, ids: string[]): Promise<void> {
    return objects.dropObjects(this.#db, target, scope, kind, ids)
  }

  kill(request: KillRequest): Promise<void> {
    return registry.kill(this.#db, request)
  }

  // ─── plumbing ───

  #every(ms: number, fn: () => Promise<void> | void) {
    const t = setInterval(() => {
      try {
        void Promise.resolve(fn()).catch(() => {})
      } catch {
        // a tick that throws is retried on the next one
      }
    }, ms)
    t.unref()
    this.#timers.push(t)
  }

  #emit(change: ControlChange) {
    for (const fn of [...this.#subscribers]) {
      try {
        fn(change)
      } catch (err) {
        this.#log('control store subscriber failed', { error: (err as Error).message })
      }
    }
  }

  #setHealth(ok: boolean, err?: unknown) {
    const was = this.#ok
    this.#ok = ok
    this.#error = ok ? undefined : describe(err)
    if (was === ok) return
    const h = this.health()
    for (const fn of [...this.#healthListeners]) fn(h)
  }

  /** the store went away: say so, and come back in the background */
  #down(err: unknown) {
    if (this.#closed) return
    this.#setHealth(false, err)
    if (this.#reconnecting) return
    this.#reconnecting = true
    const { minMs, maxMs } = this.#o.backoff
    let delay = minMs
    const attempt = () => {
      if (this.#closed) return
      this.#connect().then(
        () => {
          this.#reconnecting = false
          this.#log('control store reconnected')
          this.#setHealth(true)
        },
        e => {
          this.#error = describe(e)
          delay = Math.min(maxMs, delay * 2)
          setTimeout(attempt, delay * (0.75 + Math.random() * 0.5)).unref()
        },
      )
    }
    setTimeout(attempt, delay).unref()
  }

  /** every statement goes through here: a lost connection marks the store down */
  async #q(text: string, values?: unknown[]): Promise<{ rows: Row[] }> {
    if (!this.#ok) throw new PortcullisError('CONTROL_STORE_UNAVAILABLE', `control store unavailable: ${this.#error}`)
    try {
      return await this.#pool.query(text, values)
    } catch (err) {
      throw this.#failed(err)
    }
  }

  async #tx<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    if (!this.#ok) throw new PortcullisError('CONTROL_STORE_UNAVAILABLE', `control store unavailable: ${this.#error}`)
    let c: pg.PoolClient
    try {
      c = await this.#pool.connect()
    } catch (err) {
      throw this.#failed(err)
    }
    let broken = false
    try {
      await c.query('BEGIN')
      const out = await fn(c)
      await c.query('COMMIT')
      return out
    } catch (err) {
      broken = isConnectionError(err) && !(err instanceof PortcullisError)
      await c.query('ROLLBACK').catch(() => {})
      throw err instanceof PortcullisError ? err : this.#failed(err)
    } finally {
      c.release(broken)
    }
  }

  #failed(err: unknown): Error {
    if (err instanceof PortcullisError || !isConnectionError(err)) return err as Error
    this.#down(err)
    return new PortcullisError('CONTROL_STORE_UNAVAILABLE', `control store unavailable: ${describe(err)}`)
  }

  /** appends changes in commit order (see the top of this file) and wakes every listener */
  async #append(c: pg.PoolClient, changes: ControlChange[]) {
    await c.query('SELECT pg_advisory_xact_lock($1)', [CHANGES_LOCK])
    for (const ch of changes) {
      const body = ch.kind === 'request' ? ch.request : ch.kind === 'grant' ? ch.grant : ch.kind === 'revocation' ? ch.entry : ch.kill
      await c.query(`INSERT INTO ${this.#s}.changes (kind, body) VALUES ($1, $2)`, [ch.kind, JSON.stringify(body)])
    }
    await c.query('SELECT pg_notify($1, $2)', [this.#channel, ''])
  }

  /** (re)connects: migrate, take the lease, listen, catch up on what was missed */
  async #connect(): Promise<void> {
    const c = await this.#pool.connect()
    try {
      const from = await migrate(c, this.#o.schema)
      if (from === 0) this.#log('control store schema created', { schema: this.#o.schema })
      await leases.renew(c, this.#s, this.#instance!, this.#o.leaseMs)
      if (this.#lastSeq < 0) {
        const { rows } = await c.query(`SELECT coalesce(max(seq), 0) AS seq FROM ${this.#s}.changes`)
        this.#lastSeq = Number(rows[0]!.seq)
      }
    } catch (err) {
      c.release(true)
      throw err
    }
    c.release()
    const old = this.#listener
    this.#listener = undefined
    // not awaited: end() on a connection that already broke may never settle
    old?.end().catch(() => {})
    const l = new pg.Client(this.#clientConfig())
    l.on('error', err => {
      if (this.#listener === l) this.#down(err)
    })
    l.on('end', () => {
      if (this.#listener === l && !this.#closed) this.#down(new Error('connection ended'))
    })
    l.on('notification', () => void this.#readChanges())
    await l.connect()
    await l.query(`LISTEN ${quoteIdent(this.#channel)}`)
    this.#listener = l
    // with #ok still false here: the read below goes straight to the pool
    await this.#readChangesNow(true)
  }

  async #heartbeat() {
    if (!this.#ok || this.#closed) return
    try {
      await leases.heartbeat(this.#db, this.#pool, this.#instance!, this.#o.leaseMs, this.#log)
    } catch (err) {
      if (!(err instanceof PortcullisError)) this.#failed(err)
    }
  }

  /** one reader at a time; a notification during a read asks for another */
  #readChanges(): Promise<void> {
    if (this.#reading) {
      this.#readAgain = true
      return this.#reading
    }
    this.#reading = (async () => {
      try {
        do {
          this.#readAgain = false
          await this.#readChangesNow(false)
        } while (this.#readAgain && this.#ok)
      } catch (err) {
        if (!(err instanceof PortcullisError)) this.#failed(err)
      } finally {
        this.#reading = undefined
      }
    })()
    return this.#reading
  }

  async #readChangesNow(connecting: boolean) {
    for (;;) {
      const { rows } = connecting
        ? await this.#pool.query(`SELECT seq, kind, body FROM ${this.#s}.changes WHERE seq > $1 ORDER BY seq LIMIT 1000`, [this.#lastSeq])
        : await this.#q(`SELECT seq, kind, body FROM ${this.#s}.changes WHERE seq > $1 ORDER BY seq LIMIT 1000`, [this.#lastSeq])
      for (const r of rows) {
        this.#lastSeq = Math.max(this.#lastSeq, Number(r.seq))
        this.#emit(changeOf(String(r.kind), r.body))
      }
      if (rows.length < 1000) return
    }
  }
}

function changeOf(kind: string, body: unknown): ControlChange {
  switch (kind) {
    case 'request':
      return { kind, request: body as ApprovalRequest }
    case 'grant':
      return { kind, grant: body as ApprovalGrant }
    case 'revocation':
      return { kind, entry: body as RevocationEntry }
    default:
      return { kind: 'kill', kill: body as KillRequest }
  }
}
