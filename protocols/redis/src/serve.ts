// One client connection: frames requests, authenticates with a token, decides each command, and
// forwards allowed ones upstream over the gateway's own connection. Replies go back in request order:
// every request takes a slot in a queue, answered either by the upstream (in order, as Redis answers)
// or locally (a refusal, AUTH), so a refused command is answered in its place and pipelines stay
// aligned. Out-of-band pushes (RESP3 '>' frames, RESP2 pub/sub messages) take no slot.
import { connect as netConnect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { readFileSync } from 'node:fs'
import type { Duplex } from 'node:stream'
import { isPortcullisError, type Decision, type MaskPlan, type Operation, type Session } from '@portcullis/core'
import { classifyCommand, toOperation, type ClassifyOptions } from './classify.ts'
import { maskExecReply, maskReply, type MaskContext } from './mask.ts'
import { ReplyFramer, type RedisReply } from './reply-framer.ts'
import { decodeReply, plainValue } from './reply.ts'
import { tableFromCommandReply, type CommandTable } from './commands.ts'
import { RequestFramer, type RedisRequest } from './request-framer.ts'
import { encodeCommand, errorReply, NOAUTH, OK } from './resp.ts'

interface Slot {
  /** local reply, ready to write when the slot reaches the head */
  local?: Buffer
  /** upstream replies this slot still takes */
  expect: number
  /** drop the upstream reply (the gateway's own commands), or replace it */
  drop?: boolean
  replace?: Buffer
  onReply?: (reply: RedisReply) => void
  mask?: MaskContext
  /** EXEC: the queued commands' contexts */
  exec?: MaskContext[]
  masks?: MaskPlan
  audit?: AuditDraft
  /** runs after the slot's reply is written */
  after?: () => void
}

interface AuditDraft {
  op: Operation
  decision?: Decision
  started: number
  bytes: number
  masked: number
  error?: string
}

const PUBSUB_SUBSCRIBE = new Set(['SUBSCRIBE', 'PSUBSCRIBE', 'SSUBSCRIBE', 'UNSUBSCRIBE', 'PUNSUBSCRIBE', 'SUNSUBSCRIBE'])
// first element of a RESP2 array that is a pub/sub push while the connection is subscribed
const RESP2_PUSH = new Set(['message', 'pmessage', 'smessage', 'subscribe', 'psubscribe', 'ssubscribe', 'unsubscribe', 'punsubscribe', 'sunsubscribe'])
const UNSUBSCRIBE_KINDS = new Set(['unsubscribe', 'punsubscribe', 'sunsubscribe'])

const HIGH_WATER = 1024
const UNSUPPORTED = new Set(['MONITOR', 'SYNC', 'PSYNC'])

// per target: what the upstream's COMMAND says about commands the built-in table lacks
const upstreamTables = new Map<string, CommandTable>()

export async function serveRedis(client: Duplex, session: Session): Promise<void> {
  const conn = new RedisConnection(client, session)
  return conn.done
}

class RedisConnection {
  readonly done: Promise<void>
  private resolveDone!: () => void
  private readonly framer: RequestFramer
  private readonly replies: ReplyFramer
  private readonly slots: Slot[] = []
  private readonly inbox: (RedisRequest & { protocolError?: string })[] = []
  private processing = false
  private upstream: Duplex | undefined
  private upstreamReady: Promise<void> | undefined
  private closed = false
  private ending = false
  private upstreamBlocked = false
  private readingStopped = false
  private resp = 2
  private subscribed = false
  private inMulti = false
  private multiAborted = false
  private multiQueue: MaskContext[] = []
  private readonly aborter = new AbortController()
  private readonly classify: ClassifyOptions
  private handshakeTimer: NodeJS.Timeout | undefined

  constructor(private readonly client: Duplex, private readonly session: Session) {
    this.done = new Promise(resolve => (this.resolveDone = resolve))
    const limits = session.target.limits
    this.framer = new RequestFramer({ maxBulk: limits.maxMessageBytes })
    this.replies = new ReplyFramer(limits.maxMessageBytes)
    const o = session.target.options
    this.classify = {
      bulkDeleteKeys: typeof o.bulkDeleteKeys === 'number' ? o.bulkDeleteKeys : 100,
      scripts: o.scripts === 'write' ? 'write' : 'admin',
    }
    client.on('data', (chunk: Buffer) => this.onClientData(chunk))
    // a client that half-closes after its last command still gets every reply
    client.on('end', () => {
      this.ending = true
      this.maybeFinish()
    })
    client.on('close', () => this.close())
    client.on('error', () => this.close())
    client.on('drain', () => this.upstream?.resume())
    if (limits.handshakeTimeoutMs > 0) {
      this.handshakeTimer = setTimeout(() => {
        if (!session.principal) this.fail(errorReply('ERR', 'authentication timeout'))
      }, limits.handshakeTimeoutMs)
      this.handshakeTimer.unref()
    }
    if (limits.idleTimeoutMs > 0) {
      // like Redis's own `timeout`: a client waiting on a reply (BLPOP) or subscribed is not idle
      const socket = client as Duplex & { setTimeout?: (ms: number) => void }
      socket.setTimeout?.(limits.idleTimeoutMs)
      client.on('timeout', () => {
        if (this.slots.length === 0 && this.inbox.length === 0 && !this.processing && !this.subscribed) this.fail(errorReply('ERR', 'idle timeout'))
      })
    }
    const onAbort = (): void => {
      const reason = session.signal.reason
      this.fail(errorReply('ERR', `session ended: ${isPortcullisError(reason) ? reason.message : 'closed'}`))
    }
    if (session.signal.aborted) queueMicrotask(onAbort)
    else session.signal.addEventListener('abort', onAbort, { once: true })
  }

  // ---- client side -------------------------------------------------------------------------------

  private onClientData(chunk: Buffer): void {
    if (this.closed || this.readingStopped) return
    const reqs: (RedisRequest & { protocolError?: string })[] = this.framer.push(chunk, 'stop')
    if (this.framer.error !== undefined) {
      // answer what came before in order, then the error, then close
      this.readingStopped = true
      this.client.pause()
      reqs.push({ args: [], raw: Buffer.alloc(0), inline: true, protocolError: this.framer.error })
    }
    if (reqs.length === 0) return
    for (const r of reqs) this.inbox.push(r)
    if (this.inbox.length + this.slots.length > HIGH_WATER) this.client.pause()
    void this.pump()
  }

  private async pump(): Promise<void> {
    if (this.processing) return
    this.processing = true
    try {
      while (this.inbox.length > 0 && !this.closed) {
        const req = this.inbox.shift()!
        await this.handle(req)
        if (this.inbox.length + this.slots.length < HIGH_WATER / 2 && !this.readingStopped && !this.upstreamBlocked) this.client.resume()
      }
    } catch (err) {
      this.fail(errorReply('ERR', `internal error: ${(err as Error).message}`))
    } finally {
      this.processing = false
    }
    this.maybeFinish()
  }

  private maybeFinish(): void {
    if (this.ending && !this.processing && this.inbox.length === 0 && this.slots.length === 0) this.close()
  }

  private localReply(buf: Buffer, after?: () => void, audit?: AuditDraft): void {
    const slot: Slot = { local: buf, expect: 0 }
    if (after) slot.after = after
    if (audit) slot.audit = audit
    this.slots.push(slot)
    this.flush()
  }

  private async handle(req: RedisRequest & { protocolError?: string }): Promise<void> {
    if (req.protocolError !== undefined) {
      this.localReply(errorReply('ERR', `Protocol error: ${req.protocolError}`), () => this.close())
      return
    }
    const name = req.args[0]!.toString('latin1').toUpperCase()
    const s = this.session

    if (name === 'AUTH') return this.auth(req)
    if (name === 'HELLO') return this.hello(req)
    if (name === 'QUIT') {
      this.localReply(OK, () => this.close())
      return
    }
    if (!s.principal) {
      if (name === 'PING' && s.target.options.pingBeforeAuth === true) this.localReply(Buffer.from('+PONG\r\n'))
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
    s.record('request', { command: name, raw: req.raw })
    const unsupported = name === 'CLIENT' && req.args[1]?.toString('latin1').toUpperCase() === 'REPLY' ? 'CLIENT REPLY' : UNSUPPORTED.has(name) ? name : undefined
    if (unsupported) {
      // they change how many replies a command gets (none, or an endless stream): the reply order
      // every pipeline relies on would be lost
      this.localReply(errorReply('ERR', `${unsupported} is not supported through the gateway`))
      return
    }

    const st = classifyCommand(req.args, this.classify)
    const op = toOperation([st])
    const draft: AuditDraft = { op, started: Date.now(), bytes: 0, masked: 0 }
    let decision: Decision
    if (op.class === 'session') {
      // connection bookkeeping (PING, SELECT, MULTI, WATCH, CLIENT SETNAME…) needs no rule
      decision = { action: 'allow', rule: null, reason: 'session command', masks: s.masks }
    } else {
      try {
        decision = await s.decide(op, { signal: this.aborter.signal })
      } catch (err) {
        if (this.closed) return
        draft.error = (err as Error).message
        if (isPortcullisError(err, 'TOKEN_EXPIRED')) this.refuse(errorReply('ERR', 'token expired; AUTH again'), draft)
        else if (isPortcullisError(err, 'RECORDING_FAILED')) this.refuse(errorReply('ERR', (err as Error).message), draft)
        else this.fail(errorReply('ERR', `session ended: ${(err as Error).message}`))
        return
      }
      if (this.closed) return
    }
    draft.decision = decision
    if (decision.action !== 'allow') {
      const reply = decision.approvalId
        ? errorReply('ERR', `approval ${decision.approvalId} ${decision.reason.replace(/^approval \S+ /, '')}`)
        : errorReply('NOPERM', decision.rule ? `blocked by rule ${decision.rule}: ${decision.reason}` : `blocked: ${decision.reason}`)
      draft.error = decision.reason
      this.refuse(reply, draft)
      return
    }
    await this.forward(req, name, draft, decision.masks)
  }

  private refuse(reply: Buffer, draft: AuditDraft): void {
    // a refused command inside MULTI is a queuing error: EXEC must then fail as Redis fails it
    if (this.inMulti) this.multiAborted = true
    this.localReply(reply, undefined, draft)
  }

  private async forward(req: RedisRequest, name: string, draft: AuditDraft, masks: MaskPlan): Promise<void> {
    await this.ensureUpstream()
    if (this.closed) return
    const slot: Slot = { expect: 1, audit: draft, masks }
    let raw = req.raw
    const ctx: MaskContext = { name: draft.op.statements[0]?.facts?.command === undefined ? name : String(draft.op.statements[0]!.facts!.command).split(' ')[0]!, args: req.args }
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
        if (this.inMulti) this.multiQueue.push(ctx)
        else slot.mask = ctx
    }
    if (PUBSUB_SUBSCRIBE.has(name) && !this.inMulti && (req.args.length > 1 || name.endsWith('UNSUBSCRIBE'))) {
      // confirmations arrive as pushes, one per channel: they take no slot
      slot.expect = 0
      if (this.resp === 2) this.subscribed = true
    }
    this.slots.push(slot)
    if (!this.toUpstream(raw)) {
      this.upstreamBlocked = true
      this.client.pause()
    }
    if (name === 'RESET') {
      // RESET drops the upstream's authentication too: log the gateway back in, silently
      const auth = await this.upstreamAuth()
      if (auth) {
        this.slots.push({ expect: 1, drop: true })
        this.toUpstream(auth)
      }
    }
    this.flush()
  }

  private endMulti(): void {
    this.inMulti = false
    this.multiAborted = false
    this.multiQueue = []
  }

  // ---- authentication ----------------------------------------------------------------------------

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

  private async auth(req: RedisRequest): Promise<void> {
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

  private async hello(req: RedisRequest): Promise<void> {
    const args = req.args.map(a => a.toString('utf8'))
    let version: number | undefined
    let token: string | undefined
    let setname: string | undefined
    if (args.length > 1) {
      version = Number(args[1])
      if (version !== 2 && version !== 3) return this.localReply(errorReply('NOPROTO', 'unsupported protocol version'))
      for (let i = 2; i < args.length; i++) {
        const opt = args[i]!.toUpperCase()
        if (opt === 'AUTH' && i + 2 < args.length) {
          token = args[i + 2]
          i += 2
        } else if (opt === 'SETNAME' && i + 1 < args.length) {
          setname = args[++i]
        } else return this.localReply(errorReply('ERR', `Syntax error in HELLO option '${args[i]}'`))
      }
    }
    if (token !== undefined) {
      const refused = await this.authenticate(token)
      if (refused) return this.localReply(refused)
    } else if (!this.session.principal) {
      return this.localReply(errorReply('NOAUTH', 'HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time'))
    }
    this.session.record('request', { command: 'HELLO', ...(version !== undefined ? { protover: version } : {}) })
    await this.ensureUpstream()
    if (this.closed) return
    // the client's protocol version goes upstream so that RESP3 works end to end; its AUTH does not
    const upstreamArgs = version === undefined ? ['HELLO'] : ['HELLO', String(version), ...(setname !== undefined ? ['SETNAME', setname] : [])]
    if (version !== undefined) this.resp = version
    this.slots.push({ expect: 1 })
    this.toUpstream(encodeCommand(upstreamArgs))
  }

  // ---- upstream ----------------------------------------------------------------------------------

  private async upstreamAuth(): Promise<Buffer | undefined> {
    const up = this.session.target.upstream
    if (!up.password) return undefined
    const password = await this.session.secret(up.password)
    return encodeCommand(up.user ? ['AUTH', up.user, password] : ['AUTH', password])
  }

  private ensureUpstream(): Promise<void> {
    this.upstreamReady ??= this.connectUpstream()
    return this.upstreamReady
  }

  private async connectUpstream(): Promise<void> {
    const up = this.session.target.upstream
    const host = up.host ?? '127.0.0.1'
    const port = up.port ?? 6379
    let auth: Buffer | undefined
    try {
      auth = await this.upstreamAuth()
    } catch {
      this.fail(errorReply('ERR', 'upstream credential unavailable'))
      return
    }
    if (this.closed) return
    const sock: Socket = up.tls?.enabled
      ? tlsConnect({
          host,
          port,
          servername: up.tls.servername ?? host,
          rejectUnauthorized: up.tls.rejectUnauthorized ?? true,
          ...(up.tls.ca ? { ca: readFileSync(up.tls.ca) } : {}),
        })
      : netConnect({ host, port })
    this.upstream = sock
    // each burst is one corked write already: Nagle would only hold it back for an ACK
    sock.setNoDelay(true)
    sock.on('data', (chunk: Buffer) => this.onUpstreamData(chunk))
    sock.on('drain', () => {
      this.upstreamBlocked = false
      if (!this.readingStopped) this.client.resume()
    })
    sock.on('error', () => this.fail(errorReply('ERR', 'upstream connection lost')))
    sock.on('close', () => this.fail(errorReply('ERR', 'upstream connection closed')))
    await new Promise<void>(resolve => {
      const ready = (): void => {
        sock.off('error', ready)
        resolve()
      }
      sock.once(up.tls?.enabled ? 'secureConnect' : 'connect', ready)
      sock.once('error', ready)
    })
    if (this.closed) return
    // the gateway's own login: its reply is checked, never shown to the client
    if (auth) await new Promise<void>(resolve => {
      this.slots.push({
        expect: 1,
        drop: true,
        onReply: r => {
          if (r.type !== 0x2b) this.fail(errorReply('ERR', 'upstream refused the gateway credential'))
          resolve()
        },
      })
      sock.write(auth)
      this.aborter.signal.addEventListener('abort', () => resolve(), { once: true })
    })
    await this.loadCommandTable(sock)
  }

  /** once per target, unless options.commandInfo is 'builtin': the upstream's COMMAND metadata */
  private async loadCommandTable(sock: Duplex): Promise<void> {
    const target = this.session.target
    const cacheKey = `${target.name} ${target.upstream.host}:${target.upstream.port}`
    const cached = upstreamTables.get(cacheKey)
    if (cached || target.options.commandInfo === 'builtin' || this.closed) {
      if (cached) this.classify.table = cached
      return
    }
    await new Promise<void>(resolve => {
      this.slots.push({
        expect: 1,
        drop: true,
        onReply: r => {
          // an ACL that forbids COMMAND leaves the built-in table in charge
          if (r.type === 0x2a) {
            try {
              const table = tableFromCommandReply(plainValue(decodeReply(r.raw)) as unknown[])
              upstreamTables.set(cacheKey, table)
              this.classify.table = table
            } catch {
              // a reply we cannot read changes nothing
            }
          }
          resolve()
        },
      })
      sock.write(encodeCommand(['COMMAND']))
      this.aborter.signal.addEventListener('abort', () => resolve(), { once: true })
    })
  }

  private onUpstreamData(chunk: Buffer): void {
    if (this.closed) return
    let replies: RedisReply[]
    try {
      replies = this.replies.push(chunk)
    } catch (err) {
      this.fail(errorReply('ERR', `upstream protocol error: ${(err as Error).message}`))
      return
    }
    for (const r of replies) this.onReply(r)
    this.flush()
  }

  private isPush(r: RedisReply): boolean {
    if (r.type === 0x3e) return true
    if (!this.subscribed || r.type !== 0x2a) return false
    // RESP2 subscribed mode: "*3\r\n$7\r\nmessage\r\n…" — peek at the first element's text only
    const raw = r.raw
    const a = raw.indexOf('\r\n$') + 3
    const b = raw.indexOf('\r\n', a)
    if (a < 3 || b < 0) return false
    const len = Number(raw.toString('latin1', a, b))
    const kind = raw.toString('latin1', b + 2, b + 2 + len)
    if (!RESP2_PUSH.has(kind)) return false
    if (UNSUBSCRIBE_KINDS.has(kind) && raw.toString('latin1').endsWith(':0\r\n')) this.subscribed = false
    return true
  }

  private onReply(r: RedisReply): void {
    if (this.isPush(r)) {
      const masks = this.session.masks
      let out = r.raw
      if (!masks.empty && masks.hasDetectors) out = maskReply(r.raw, r.type, { name: 'MESSAGE', args: [] }, masks, this.resp).raw
      this.session.record('response', { push: true, raw: out })
      this.write(out)
      return
    }
    // pending local replies ahead of the first upstream slot are written by flush(); find the head upstream slot
    this.flush()
    const slot = this.slots[0]
    if (!slot || slot.expect === 0) {
      this.fail(errorReply('ERR', 'upstream sent a reply nobody asked for'))
      return
    }
    slot.expect--
    slot.onReply?.(r)
    if (slot.drop) return
    let out = r.raw
    if (slot.replace) {
      out = slot.replace
      slot.replace = undefined
    } else if (slot.masks && !slot.masks.empty && (slot.mask || slot.exec)) {
      try {
        const res = slot.exec
          ? maskExecReply(r.raw, r.type, slot.exec, slot.masks, this.resp)
          : maskReply(r.raw, r.type, slot.mask!, slot.masks, this.resp)
        out = res.raw
        if (slot.audit) slot.audit.masked += res.masked
      } catch {
        // a reply we cannot decode is not shown unmasked
        out = errorReply('ERR', 'reply could not be masked')
      }
    }
    if (slot.audit) slot.audit.bytes += out.length
    slot.local = slot.local ? Buffer.concat([slot.local, out]) : out
    this.session.record('response', { raw: out })
  }

  /** writes finished slots from the head, in order */
  private flush(): void {
    while (this.slots.length > 0) {
      const head = this.slots[0]!
      if (head.expect > 0) {
        // replies of a multi-reply slot go out as they come
        if (head.local) {
          this.write(head.local)
          head.local = undefined
        }
        return
      }
      this.slots.shift()
      if (head.local && !head.drop) {
        this.write(head.local)
        if (head.audit && head.audit.bytes === 0) head.audit.bytes = head.local.length
      }
      if (head.audit) this.audit(head.audit)
      head.after?.()
    }
    if (this.ending) this.maybeFinish()
  }

  private audit(d: AuditDraft): void {
    const { op, decision } = d
    this.session.audit({
      class: op.class,
      resources: op.resources,
      fingerprint: op.fingerprint,
      statement: op.statement,
      ...(decision ? { decision: decision.action, rule: decision.rule } : {}),
      ...(decision?.approvalId ? { approvalId: decision.approvalId } : {}),
      bytes: d.bytes,
      masked: d.masked,
      durationMs: Date.now() - d.started,
      ...(d.error ? { error: d.error } : {}),
    })
  }

  // Writes are corked until the current burst of work is done (a nextTick runs once the promise
  // queue is drained): a pipeline of N commands becomes one write each way instead of N.
  private clientCorked = false
  private upstreamCorked = false

  private write(buf: Buffer): void {
    if (this.closed) return
    if (!this.clientCorked) {
      this.clientCorked = true
      this.client.cork()
      process.nextTick(() => {
        this.clientCorked = false
        this.client.uncork()
      })
    }
    if (!this.client.write(buf)) this.upstream?.pause()
  }

  private toUpstream(buf: Buffer): boolean {
    const up = this.upstream!
    if (!this.upstreamCorked) {
      this.upstreamCorked = true
      up.cork()
      process.nextTick(() => {
        this.upstreamCorked = false
        up.uncork()
      })
    }
    return up.write(buf)
  }

  /** writes a last error and ends the connection */
  private fail(reply: Buffer): void {
    if (this.closed) return
    this.client.write(reply)
    this.close()
  }

  private close(): void {
    if (this.closed) return
    this.closed = true
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer)
    this.aborter.abort()
    this.upstream?.destroy()
    this.client.end()
    // give the last bytes a moment to leave, then make sure the socket is gone
    setTimeout(() => this.client.destroy(), 100).unref()
    this.resolveDone()
  }
}
