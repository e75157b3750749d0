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

type Row = Record<string, unknown>
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

/** why a request that no longer matched `status = 'pending'` (and alive, unexpired) was not decided */
function notPending(id: string, found: { status: unknown; expired: unknown }): PortcullisError {
  const why = found.status !== 'pending' ? `is already ${String(found.status)}` : found.expired ? 'has expired' : 'is held by a gateway instance that stopped answering'
  return new PortcullisError('APPROVAL_NOT_PENDING', `approval request ${id} ${why}`, { approvalId: id })
}

export class PostgresControlStore implements ControlStore {
  readonly kind = 'postgres' as const
  readonly #o: Settled
  readonly #s: string
  readonly #channel: string
  readonly #pool: pg.Pool
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
      await this.#tx(async c => {
        await this.#reap(c, [this.#instance!.id], 'gateway instance shut down')
        await c.query(`UPDATE ${this.#s}.instances SET state = 'gone', lease_until = now() WHERE id = $1`, [this.#instance!.id])
      }).catch(err => this.#log('control store: lease not given back', { error: describe(err) }))
    }
    const l = this.#listener
    this.#listener = undefined
    // bounded: end() on a connection that already broke may never settle
    const bounded = (p: Promise<unknown> | undefined) => Promise.race([p?.catch(() => {}), new Promise(r => setTimeout(r, 1000).unref())])
    await Promise.all([bounded(l?.end()), bounded(this.#pool.end())])
  }

  // ─── approvals ───

  async putRequest(r: ApprovalRequest): Promise<void> {
    await this.#tx(async c => {
      await c.query(
        `INSERT INTO ${this.#s}.requests (id, instance, status, expires, min_approvals, body) VALUES ($1, $2, $3, to_timestamp($4 / 1000.0), $5, $6)`,
        [r.id, r.instance ?? null, r.status, r.expires, r.minApprovals ?? 1, JSON.stringify(r)],
      )
      await this.#append(c, [{ kind: 'request', request: r }])
    })
    this.#emit({ kind: 'request', request: r })
  }

  async getRequest(id: string): Promise<ApprovalRequest | undefined> {
    const { rows } = await this.#q(`SELECT body FROM ${this.#s}.requests WHERE id = $1`, [id])
    return rows[0] ? (rows[0].body as ApprovalRequest) : undefined
  }

  async listRequests(): Promise<ApprovalRequest[]> {
    const { rows } = await this.#q(
      `SELECT body FROM ${this.#s}.requests WHERE status = 'pending' OR updated > now() - $1::float8 * interval '1 millisecond' ORDER BY updated LIMIT 10000`,
      [this.#o.retainMs],
    )
    return rows.map(r => r.body as ApprovalRequest)
  }

