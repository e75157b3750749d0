// One client connection, what its commands mean: frames requests, authenticates with a token,
// decides each command, and forwards allowed ones upstream, over the target's shared lane or the
// session's own connection. Every request takes a slot in the queue of session-io.ts, answered by
// the upstream or locally (a refusal, AUTH), so a refused command is answered in its place and
// pipelines stay aligned. Out-of-band pushes (RESP3 '>' frames, RESP2 pub/sub messages) take no slot.
import type { Duplex } from 'node:stream'
import { isPortcullisError, type Decision, type Estimator, type Session } from '@portcullis/core'
import { CommandNames, operationOf } from './operations.ts'
import { scopeVerdict } from './scope.ts'
import { maskFree, type MaskContext } from './mask.ts'
import { maskRefusal, searchAliases } from './mask-paths.ts'
import type { RedisReply } from './reply-framer.ts'
import { RequestFramer } from './request-framer.ts'
import { encodeCommand, errorReply, NOAUTH, OK } from './resp.ts'
import { Pieces } from './pieces.ts'
import { pendingReply, sentCommand } from './approval.ts'
import { laneFor, laneSafe, UpstreamLoginError, type Lane, type LaneUser } from './lane.ts'
import { HELD_HARD, HELD_SOFT, HIGH_WATER, LOST, SessionIO, upstreamTables, type Req, type Slot } from './session-io.ts'
import { redisEstimator } from './estimate.ts'
import { carriesToken, parseHello } from './hello.ts'

const PUBSUB_SUBSCRIBE = new Set(['SUBSCRIBE', 'PSUBSCRIBE', 'SSUBSCRIBE', 'UNSUBSCRIBE', 'PUNSUBSCRIBE', 'SUNSUBSCRIBE'])
const LANE_WINDOW_MAX = HIGH_WATER
const UNSUPPORTED = new Set(['MONITOR', 'SYNC', 'PSYNC'])
const PONG = Buffer.from('+PONG\r\n')
const EMPTY = Buffer.alloc(0)

export async function serveRedis(client: Duplex, session: Session): Promise<void> {
  const conn = new RedisConnection(client, session)
  return conn.done
}

class RedisConnection extends SessionIO implements LaneUser {
  private readonly framer: RequestFramer
  private recordedTo = 0
  private upstreamReady: Promise<void> | undefined
  // multiplexing (target.options.multiplex, on unless false): the session's stateless commands
  // share its target's lane until a command that binds connection state moves it to its own
  private onLane: boolean
  /** the session SELECTed a database other than 0 (estimate.ts) */
  private dbMoved = false
  private lane: Lane | undefined
  private laneInFlight = 0
  private laneIdle: (() => void) | undefined
  // commands this session may have in flight on the lane, and the largest reply it was sent
  private laneWindow = 1
  private largestReply = 0
  private windowOpen: (() => void) | undefined
  private inMulti = false
  private multiAborted = false
  private multiQueue: MaskContext[] = []
  private readonly names = new CommandNames()

  constructor(client: Duplex, session: Session) {
    super(client, session)
    this.framer = new RequestFramer({ maxBulk: session.target.limits.maxMessageBytes })
    this.onLane = session.target.options.multiplex !== false
  }

  protected onClose(): void {
    this.windowOpen?.()
    this.lane?.detach()
    this.lane = undefined
  }

  protected onClientData(chunk: Buffer): void {
    if (this.closed || this.readingStopped) return
    const reqs: Req[] = this.framer.push(chunk, 'stop')
    if (this.framer.error !== undefined) {
      // answer what came before in order, then the error, then close
      this.readingStopped = true
      this.client.pause()
      reqs.push({ args: [], raw: EMPTY, inline: true, protocolError: this.framer.error })
    }
    if (reqs.length === 0) return
    for (const r of reqs) this.inboxBytes += r.raw.length
    if (this.inHead === this.inbox.length) {
      this.inbox = reqs
      this.inHead = 0
      this.recordedTo = 0
    } else for (const r of reqs) this.inbox.push(r)
    // requests waiting (on an approval, the lane's window) are bounded in number and in bytes
    if (this.inbox.length - this.inHead + this.slots.length > HIGH_WATER || this.inboxBytes > HELD_SOFT) this.pauseReading()
    this.pump()
  }

