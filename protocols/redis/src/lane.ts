// A lane: one upstream connection per target shared by every session that only sends commands
// which bind no connection state (what twemproxy does). Every session logs in upstream with the
// gateway's own credential anyway, so their stateless commands can share one connection: the
// requests of all sessions queued in one event-loop turn leave as one write, and the replies of one
// read are handed back in the order the commands went out. Which commands may use a lane is
// laneSafe()'s call; a session leaves its lane for a connection of its own before any other.
import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { readFileSync } from 'node:fs'
import type { Session, TargetConfig } from '@portcullis/core'
import { ReplyFramer, type RedisReply } from './reply-framer.ts'
import { BUILTIN_COMMANDS, tableFromCommandReply, type CommandMeta, type CommandTable } from './commands.ts'
import { decodeReply, plainValue } from './reply.ts'
import { encodeCommand } from './resp.ts'
import { Pieces } from './pieces.ts'

/** what a session gives a lane to answer its commands */
export interface LaneUser {
  /** the reply to a command this user sent, in the order it sent them */
  laneReply(slot: object, reply: RedisReply): void
  /** the lane's connection ended before this command's reply came */
  laneLost(slot: object): void
  /** the end of one upstream read that carried replies for this user */
  laneReadDone(): void
  /** the lane can take writes again after it was full */
  laneDrained(): void
}

interface Entry {
  user: LaneUser | undefined
  slot: object
  /** the lane's own commands (login, COMMAND) */
  onReply?: (reply: RedisReply | undefined) => void
}

/** opens the connection to a target's upstream, TLS as configured */
export function connectUpstream(target: TargetConfig): { sock: Socket; ready: string } {
  const up = target.upstream
  const host = up.host ?? '127.0.0.1'
  const port = up.port ?? 6379
  const sock: Socket = up.tls?.enabled
    ? tlsConnect({
        host,
        port,
        servername: up.tls.servername ?? host,
        rejectUnauthorized: up.tls.rejectUnauthorized ?? true,
        ...(up.tls.ca ? { ca: readFileSync(up.tls.ca) } : {}),
      })
    : netConnect({ host, port })
  // each burst is one write already: Nagle would only hold it back for an ACK
  sock.setNoDelay(true)
  return { sock, ready: up.tls?.enabled ? 'secureConnect' : 'connect' }
}

/** the gateway's own AUTH for a target, or undefined when the upstream takes none */
export async function upstreamAuthCommand(session: Session): Promise<Buffer | undefined> {
  const up = session.target.upstream
  if (!up.password) return undefined
  const password = await session.secret(up.password)
  return encodeCommand(up.user ? ['AUTH', up.user, password] : ['AUTH', password])
}

/** the gateway's own upstream login failed: what the client is told (never the upstream's address) */
export class UpstreamLoginError extends Error {}

/**
 * Why the reply to the gateway's login (its AUTH, or the first command when it has no credential)
 * says it is not logged in; undefined when it is. Without a credential only NOAUTH counts: an ACL
 * that forbids the probe still means a login.
 */
export function loginRefusal(r: RedisReply, authSent: boolean): string | undefined {
  if (r.type !== 0x2d) return authSent && r.type !== 0x2b ? 'Portcullis could not log in to the upstream: unexpected reply to AUTH' : undefined
  const text = r.raw.toString('utf8', 1, Math.min(r.raw.length - 2, 201))
  if (!authSent && !text.startsWith('NOAUTH')) return undefined
  const hint = authSent ? '' : ' (no upstream credential is configured for this target)'
  return `Portcullis could not log in to the upstream: ${text}${hint}`
}

const lanes = new Map<string, Lane>()

/** the lane of a session's target: the open one, or a new one logging in */
export function laneFor(session: Session, tables: Map<string, CommandTable>): Lane {
  const t = session.target
  const up = t.upstream
  const key = `${t.name} ${up.host ?? '127.0.0.1'}:${up.port ?? 6379} ${up.user ?? ''} ${up.tls?.enabled ? 'tls' : ''}`
  let lane = lanes.get(key)
  if (lane === undefined || lane.broken) {
    lane = new Lane(key, session, tables)
    lanes.set(key, lane)
  }
  return lane
}

