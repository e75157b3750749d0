// The control store on Redis. Requests are hashes that expire a while after they are decided,
// windows are keys that expire when they end, each instance's lease is a key with a TTL, and every
// change is appended to a stream that each instance reads with a blocking XREAD: a push when
// something is added, a poll every `pollMs` otherwise, and a catch-up from the last entry read after
// the connection was away (decisions made meanwhile included).
import { readFileSync } from 'node:fs'
import { Redis, type RedisOptions } from 'ioredis'
import {
  PortcullisError,
  grantKey,
  type ApprovalGrant,
  type ApprovalRequest,
  type ApprovalVote,
  type ControlChange,
  type ControlHealth,
  type ControlStore,
  type InstanceInfo,
  type KillRequest,
  type RequestVerdict,
  type RevocationEntry,
  type SessionRecord,
} from '@portcullis/core'
import { DECIDE, PUT_REQUEST, REAP, RELEASE, VOTE } from './scripts.ts'

export interface RedisControlStoreOptions {
  host: string
  port: number
  username?: string
  /** resolved at start (ioredis keeps it for its reconnects) */
  password?: () => Promise<string>
  /** ca: a file path, as in the config */
  tls?: { enabled?: boolean; rejectUnauthorized?: boolean; ca?: string; servername?: string }
  db?: number
  /** every key starts with it (default portcullis:control:) */
  prefix?: string
  leaseMs: number
  heartbeatMs: number
  pollMs: number
  backoff?: { minMs: number; maxMs: number }
  /** how long decided requests are kept, ms (default 1 h) */
  retainMs?: number
  log?: (msg: string, fields?: Record<string, unknown>) => void
}

function describe(err: unknown): string {
  const e = err as { code?: unknown; message?: unknown }
  if (typeof e.code === 'string' && /^E[A-Z]+$/.test(e.code)) return `unreachable (${e.code})`
  const m = String(e.message ?? err)
  if (/NOAUTH|WRONGPASS|NOPERM/.test(m)) return m.split(' ')[0]!
  return /timeout/i.test(m) ? 'unreachable (timeout)' : 'unreachable'
}

function requestOf(fields: Record<string, string>): ApprovalRequest {
  const r = JSON.parse(fields.body!) as ApprovalRequest
  r.status = (fields.status as ApprovalRequest['status']) ?? r.status
  if (fields.decidedBy) r.decidedBy = fields.decidedBy
  if (fields.reason) r.reason = fields.reason
  // votes are fields of their own (`vote:<subject>`), in the order they were given
  const votes: ApprovalVote[] = []
  for (const [k, v] of Object.entries(fields)) if (k.startsWith('vote:')) votes.push(JSON.parse(v) as ApprovalVote)
  if (votes.length > 0) r.approvals = votes.sort((a, b) => a.at - b.at)
  if (fields.released) r.released = Number(fields.released)
  return r
}

function objectField(target: string, kind: string, id: string): string {
  return `${target}\u0000${kind}\u0000${id}`
}

export class RedisControlStore implements ControlStore {
  readonly kind = 'redis' as const
  readonly #o: RedisControlStoreOptions & { prefix: string; retainMs: number; backoff: { minMs: number; maxMs: number } }
  readonly #log: (msg: string, fields?: Record<string, unknown>) => void
  #cmd: Redis | undefined
  #reader: Redis | undefined
  #instance: InstanceInfo | undefined
  #ok = false
  #error: string | undefined = 'not started'
  #lastId = '$'
  #closed = false
  #timer: NodeJS.Timeout | undefined
  #subscribers = new Set<(c: ControlChange) => void>()
  #healthListeners = new Set<(h: ControlHealth) => void>()

  constructor(opts: RedisControlStoreOptions) {
    this.#o = { prefix: 'portcullis:control:', retainMs: 3_600_000, backoff: { minMs: 100, maxMs: 5000 }, ...opts }
    this.#log = opts.log ?? (() => {})
  }