  /**
   * Handles queued requests in one synchronous loop: a pipeline read in one chunk is decided,
   * forwarded and answered without a promise per command, and leaves as one write each way. Only a
   * command that must wait (an approval, AUTH, the first connection upstream) suspends the loop.
   */
  private pump(): void {
    if (this.processing) return
    // the round trip's decisions go into one recording record (Session.holdDecisions)
    this.session.holdDecisions?.()
    try {
      this.pumpHeld()
    } finally {
      this.session.releaseDecisions?.()
    }
  }

  private pumpHeld(): void {
    this.now = Date.now()
    while (this.inHead < this.inbox.length && !this.closed) {
      const req = this.inbox[this.inHead++]!
      this.inboxBytes -= req.raw.length
      let wait: Promise<void> | void
      try {
        wait = this.handle(req)
      } catch (err) {
        this.fail(errorReply('ERR', `internal error: ${(err as Error).message}`))
        return
      }
      if (wait !== undefined) {
        this.processing = true
        this.flush()
        wait.then(
          () => {
            this.processing = false
            this.pump()
          },
          (err: unknown) => {
            this.processing = false
            this.fail(errorReply('ERR', `internal error: ${(err as Error).message}`))
          },
        )
        return
      }
    }
    if (this.inHead === this.inbox.length) {
      this.inbox = []
      this.inHead = this.recordedTo = 0
    }
    this.flush()
    this.maybeResume()
    this.maybeFinish()
  }

  /**
   * One 'request' record for the requests queued from the current one on: their frames exactly as
   * sent (AUTH and HELLO left out: they may carry a token), usually one view of the bytes read.
   */
  private recordRequests(): void {
    const from = this.inHead - 1
    if (this.recordedTo > from) return
    const inbox = this.inbox
    const raw = new Pieces()
    let commands = ''
    let n = 0
    for (let i = from; i < inbox.length; i++) {
      const r = inbox[i]!
      if (r.protocolError !== undefined || carriesToken(r.args[0])) continue
      raw.add(r.raw)
      const name = (r.name ??= this.names.of(r.args[0]!))
      if (n < 8) commands = n === 0 ? name : `${commands}; ${name}`
      n++
    }
    this.recordedTo = inbox.length
    if (n === 0) return
    if (n > 8) commands += `; … (${n} commands)`
    const request = { command: commands, raw: raw.take() }
    // a single command (every round trip of a client that does not pipeline) is recorded inside its
    // decision's record (Session.holdRequest): two records a round trip instead of three
    if (n === 1 && this.session.holdRequest !== undefined) this.session.holdRequest(request)
    else this.session.record('request', request)
  }