export class Lane {
  /** resolves once logged in (and the command table is known); rejects with why not */
  readonly ready: Promise<void>
  isReady = false
  broken = false
  /** the upstream buffer is over its high-water mark: users stop reading their clients */
  blocked = false
  private readonly sock: Socket
  private readonly replies: ReplyFramer
  private readonly inFlight: Entry[] = []
  private head = 0
  private readonly out = new Pieces()
  private writeScheduled = false
  private users = 0
  private readonly waiting = new Set<LaneUser>()
  private readonly touched: LaneUser[] = []

  constructor(private readonly key: string, session: Session, tables: Map<string, CommandTable>) {
    const target = session.target
    this.replies = new ReplyFramer(target.limits.maxMessageBytes)
    const { sock, ready } = connectUpstream(target)
    this.sock = sock
    sock.on('data', (chunk: Buffer) => this.onData(chunk))
    sock.on('drain', () => {
      this.blocked = false
      for (const u of this.waiting) u.laneDrained()
      this.waiting.clear()
    })
    sock.on('error', () => this.fail())
    sock.on('close', () => this.fail())
    // listened for now: the connection may be up before the credential is read
    const connected = new Promise<void>((resolve, reject) => {
      sock.once(ready, resolve)
      sock.once('close', () => reject(new Error('upstream connection lost')))
    })
    connected.catch(() => {})
    this.ready = this.login(session, tables, connected)
    // a lane that fails before anyone waits on it must not be an unhandled rejection
    this.ready.catch(() => {})
  }

  private async login(session: Session, tables: Map<string, CommandTable>, connected: Promise<void>): Promise<void> {
    const auth = await upstreamAuthCommand(session)
    if (this.broken) throw new Error('upstream connection lost')
    const internal = (cmd: Buffer): Promise<RedisReply | undefined> =>
      new Promise(resolve => {
        this.inFlight.push({ user: undefined, slot: this, onReply: resolve })
        this.out.add(cmd)
        this.scheduleWrite()
      })
    // the login goes first; its reply is checked, never shown to anyone
    const login = auth ? internal(auth) : undefined
    // named, so that an operator sees it in CLIENT LIST (and a test can find it)
    const named = internal(encodeCommand(['CLIENT', 'SETNAME', 'portcullis-lane']))
    await connected
    // without a credential the CLIENT SETNAME is the probe: NOAUTH means the upstream wants a login
    for (const [reply, authSent] of [[login, true], [named, false]] as const) {
      if (reply === undefined) continue
      const r = await reply
      if (r === undefined) throw new Error('upstream connection lost')
      const why = authSent || !auth ? loginRefusal(r, authSent) : undefined
      if (why !== undefined) {
        this.fail()
        throw new UpstreamLoginError(why)
      }
    }
    const target = session.target
    const tableKey = `${target.name} ${target.upstream.host}:${target.upstream.port}`
    if (!tables.has(tableKey) && target.options.commandInfo !== 'builtin') {
      const r = await internal(encodeCommand(['COMMAND']))
      // an ACL that forbids COMMAND leaves the built-in table in charge
      if (r !== undefined && r.type === 0x2a) {
        try {
          tables.set(tableKey, tableFromCommandReply(plainValue(decodeReply(r.raw)) as unknown[]))
        } catch {
          // a reply we cannot read changes nothing
        }
      }
    }
    if (this.broken) throw new Error('upstream connection lost')
    this.isReady = true
    // every session that asked for it may have left while it logged in (a client that resets the
    // connection right after its AUTH): a lane nobody uses is not kept open for the next one
    this.maybeClose()
  }

  /** a session starts using this lane */
  attach(): void {
    this.users++
  }

  /** a session stops using it: the last one out closes it once its replies are in */
  detach(): void {
    this.users--
    this.maybeClose()
  }

  private maybeClose(): void {
    if (this.users <= 0 && this.head === this.inFlight.length && this.isReady && !this.broken) {
      this.broken = true
      if (lanes.get(this.key) === this) lanes.delete(this.key)
      this.sock.end()
    }
  }

  /** queues one command; it leaves with everything else queued in this event-loop turn */
  send(user: LaneUser, slot: object, raw: Buffer): void {
    this.inFlight.push({ user, slot })
    this.out.add(raw)
    this.scheduleWrite()
  }

  /** a blocked lane calls the user back when it drains */
  waitDrain(user: LaneUser): void {
    this.waiting.add(user)
  }

  private scheduleWrite(): void {
    if (this.writeScheduled) return
    this.writeScheduled = true
    // after the poll phase: every client read of this turn has queued its commands by then
    setImmediate(this.writeOut)
  }