  health(): ControlHealth {
    return this.#ok ? { kind: 'redis', ok: true } : { kind: 'redis', ok: false, error: this.#error ?? 'unavailable' }
  }
  onHealth(fn: (h: ControlHealth) => void): () => void {
    this.#healthListeners.add(fn)
    return () => this.#healthListeners.delete(fn)
  }
  subscribe(fn: (c: ControlChange) => void): () => void {
    this.#subscribers.add(fn)
    return () => this.#subscribers.delete(fn)
  }

  async start(instance: InstanceInfo): Promise<void> {
    this.#instance = instance
    const { minMs, maxMs } = this.#o.backoff
    const base: RedisOptions = {
      host: this.#o.host,
      port: this.#o.port,
      ...(this.#o.username ? { username: this.#o.username } : {}),
      ...(this.#o.password ? { password: await this.#o.password() } : {}),
      ...(this.#o.db !== undefined ? { db: this.#o.db } : {}),
      ...(this.#o.tls?.enabled
        ? { tls: { rejectUnauthorized: this.#o.tls.rejectUnauthorized ?? true, ...(this.#o.tls.ca ? { ca: readFileSync(this.#o.tls.ca) } : {}), ...(this.#o.tls.servername ? { servername: this.#o.tls.servername } : {}) } }
        : {}),
      // a command while the store is away fails at once rather than queueing behind a reconnect
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      connectTimeout: Math.max(1000, Math.min(5000, this.#o.leaseMs)),
      retryStrategy: times => Math.min(maxMs, minMs * 2 ** Math.min(times, 16)),
      connectionName: 'portcullis-control',
    }
    const cmd = (this.#cmd = new Redis(base))
    this.#reader = new Redis({ ...base, connectionName: 'portcullis-control-reader' })
    this.#reader.on('error', () => {})
    cmd.on('error', err => {
      this.#error = describe(err)
    })
    cmd.on('close', () => this.#setHealth(false))
    cmd.on('ready', () => {
      this.#up().then(
        () => this.#setHealth(true),
        err => this.#log('control store: renewal after connect failed', { error: describe(err) }),
      )
    })
    // the gateway starts either way: allowed traffic needs no store
    await new Promise<void>(resolve => {
      const done = () => {
        clearTimeout(t)
        resolve()
      }
      const t = setTimeout(done, base.connectTimeout! + 500)
      this.onHealth(done)
      cmd.once('error', done)
    })
    void this.#readLoop()
    this.#timer = setInterval(() => void this.#heartbeat(), this.#o.heartbeatMs)
    this.#timer.unref()
  }

  async close(): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    if (this.#timer) clearInterval(this.#timer)
    if (this.#ok && this.#instance)
      await this.#cmd!.eval(REAP, 0, this.#o.prefix, 'gateway instance shut down', this.#instance.id).catch(() => {})
    this.#reader?.disconnect()
    await this.#cmd?.quit().catch(() => {})
    this.#cmd?.disconnect()
  }

  // ─── approvals ───

  async putRequest(r: ApprovalRequest): Promise<void> {
    await this.#run(c => c.eval(PUT_REQUEST, 0, this.#o.prefix, r.id, JSON.stringify(r), r.instance ?? '', String(r.expires), String(this.#o.retainMs), String(r.minApprovals ?? 1), r.mode ?? 'wait'))
    this.#emit({ kind: 'request', request: r })
  }

  async getRequest(id: string): Promise<ApprovalRequest | undefined> {
    const f = await this.#run(c => c.hgetall(this.#k(`req:${id}`)))
    return f.body ? requestOf(f) : undefined
  }

  async listRequests(): Promise<ApprovalRequest[]> {
    const ids = await this.#run(c => c.zrangebyscore(this.#k('reqs'), Date.now() - this.#o.retainMs, '+inf', 'LIMIT', 0, 10000))
    if (ids.length === 0) return []
    const p = this.#cmd!.pipeline()
    for (const id of ids) p.hgetall(this.#k(`req:${id}`))
    const res = await this.#run(() => p.exec())
    return (res ?? []).map(([, f]) => f as Record<string, string>).filter(f => f.body).map(requestOf)
  }

  async decide(id: string, verdict: RequestVerdict): Promise<ApprovalRequest> {
    if (verdict.vote) return this.#vote(id, verdict)
    const decision = verdict.status === 'approved' || verdict.status === 'denied'
    const g = verdict.grant
    const out = (await this.#run(c =>
      c.eval(
        DECIDE,
        0,
        this.#o.prefix,
        id,
        verdict.status,
        verdict.decidedBy ?? '',
        verdict.reason ?? '',
        decision ? '1' : '0',
        g ? JSON.stringify(g) : '',
        g ? grantKey(g.subject, g.target, g.fingerprint) : '',
        g ? String(g.until) : '0',
        String(this.#o.retainMs),
      ),
    )) as string[]
    switch (out[0]) {
      case 'ok':
        break
      case 'missing':
        throw new PortcullisError('APPROVAL_NOT_FOUND', `no approval request ${id}`, { approvalId: id })
      case 'status':
        throw new PortcullisError('APPROVAL_NOT_PENDING', `approval request ${id} is already ${out[1]}`, { approvalId: id })
      case 'expired':
        throw new PortcullisError('APPROVAL_NOT_PENDING', `approval request ${id} has expired`, { approvalId: id })
      default:
        throw new PortcullisError('APPROVAL_NOT_PENDING', `approval request ${id} is held by a gateway instance that stopped answering`, { approvalId: id })
    }
    const done = (await this.getRequest(id))!
    if (g) this.#emit({ kind: 'grant', grant: g })
    this.#emit({ kind: 'request', request: done })
    return done
  }

  async #vote(id: string, verdict: RequestVerdict): Promise<ApprovalRequest> {
    const vote = verdict.vote!
    const g = verdict.grant
    const out = (await this.#run(c =>
      c.eval(
        VOTE,
        0,
        this.#o.prefix,
        id,
        vote.by,
        JSON.stringify(vote),
        g ? JSON.stringify(g) : '',
        g ? grantKey(g.subject, g.target, g.fingerprint) : '',
        g ? String(g.until) : '0',
        String(this.#o.retainMs),
      ),
    )) as string[]
    switch (out[0]) {
      case 'ok':
        break
      case 'missing':
        throw new PortcullisError('APPROVAL_NOT_FOUND', `no approval request ${id}`, { approvalId: id })
      case 'counted':
        throw new PortcullisError('APPROVAL_ALREADY_COUNTED', `${vote.by} has already approved ${id}; each approver counts once`, { approvalId: id })
      case 'status':
        throw new PortcullisError('APPROVAL_NOT_PENDING', `approval request ${id} is already ${out[1]}`, { approvalId: id })
      case 'expired':
        throw new PortcullisError('APPROVAL_NOT_PENDING', `approval request ${id} has expired`, { approvalId: id })
      default:
        throw new PortcullisError('APPROVAL_NOT_PENDING', `approval request ${id} is held by a gateway instance that stopped answering`, { approvalId: id })
    }
    const done = (await this.getRequest(id))!
    if (g && out[1] === 'approved') this.#emit({ kind: 'grant', grant: g })
    this.#emit({ kind: 'request', request: done })
    return done
  }

  async release(id: string): Promise<ApprovalRequest | undefined> {
    const n = (await this.#run(c => c.eval(RELEASE, 0, this.#o.prefix, id))) as number
    if (n !== 1) return undefined
    const done = await this.getRequest(id)
    if (done) this.#emit({ kind: 'request', request: done })
    return done
  }

  async findGrant(subject: string, target: string, fingerprint: string): Promise<ApprovalGrant | undefined> {
    const v = await this.#run(c => c.get(this.#k(`grant:${grantKey(subject, target, fingerprint)}`)))
    const g = v ? (JSON.parse(v) as ApprovalGrant) : undefined
    return g && g.until > Date.now() ? g : undefined
  }

  async grants(): Promise<ApprovalGrant[]> {
    const keys = await this.#run(c => c.zrangebyscore(this.#k('grants'), Date.now(), '+inf'))
    if (keys.length === 0) return []
    const vals = await this.#run(c => c.mget(...keys.map(k => this.#k(`grant:${k}`))))
    return vals.filter((v): v is string => v !== null).map(v => JSON.parse(v) as ApprovalGrant)
  }

  // ─── revocations, sessions, kills ───

  async revoke(entry: RevocationEntry): Promise<void> {
    const e: RevocationEntry = { ...(entry.subject ? { subject: entry.subject } : {}), ...(entry.jti ? { jti: entry.jti } : {}) }
    const body = JSON.stringify(e)
    await this.#run(c =>
      c.multi().hset(this.#k('revocations'), `${e.subject ?? ''}\u0000${e.jti ?? ''}`, body).xadd(this.#k('changes'), 'MAXLEN', '~', 100000, '*', 'kind', 'revocation', 'body', body).exec(),
    )
    this.#emit({ kind: 'revocation', entry: e })
  }

  async revocations(): Promise<RevocationEntry[]> {
    const vals = await this.#run(c => c.hvals(this.#k('revocations')))
    return vals.map(v => JSON.parse(v) as RevocationEntry)
  }

  async putSessions(sessions: SessionRecord[]): Promise<void> {
    if (sessions.length === 0) return
    const key = this.#k(`sessions:${this.#instance!.id}`)
    const args: string[] = []
    for (const s of sessions) args.push(s.id, JSON.stringify(s))
    await this.#run(c => c.multi().hset(key, ...args).pexpire(key, this.#o.leaseMs * 3).exec())
  }

  async endSession(id: string): Promise<void> {
    await this.#run(c => c.hdel(this.#k(`sessions:${this.#instance!.id}`), id))
  }

  async listSessions(): Promise<SessionRecord[]> {
    const ids = await this.#run(c => c.smembers(this.#k('instances')))
    const out: SessionRecord[] = []
    for (const i of ids) {
      // an instance whose lease lapsed is not answering for its sessions, reaped or not yet
      if (!(await this.#run(c => c.exists(this.#k(`lease:${i}`))))) continue
      for (const v of await this.#run(c => c.hvals(this.#k(`sessions:${i}`)))) out.push(JSON.parse(v) as SessionRecord)
    }
    return out.sort((a, b) => a.started - b.started)
  }

  // a scope's upstream objects: one hash, field target NUL kind NUL id → the owning scope (HSETNX:
  // the first owner keeps it)
  async putObjects(target: string, scope: string, kind: string, ids: string[]): Promise<void> {
    const key = this.#k('objects')
    await this.#run(c => {
      const m = c.multi()
      for (const id of ids) m.hsetnx(key, objectField(target, kind, id), scope)
      return m.exec()
    })
  }

  async ownedObjects(target: string, scope: string, kind: string, ids: string[]): Promise<string[]> {
    const owners = await this.#run(c => c.hmget(this.#k('objects'), ...ids.map(id => objectField(target, kind, id))))
    return ids.filter((_, i) => owners[i] === scope)
  }

  async dropObjects(target: string, scope: string, kind: string, ids: string[]): Promise<void> {
    // an owned id never changes owner (HSETNX), so what is read owned here is this scope's to delete
    const owned = await this.ownedObjects(target, scope, kind, ids)
    if (owned.length > 0) await this.#run(c => c.hdel(this.#k('objects'), ...owned.map(id => objectField(target, kind, id))))
  }

  async kill(request: KillRequest): Promise<void> {
    await this.#run(c => c.xadd(this.#k('changes'), 'MAXLEN', '~', 100000, '*', 'kind', 'kill', 'body', JSON.stringify(request)))
    this.#emit({ kind: 'kill', kill: request })
  }

  // ─── plumbing ───

  #k(name: string) {
    return this.#o.prefix + name
  }

  async #run<T>(fn: (c: Redis) => Promise<T>): Promise<T> {
    if (!this.#ok || !this.#cmd) throw new PortcullisError('CONTROL_STORE_UNAVAILABLE', `control store unavailable: ${this.#error}`)
    try {
      return await fn(this.#cmd)
    } catch (err) {
      if (err instanceof PortcullisError) throw err
      // a reply error (a script's, a wrong type) is not an outage
      if ((err as Error).name === 'ReplyError') throw err
      this.#error = describe(err)
      throw new PortcullisError('CONTROL_STORE_UNAVAILABLE', `control store unavailable: ${describe(err)}`)
    }
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

  #setHealth(ok: boolean) {
    if (this.#ok === ok || this.#closed) return
    this.#ok = ok
    if (ok) this.#error = undefined
    else this.#error ??= 'connection lost'
    const h = this.health()
    for (const fn of [...this.#healthListeners]) fn(h)
  }

  /** after every (re)connect: take the lease, and know where the change stream stands */
  async #up() {
    const c = this.#cmd!
    await this.#renew(c)
    if (this.#lastId === '$') {
      const last = (await c.xrevrange(this.#k('changes'), '+', '-', 'COUNT', 1)) as [string, string[]][]
      this.#lastId = last[0]?.[0] ?? '0-0'
    }
  }

  async #renew(c: Redis) {
    const id = this.#instance!.id
    await c.multi().set(this.#k(`lease:${id}`), JSON.stringify(this.#instance), 'PX', this.#o.leaseMs).sadd(this.#k('instances'), id).pexpire(this.#k(`sessions:${id}`), this.#o.leaseMs * 3).exec()
  }

  async #heartbeat() {
    if (!this.#ok || this.#closed) return
    try {
      const c = this.#cmd!
      await this.#renew(c)
      const dead = (await c.eval(REAP, 0, this.#o.prefix, 'gateway instance stopped answering', '')) as string[]
      if (dead.length > 0) this.#log('control store: instance lease lapsed', { instances: dead })
      const now = Date.now()
      await c.zremrangebyscore(this.#k('reqs'), '-inf', now - this.#o.retainMs)
      await c.zremrangebyscore(this.#k('grants'), '-inf', now)
    } catch (err) {
      this.#error = describe(err)
    }
  }

  /** the change stream: blocks up to pollMs, so it is both the push and the poll */
  async #readLoop() {
    while (!this.#closed) {
      const r = this.#reader!
      if (!this.#ok || this.#lastId === '$' || r.status !== 'ready') {
        await new Promise(res => setTimeout(res, 50))
        continue
      }
      try {
        const res = (await r.xread('COUNT', 1000, 'BLOCK', this.#o.pollMs, 'STREAMS', this.#k('changes'), this.#lastId)) as
          | [string, [string, string[]][]][]
          | null
        for (const [, entries] of res ?? []) {
          for (const [id, flat] of entries) {
            this.#lastId = id
            const f: Record<string, string> = {}
            for (let i = 0; i + 1 < flat.length; i += 2) f[flat[i]!] = flat[i + 1]!
            this.#emit(changeOf(f))
          }
        }
      } catch {
        if (!this.#closed) await new Promise(res => setTimeout(res, 100))
      }
    }
  }
}

function changeOf(f: Record<string, string>): ControlChange {
  switch (f.kind) {
    case 'request':
      return { kind: 'request', request: requestOf(f) }
    case 'grant':
      return { kind: 'grant', grant: JSON.parse(f.body!) as ApprovalGrant }
    case 'revocation':
      return { kind: 'revocation', entry: JSON.parse(f.body!) as RevocationEntry }
    default:
      return { kind: 'kill', kill: JSON.parse(f.body!) as KillRequest }
  }
}