  /** the operation a request is, from the cache when this frame was seen before */
  /** handles one request; a promise when it must wait (the loop then waits for it) */
  private handle(req: Req): Promise<void> | void {
    if (req.protocolError !== undefined) {
      this.localReply(errorReply('ERR', `Protocol error: ${req.protocolError}`), () => this.close())
      return
    }
    const name = (req.name ??= this.names.of(req.args[0]!))
    const s = this.session
    // another database than a fresh connection's: estimates would count the wrong keys (sticky)
    if (name === 'SELECT' && req.args[1]?.toString('latin1') !== '0') this.dbMoved = true

    if (name === 'AUTH') return this.auth(req)
    if (name === 'HELLO') return this.hello(req)
    if (name === 'QUIT') {
      // like Redis: +OK once what came before is answered, then close; what came after is not run
      this.readingStopped = true
      this.inHead = this.inbox.length
      this.inboxBytes = 0
      this.localReply(OK, () => this.close())
      return
    }
    if (!s.principal) {
      if (name === 'PING' && s.target.options.pingBeforeAuth === true) this.localReply(PONG)
      else this.localReply(NOAUTH)
      return
    }
    try {
      s.assertAlive()
    } catch (err) {
      if (isPortcullisError(err, 'TOKEN_EXPIRED')) this.localReply(errorReply('ERR', 'token expired; AUTH again'))
      else this.fail(errorReply('ERR', `session ended: ${(err as Error).message}`))
      return
    }
    this.recordRequests()
    const unsupported = name === 'CLIENT' && req.args[1]?.toString('latin1').toUpperCase() === 'REPLY' ? 'CLIENT REPLY' : UNSUPPORTED.has(name) ? name : undefined
    if (unsupported) {
      // they change how many replies a command gets (none, or an endless stream): the reply order
      // every pipeline relies on would be lost
      this.localReply(errorReply('ERR', `${unsupported} is not supported through the gateway`))
      return
    }

    const op = operationOf(this.session.target, req, this.classify, this.names.lower(req.args[0]!, name))
    const slot: Slot = { expect: 1, op, started: this.now, bytes: 0, masked: 0 }
    let decision: Decision | undefined
    if (op.class === 'session') {
      // connection bookkeeping (PING, SELECT, MULTI, WATCH, CLIENT SETNAME…) needs no rule
      decision = { action: 'allow', rule: null, reason: 'session command', masks: s.masks }
    } else {
      try {
        const estimator = this.estimatorOf(req, name, false)
        decision = estimator ? s.decideNow(op, { estimator }) : s.decideNow(op)
      } catch (err) {
        this.decideFailed(err, slot)
        return
      }
      // an approval to wait for: this command and those after it wait
      if (decision === undefined) return this.decideLater(req, name, slot)
    }
    return this.decided(req, name, slot, decision)
  }

  private async decideLater(req: Req, name: string, slot: Slot): Promise<void> {
    let decision: Decision
    try {
      const estimator = this.estimatorOf(req, name, true)
      decision = await this.session.decide(slot.op!, {
        signal: this.aborter.signal,
        defer: this.session.target.options.approvalMode === 'defer',
        sent: () => sentCommand(req.args, slot.op!.resources, this.session.masks),
        ...(estimator ? { estimator } : {}),
      })
    } catch (err) {
      if (!this.closed) this.decideFailed(err, slot)
      return
    }
    if (this.closed) return
    this.now = Date.now()
    return this.decided(req, name, slot, decision)
  }

  /**
   * The blast-radius estimator of a multi-key delete or FT.DROPINDEX … DD (estimate.ts); built for
   * decideNow only when a rule names its facts, for decide() (an approval may follow) always.
   */
  private estimatorOf(req: Req, name: string, always: boolean): Estimator | undefined {
    if (name !== 'DEL' && name !== 'UNLINK' && name !== 'FT.DROPINDEX' && name !== 'FT.DROP') return undefined
    const est = redisEstimator(this.session, name, req.args, this.dbMoved)
    if (!est || (!always && !this.session.estimates?.(est.facts))) return undefined
    return est
  }

  private decideFailed(err: unknown, slot: Slot): void {
    slot.error = (err as Error).message
    if (isPortcullisError(err, 'TOKEN_EXPIRED')) this.refuse(errorReply('ERR', 'token expired; AUTH again'), slot)
    else if (isPortcullisError(err, 'RECORDING_FAILED') || isPortcullisError(err, 'AUDIT_FAILED')) this.refuse(errorReply('ERR', (err as Error).message), slot)
    else this.fail(errorReply('ERR', `session ended: ${(err as Error).message}`))
  }