  private readonly writeOut = (): void => {
    this.writeScheduled = false
    if (this.broken || this.out.empty) return
    if (!this.sock.write(this.out.take())) this.blocked = true
  }

  private onData(chunk: Buffer): void {
    if (this.broken) return
    let replies: RedisReply[]
    try {
      replies = this.replies.push(chunk)
    } catch {
      this.fail()
      return
    }
    const touched = this.touched
    for (const r of replies) {
      if (this.head >= this.inFlight.length) {
        // a reply nobody asked for: the connection is out of step, and nothing on it can be trusted
        this.fail()
        return
      }
      const e = this.inFlight[this.head]!
      this.inFlight[this.head++] = undefined as unknown as Entry
      if (e.user === undefined) e.onReply?.(r)
      else {
        e.user.laneReply(e.slot, r)
        if (!touched.includes(e.user)) touched.push(e.user)
      }
    }
    this.compact()
    for (const u of touched) u.laneReadDone()
    touched.length = 0
    this.maybeClose()
  }

  private compact(): void {
    if (this.head === this.inFlight.length) {
      this.inFlight.length = 0
      this.head = 0
    } else if (this.head > 1024 && this.head * 2 > this.inFlight.length) {
      this.inFlight.splice(0, this.head)
      this.head = 0
    }
  }

  /** the connection is gone: every command in flight on it gets an error, nothing else does */
  private fail(): void {
    if (this.broken && this.head === this.inFlight.length) {
      this.sock.destroy()
      return
    }
    this.broken = true
    if (lanes.get(this.key) === this) lanes.delete(this.key)
    this.sock.destroy()
    const entries = this.inFlight.slice(this.head)
    this.inFlight.length = 0
    this.head = 0
    const touched: LaneUser[] = []
    for (const e of entries) {
      if (e.user === undefined) e.onReply?.(undefined)
      else {
        e.user.laneLost(e.slot)
        if (!touched.includes(e.user)) touched.push(e.user)
      }
    }
    for (const u of touched) u.laneReadDone()
    for (const u of this.waiting) u.laneDrained()
    this.waiting.clear()
  }
}

// ---- which commands may share a lane ----------------------------------------------------------------

// ACL categories of commands that bind or wait on their connection: a lane is shared, so they get a
// connection of their own (SELECT, CLIENT *, HELLO, RESET, READONLY, WAIT: connection; MULTI, WATCH:
// transaction; BLPOP, XREAD: blocking; SUBSCRIBE: pubsub)
const STATEFUL_ACL = ['connection', 'transaction', 'blocking', 'pubsub']
// harmless members of those categories
const LANE_ANYWAY = new Set(['ping', 'echo', 'publish', 'spublish', 'pubsub'])
const safeCache = new WeakMap<CommandTable, Map<string, boolean>>()

function metaSafe(meta: CommandMeta): boolean {
  if (meta.flags.includes('blocking')) return false
  for (const c of STATEFUL_ACL) if (meta.acl.includes(c)) return false
  return true
}

/**
 * May this command go on a shared lane? Only a command Redis's metadata (or the upstream's) knows,
 * that binds no connection state and cannot block its connection. SELECT 0 may: a lane stays on db 0.
 */
export function laneSafe(name: string, args: Buffer[], table: CommandTable | undefined): boolean {
  const t = table ?? BUILTIN_COMMANDS
  let cache = safeCache.get(t)
  if (cache === undefined) safeCache.set(t, (cache = new Map()))
  if (name === 'SELECT') return args.length === 2 && args[1]!.length === 1 && args[1]![0] === 0x30
  // by the upper-case name the caller has: no string per command once known
  const known = cache.get(name)
  if (known !== undefined) return known
  const base = name.toLowerCase()
  let safe: boolean
  const meta = t.get(base) ?? BUILTIN_COMMANDS.get(base)
  if (LANE_ANYWAY.has(base)) safe = true
  else if (meta === undefined) safe = false
  else if (meta.sub !== undefined) {
    // a container (CLIENT, CONFIG, OBJECT…): the container's categories, then the subcommand's
    if (!metaSafe(meta)) safe = false
    else {
      const sub = args.length > 1 ? meta.sub[args[1]!.toString('latin1').toLowerCase()] : undefined
      // not cached by base: the answer depends on the subcommand
      return sub !== undefined && metaSafe(sub)
    }
  } else safe = metaSafe(meta)
  cache.set(name, safe)
  return safe
}