  async decide(id: string, verdict: RequestVerdict): Promise<ApprovalRequest> {
    const patch: Record<string, unknown> = { status: verdict.status }
    if (verdict.decidedBy !== undefined) patch.decidedBy = verdict.decidedBy
    if (verdict.reason !== undefined) patch.reason = verdict.reason
    if (verdict.vote) return this.#vote(id, verdict)
    const decision = verdict.status === 'approved' || verdict.status === 'denied'
    const done = await this.#tx(async c => {
      // one decision only: of two approvers at once, the second finds it no longer pending. An
      // approval or denial also needs the request unexpired and its holder's lease alive.
      const { rows } = await c.query(
        `UPDATE ${this.#s}.requests r SET status = $2, body = r.body || $3::jsonb, updated = now()
          WHERE r.id = $1 AND r.status = 'pending'
            AND (NOT $4 OR (r.expires > now() AND (r.instance IS NULL OR EXISTS (
              SELECT 1 FROM ${this.#s}.instances i WHERE i.id = r.instance AND i.state = 'alive' AND i.lease_until > now()))))
          RETURNING r.body`,
        [id, verdict.status, JSON.stringify(patch), decision],
      )
      if (!rows[0]) {
        const { rows: found } = await c.query(`SELECT status, expires <= now() AS expired FROM ${this.#s}.requests WHERE id = $1`, [id])
        if (!found[0]) throw new PortcullisError('APPROVAL_NOT_FOUND', `no approval request ${id}`, { approvalId: id })
        throw notPending(id, found[0])
      }
      const request = rows[0].body as ApprovalRequest
      return { request, changes: await this.#decided(c, request, verdict.grant) }
    })
    for (const ch of done.changes) this.#emit(ch)
    return done.request
  }

  /**
   * One approver's yes. One UPDATE: the row lock orders two approvers at once, and the second one's
   * WHERE is evaluated again on the row the first left (Read Committed), so the same approver twice
   * counts once and two approvers on two instances make exactly one decision.
   */
  async #vote(id: string, verdict: RequestVerdict): Promise<ApprovalRequest> {
    const vote = verdict.vote!
    const patch: Record<string, unknown> = { status: 'approved' }
    if (verdict.decidedBy !== undefined) patch.decidedBy = verdict.decidedBy
    const done = await this.#tx(async c => {
      const { rows } = await c.query(
        `UPDATE ${this.#s}.requests r SET
            votes = r.votes || $2::jsonb,
            status = CASE WHEN jsonb_array_length(r.votes) + 1 >= r.min_approvals THEN 'approved' ELSE 'pending' END,
            body = r.body || jsonb_build_object('approvals', r.votes || $2::jsonb)
                   || CASE WHEN jsonb_array_length(r.votes) + 1 >= r.min_approvals THEN $3::jsonb ELSE '{}'::jsonb END,
            updated = now()
          WHERE r.id = $1 AND r.status = 'pending' AND NOT r.votes @> jsonb_build_array(jsonb_build_object('by', $4::text))
            AND r.expires > now() AND (r.instance IS NULL OR EXISTS (
              SELECT 1 FROM ${this.#s}.instances i WHERE i.id = r.instance AND i.state = 'alive' AND i.lease_until > now()))
          RETURNING r.body, r.status`,
        [id, JSON.stringify([vote]), JSON.stringify(patch), vote.by],
      )
      if (!rows[0]) {
        const { rows: found } = await c.query(
          `SELECT status, expires <= now() AS expired, votes @> jsonb_build_array(jsonb_build_object('by', $2::text)) AS counted FROM ${this.#s}.requests WHERE id = $1`,
          [id, vote.by],
        )
        if (!found[0]) throw new PortcullisError('APPROVAL_NOT_FOUND', `no approval request ${id}`, { approvalId: id })
        if (found[0].status === 'pending' && found[0].counted === true)
          throw new PortcullisError('APPROVAL_ALREADY_COUNTED', `${vote.by} has already approved ${id}; each approver counts once`, { approvalId: id })
        throw notPending(id, found[0])
      }
      const request = rows[0].body as ApprovalRequest
      return { request, changes: await this.#decided(c, request, rows[0].status === 'approved' ? verdict.grant : undefined) }
    })
    for (const ch of done.changes) this.#emit(ch)
    return done.request
  }

  /** a decided request's change, and its window's grant when it has one, in the deciding transaction */
  async #decided(c: pg.PoolClient, request: ApprovalRequest, grant: ApprovalGrant | undefined): Promise<ControlChange[]> {
    const changes: ControlChange[] = []
    if (grant) {
      await c.query(
        `INSERT INTO ${this.#s}.grants (subject, target, fingerprint, until, approval_id) VALUES ($1, $2, $3, to_timestamp($4 / 1000.0), $5)
         ON CONFLICT (subject, target, fingerprint) DO UPDATE SET until = greatest(${this.#s}.grants.until, excluded.until), approval_id = excluded.approval_id`,
        [grant.subject, grant.target, grant.fingerprint, grant.until, grant.approvalId],
      )
      changes.push({ kind: 'grant', grant })
    }
    changes.push({ kind: 'request', request })
    await this.#append(c, changes)
    return changes
  }

  async release(id: string): Promise<ApprovalRequest | undefined> {
    const done = await this.#tx(async c => {
      // once: of two retries at once, the second finds `released` set
      const { rows } = await c.query(
        `UPDATE ${this.#s}.requests r SET released = now(),
            body = r.body || jsonb_build_object('released', floor(extract(epoch FROM now()) * 1000)::bigint), updated = now()
          WHERE r.id = $1 AND r.status = 'approved' AND r.released IS NULL AND r.expires > now() AND r.body->>'mode' = 'defer'
          RETURNING r.body`,
        [id],
      )
      if (!rows[0]) return undefined
      const request = rows[0].body as ApprovalRequest
      await this.#append(c, [{ kind: 'request', request }])
      return request
    })
    if (done) this.#emit({ kind: 'request', request: done })
    return done
  }

  async findGrant(subject: string, target: string, fingerprint: string): Promise<ApprovalGrant | undefined> {
    const { rows } = await this.#q(
      `SELECT subject, target, fingerprint, (extract(epoch FROM until) * 1000)::float8 AS until, approval_id FROM ${this.#s}.grants
        WHERE subject = $1 AND target = $2 AND fingerprint = $3 AND until > now()`,
      [subject, target, fingerprint],
    )
    return rows[0] ? grantOf(rows[0]) : undefined
  }

  async grants(): Promise<ApprovalGrant[]> {
    const { rows } = await this.#q(
      `SELECT subject, target, fingerprint, (extract(epoch FROM until) * 1000)::float8 AS until, approval_id FROM ${this.#s}.grants WHERE until > now()`,
    )
    return rows.map(grantOf)
  }

  // ─── revocations, sessions, kills ───

  async revoke(entry: RevocationEntry): Promise<void> {
    const e: RevocationEntry = { ...(entry.subject ? { subject: entry.subject } : {}), ...(entry.jti ? { jti: entry.jti } : {}) }
    await this.#tx(async c => {
      await c.query(`INSERT INTO ${this.#s}.revocations (subject, jti) VALUES ($1, $2) ON CONFLICT DO NOTHING`, [e.subject ?? '', e.jti ?? ''])
      await this.#append(c, [{ kind: 'revocation', entry: e }])
    })
    this.#emit({ kind: 'revocation', entry: e })
  }

  async revocations(): Promise<RevocationEntry[]> {
    const { rows } = await this.#q(`SELECT subject, jti FROM ${this.#s}.revocations ORDER BY created`)
    return rows.map(r => ({ ...(r.subject ? { subject: String(r.subject) } : {}), ...(r.jti ? { jti: String(r.jti) } : {}) }))
  }

  async putSessions(sessions: SessionRecord[]): Promise<void> {
    if (sessions.length === 0) return
    await this.#q(
      `INSERT INTO ${this.#s}.sessions (id, instance, body)
       SELECT s->>'id', s->>'instance', s FROM jsonb_array_elements($1::jsonb) s
       ON CONFLICT (id) DO UPDATE SET body = excluded.body, instance = excluded.instance`,
      [JSON.stringify(sessions)],
    )
  }

  async endSession(id: string): Promise<void> {
    await this.#q(`DELETE FROM ${this.#s}.sessions WHERE id = $1`, [id])
  }

  async listSessions(): Promise<SessionRecord[]> {
    // an instance whose lease lapsed is not answering for its sessions, reaped or not yet
    const { rows } = await this.#q(
      `SELECT s.body FROM ${this.#s}.sessions s JOIN ${this.#s}.instances i ON i.id = s.instance
        WHERE i.state = 'alive' AND i.lease_until > now() ORDER BY s.body->>'started'`,
    )
    return rows.map(r => r.body as SessionRecord)
  }

  async putObjects(target: string, scope: string, kind: string, ids: string[]): Promise<void> {
    await this.#q(
      `INSERT INTO ${this.#s}.objects (target, kind, id, scope) SELECT $1, $2, unnest($4::text[]), $3 ON CONFLICT DO NOTHING`,
      [target, kind, scope, ids],
    )
  }

  async ownedObjects(target: string, scope: string, kind: string, ids: string[]): Promise<string[]> {
    const { rows } = await this.#q(`SELECT id FROM ${this.#s}.objects WHERE target = $1 AND kind = $2 AND scope = $3 AND id = ANY($4::text[])`, [target, kind, scope, ids])
    const owned = new Set(rows.map(r => r.id as string))
    return ids.filter(id => owned.has(id))
  }

  async dropObjects(target: string, scope: string, kind: string, ids: string[]): Promise<void> {
    await this.#q(`DELETE FROM ${this.#s}.objects WHERE target = $1 AND kind = $2 AND scope = $3 AND id = ANY($4::text[])`, [target, kind, scope, ids])
  }

  async kill(request: KillRequest): Promise<void> {
    await this.#tx(c => this.#append(c, [{ kind: 'kill', kill: request }]))
    this.#emit({ kind: 'kill', kill: request })
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
      await this.#renew(c)
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

  async #renew(c: pg.PoolClient | pg.Pool) {
    const i = this.#instance!
    await c.query(
      `INSERT INTO ${this.#s}.instances (id, host, pid, started, lease_until, state)
       VALUES ($1, $2, $3, to_timestamp($4 / 1000.0), now() + $5::float8 * interval '1 millisecond', 'alive')
       ON CONFLICT (id) DO UPDATE SET lease_until = excluded.lease_until, state = 'alive'`,
      [i.id, i.host, i.pid, i.started, this.#o.leaseMs],
    )
  }

  async #heartbeat() {
    if (!this.#ok || this.#closed) return
    try {
      await this.#renew(this.#pool)
      const { rows } = await this.#pool.query(
        `SELECT id FROM ${this.#s}.instances WHERE state = 'alive' AND lease_until < now()`,
      )
      if (rows.length > 0)
        await this.#tx(async c => {
          const { rows: dead } = await c.query(
            `UPDATE ${this.#s}.instances SET state = 'gone' WHERE id = ANY($1) AND state = 'alive' AND lease_until < now() RETURNING id`,
            [rows.map(r => r.id)],
          )
          if (dead.length > 0) {
            this.#log('control store: instance lease lapsed', { instances: dead.map(r => r.id) })
            await this.#reap(c, dead.map(r => String(r.id)), 'gateway instance stopped answering')
          }
        })
      await this.#pool.query(`DELETE FROM ${this.#s}.changes WHERE at < now() - $1::float8 * interval '1 millisecond'`, [this.#o.retainMs])
      await this.#pool.query(
        `DELETE FROM ${this.#s}.requests WHERE status <> 'pending' AND updated < now() - $1::float8 * interval '1 millisecond'`,
        [this.#o.retainMs],
      )
      await this.#pool.query(`DELETE FROM ${this.#s}.grants WHERE until < now()`)
    } catch (err) {
      if (!(err instanceof PortcullisError)) this.#failed(err)
    }
  }

  /** withdraws the pending requests of these instances and drops their sessions */
  async #reap(c: pg.PoolClient, instances: string[], reason: string) {
    const { rows } = await c.query(
      `UPDATE ${this.#s}.requests r SET status = 'withdrawn', body = r.body || jsonb_build_object('status', 'withdrawn', 'reason', $2::text), updated = now()
        WHERE r.status = 'pending' AND r.instance = ANY($1) RETURNING r.body`,
      [instances, reason],
    )
    await c.query(`DELETE FROM ${this.#s}.sessions WHERE instance = ANY($1)`, [instances])
    if (rows.length > 0) await this.#append(c, rows.map(r => ({ kind: 'request', request: r.body as ApprovalRequest })))
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

function grantOf(r: Row): ApprovalGrant {
  return { subject: String(r.subject), target: String(r.target), fingerprint: String(r.fingerprint), until: Number(r.until), approvalId: String(r.approval_id) }
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