  private decided(req: Req, name: string, slot: Slot, decision: Decision): Promise<void> | void {
    slot.decision = decision
    if (decision.action === 'allow' && this.session.scope) {
      // the target's scope (scope.ts): keys, channels, indexes; a rewrite (SCAN MATCH, a tag filter) runs in its place
      const verdict = scopeVerdict(req.args, this.session.scope, this.classify.table)
      if (verdict && 'refuse' in verdict) {
        slot.error = verdict.refuse
        this.session.record('event', { event: 'scope-refused', command: name, reason: verdict.refuse })
        this.refuse(errorReply('NOPERM', verdict.refuse), slot)
        return
      }
      if (verdict) {
        this.session.record('event', { event: 'scope-applied', command: name, applied: verdict.applied })
        req = { ...req, args: verdict.args, raw: encodeCommand(verdict.args), inline: false }
      }
    }
    if (decision.action !== 'allow') {
      const reply = decision.deferred
        ? pendingReply(decision)
        : decision.approvalId
        ? errorReply('ERR', `approval ${decision.approvalId} ${decision.reason.replace(/^approval \S+ /, '')}`)
        : errorReply('NOPERM', decision.rule ? `blocked by rule ${decision.rule}: ${decision.reason}` : `blocked: ${decision.reason}`)
      slot.error = decision.reason
      this.refuse(reply, slot)
      return
    }
    slot.masks = decision.masks
    // worked out per command, not looked up: a map by Operation per session held every key's entry
    // 50 times over (one per client) and cost more than the check (an empty-map lookup and a glob
    // test per key)
    if (!decision.masks.empty && !(slot.maskFree = maskFree(name, slot.op!.statements[0]?.facts?.command, slot.op!.resources, decision.masks))) {
      // a reply that would carry masked data in a shape masking does not know is refused unsent
      const why = maskRefusal(name, req.args, slot.op!.resources, decision.masks, this.classify.table)
      if (why !== undefined) {
        slot.error = why
        this.refuse(errorReply('NOPERM', `masking: ${why}`), slot)
        return
      }
    }
    if (this.onLane) {
      if (name === 'CLIENT' && req.args.length === 4 && req.args[1]!.length === 7 && req.args[1]!.toString('latin1').toUpperCase() === 'SETINFO') {
        // what a client library says of itself on connecting (ioredis, redis-py, node-redis): shown
        // only by CLIENT LIST upstream, where a lane stands for many clients anyway. Taken here, in
        // its place, so that those clients can share a lane
        slot.expect = 0
        slot.local = OK
        this.slots.push(slot)
        return
      }
      if (!laneSafe(name, req.args, this.classify.table)) return this.leaveLane(req, name, slot)
      return this.viaLane(req, name, slot)
    } else if (this.upstream === undefined) return this.forwardWhenConnected(req, name, slot)
    this.forward(req, name, slot)
  }

  /** a lane-safe command: on the lane within the session's window, or off it for a slow reader */
  private viaLane(req: Req, name: string, slot: Slot): Promise<void> | void {
    // a client that does not take its replies: its own connection, where Redis holds the backlog
    if (this.heldBytes() >= HELD_SOFT) return this.leaveLane(req, name, slot)
    if (this.lane === undefined || !this.lane.isReady || this.lane.broken) return this.forwardWhenConnected(req, name, slot)
    if (this.laneInFlight >= this.laneWindow) return this.windowThen(req, name, slot)
    this.forward(req, name, slot)
  }

  private async windowThen(req: Req, name: string, slot: Slot): Promise<void> {
    await new Promise<void>(resolve => (this.windowOpen = resolve))
    if (this.closed) return
    if (this.onLane) return this.viaLane(req, name, slot)
    return this.forwardWhenConnected(req, name, slot)
  }

  /**
   * Moves the session from its lane to a connection of its own, for good: once the replies of what
   * it sent on the lane are in, so that its commands still run upstream in the order it sent them.
   */
  private async leaveLane(req: Req, name: string, slot: Slot): Promise<void> {
    await this.leave()
    await this.ensureUpstream()
    if (!this.closed) this.forward(req, name, slot)
  }

  private async leave(): Promise<void> {
    this.onLane = false
    if (this.laneInFlight > 0) await new Promise<void>(resolve => (this.laneIdle = resolve))
    this.lane?.detach()
    this.lane = undefined
  }


  laneReply(slot: object, reply: RedisReply): void {
    if (this.closed) return
    this.laneInFlight--
    const before = this.heldBytes()
    this.deliver(slot as Slot, reply)
    if (before >= HELD_SOFT && this.heldBytes() > HELD_HARD) {
      // replies in flight on the lane pile up for a client that takes none: it is dropped (the
      // lane reads and discards the rest) rather than held without bound
      this.close()
      return
    }
    const size = reply.raw.length
    if (size > this.largestReply) this.largestReply = size
    this.laneWindow = Math.max(1, Math.min(LANE_WINDOW_MAX, this.laneWindow + 1, Math.floor(HELD_SOFT / this.largestReply)))
    this.laneTurn()
  }

  /** the lane answered (or lost) one of this session's commands */
  private laneTurn(): void {
    if (this.laneInFlight === 0) this.laneSettled()
    if (this.windowOpen !== undefined && this.laneInFlight < this.laneWindow) {
      const open = this.windowOpen
      this.windowOpen = undefined
      open()
    }
  }

  laneLost(slot: object): void {
    if (this.closed) return
    this.laneInFlight--
    // only the commands in flight on the lane fail; the session goes on (a new lane next time)
    const s = slot as Slot
    const lost = errorReply('ERR', LOST)
    s.expect = 0
    s.local = s.local ? Buffer.concat([s.local, lost]) : lost
    s.error = LOST
    this.laneTurn()
  }

  private laneSettled(): void {
    const idle = this.laneIdle
    this.laneIdle = undefined
    idle?.()
  }

  laneReadDone(): void {
    if (this.closed) return
    this.now = Date.now()
    this.recordResponses()
    this.flush()
    this.maybeResume()
  }

  laneDrained(): void {
    this.upstreamBlocked = false
    this.maybeResume()
  }

  private async ensureLane(): Promise<void> {
    if (this.lane === undefined || this.lane.broken) {
      this.lane?.detach()
      this.lane = laneFor(this.session, upstreamTables)
      this.lane.attach()
    }
    const lane = this.lane
    try {
      await lane.ready
    } catch (err) {
      this.fail(errorReply('ERR', err instanceof UpstreamLoginError ? err.message : LOST))
      return
    }
    if (this.closed) return
    if (lane.broken) {
      this.fail(errorReply('ERR', LOST))
      return
    }
    const t = this.session.target
    const table = upstreamTables.get(`${t.name} ${t.upstream.host}:${t.upstream.port}`)
    if (table) this.classify.table = table
  }

  private refuse(reply: Buffer, slot: Slot): void {
    // a refused command inside MULTI is a queuing error: EXEC must then fail as Redis fails it
    if (this.inMulti) this.multiAborted = true
    slot.expect = 0
    slot.local = reply
    this.slots.push(slot)
  }

  private async forwardWhenConnected(req: Req, name: string, slot: Slot): Promise<void> {
    await this.ensureUpstream()
    if (this.closed) return
    // a lane just opened: the window still applies
    if (this.onLane && this.laneInFlight >= this.laneWindow) return this.windowThen(req, name, slot)
    this.forward(req, name, slot)
  }

  private forward(req: Req, name: string, slot: Slot): void {
    let raw = req.raw
    let ctx: MaskContext | undefined
    if (!slot.masks!.empty && (this.inMulti || slot.maskFree !== true)) {
      const command = slot.op!.statements[0]?.facts?.command
      ctx = { name: command === undefined ? name : firstWord(String(command)), args: req.args }
      const aliases = searchAliases(ctx.name, req.args, slot.masks!)
      if (aliases) ctx.aliases = aliases
    }
    if (req.inline) raw = encodeCommand(req.args) // the upstream may not take inline input as we split it
    switch (name) {
      case 'MULTI':
        this.inMulti = true
        this.multiAborted = false
        this.multiQueue = []
        break
      case 'EXEC':
        if (this.inMulti && this.multiAborted) {
          raw = encodeCommand(['DISCARD'])
          slot.replace = errorReply('EXECABORT', 'Transaction discarded because of previous errors.')
        } else slot.exec = this.multiQueue
        this.endMulti()
        break
      case 'DISCARD':
        this.endMulti()
        break
      case 'RESET':
        this.endMulti()
        this.subscribed = false
        this.resp = 2
        break
      default:
        if (this.inMulti) this.multiQueue.push(ctx ?? { name, args: req.args })
        else if (ctx) slot.mask = ctx
    }
    if (PUBSUB_SUBSCRIBE.has(name) && !this.inMulti && (req.args.length > 1 || name.endsWith('UNSUBSCRIBE'))) {
      // confirmations arrive as pushes, one per channel: they take no slot
      slot.expect = 0
      if (this.resp === 2) this.subscribed = true
    }
    this.slots.push(slot)
    if (this.onLane) {
      const lane = this.lane!
      this.laneInFlight++
      lane.send(this, slot, raw)
      if (lane.blocked) {
        this.upstreamBlocked = true
        this.pauseReading()
        lane.waitDrain(this)
      }
    } else this.toUpstream(raw)
    if (name === 'RESET' && this.upstreamAuthCommand) {
      // RESET drops the upstream's authentication too: log the gateway back in, silently
      this.slots.push({ expect: 1, drop: true, started: 0, bytes: 0, masked: 0 })
      this.toUpstream(this.upstreamAuthCommand)
    }
  }

  private endMulti(): void {
    this.inMulti = false
    this.multiAborted = false
    this.multiQueue = []
  }


  private async authenticate(token: string): Promise<Buffer | undefined> {
    try {
      await this.session.authenticate(token)
    } catch (err) {
      const reason = isPortcullisError(err) ? err.message : 'authentication failed'
      return errorReply('WRONGPASS', reason)
    }
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer)
    return undefined
  }

  private async auth(req: Req): Promise<void> {
    // never recorded: it carries the token
    if (req.args.length < 2 || req.args.length > 3) {
      this.localReply(errorReply('ERR', "wrong number of arguments for 'auth' command"))
      return
    }
    const refused = await this.authenticate(req.args[req.args.length - 1]!.toString('utf8'))
    if (refused) return this.localReply(refused)
    await this.ensureUpstream()
    if (!this.closed) this.localReply(OK)
  }

  private async hello(req: Req): Promise<void> {
    const hello = parseHello(req.args.map(a => a.toString('utf8')))
    if (Buffer.isBuffer(hello)) return this.localReply(hello)
    const { version, token, setname } = hello
    if (token !== undefined) {
      const refused = await this.authenticate(token)
      if (refused) return this.localReply(refused)
    } else if (!this.session.principal) {
      return this.localReply(errorReply('NOAUTH', 'HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time'))
    }
    this.session.record('request', { command: 'HELLO', ...(version !== undefined ? { protover: version } : {}) })
    // HELLO changes the connection (protocol, name): the session's own, not a lane
    if (this.onLane) await this.leave()
    await this.ensureUpstream()
    if (this.closed) return
    // the client's protocol version goes upstream so that RESP3 works end to end; its AUTH does not
    const upstreamArgs = version === undefined ? ['HELLO'] : ['HELLO', String(version), ...(setname !== undefined ? ['SETNAME', setname] : [])]
    if (version !== undefined) this.resp = version
    this.slots.push({ expect: 1, started: 0, bytes: 0, masked: 0 })
    this.toUpstream(encodeCommand(upstreamArgs))
  }


  private ensureUpstream(): Promise<void> {
    if (this.onLane) return this.ensureLane()
    this.upstreamReady ??= this.connectUpstream()
    return this.upstreamReady
  }
}

/** 'XINFO STREAM' → 'XINFO' (no array per masked command) */
function firstWord(s: string): string {
  const sp = s.indexOf(' ')
  return sp < 0 ? s : s.slice(0, sp)
}
