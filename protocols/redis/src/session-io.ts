// The byte side of one client connection: the queue of reply slots (every request takes one, answered
// by the upstream in order or locally, so replies go back in request order), the session's own
// upstream connection and its login, masking and recording of replies as they are delivered, writes
// batched per event-loop turn, the bytes held for the client, and the close. serve.ts adds what the
// commands mean: decisions, forwarding, the lane, AUTH and HELLO.
import type { Duplex } from 'node:stream'
import { isPortcullisError, type AuditEvent, type Decision, type MaskPlan, type Operation, type Session } from '@portcullis/core'
import type { ClassifyOptions } from './classify.ts'
import { maskExecReply, maskReply, type MaskContext } from './mask.ts'
import { ReplyFramer, type RedisReply } from './reply-framer.ts'
import { decodeReply, plainValue } from './reply.ts'
import { tableFromCommandReply, type CommandTable } from './commands.ts'
import type { RedisRequest } from './request-framer.ts'
import { encodeCommand, errorReply } from './resp.ts'
import { Pieces } from './pieces.ts'
import { connectUpstream, loginRefusal, upstreamAuthCommand } from './lane.ts'

export interface Slot {
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
  /** mask.ts maskFree of the operation under `masks`, from its decision: the reply needs no masker */
  maskFree?: boolean
  /** runs after the slot's reply is written */
  after?: () => void
  /** an operation's slot is audited when its reply is written */
  op?: Operation
  decision?: Decision
  started: number
  bytes: number
  masked: number
  error?: string
  /** bytes of upstream replies held in `local` (counted in SessionIO.held) */
  held?: number
}

export type Req = RedisRequest & { protocolError?: string; name?: string }

// first element of a RESP2 array that is a pub/sub push while the connection is subscribed
const RESP2_PUSH = new Set(['message', 'pmessage', 'smessage', 'subscribe', 'psubscribe', 'ssubscribe', 'unsubscribe', 'punsubscribe', 'sunsubscribe'])
const UNSUBSCRIBE_KINDS = new Set(['unsubscribe', 'punsubscribe', 'sunsubscribe'])

/** requests queued or replies owed before the session stops reading its client */
export const HIGH_WATER = 1024
// Reply bytes held for one client (received, not yet taken by its socket). On its own connection
// a session's upstream socket is paused as soon as its client stops taking bytes, so Redis holds
// the backlog. On the shared lane the lane cannot stop for one client, so a session sends at most
// a window of commands there (one to begin with, growing by one per reply while the largest reply
// seen times the window stays under HELD_SOFT); with HELD_SOFT held it moves to its own connection
// for its next command; and a session that already held HELD_SOFT and is handed more than
// HELD_HARD by replies in flight on the lane is closed, as Redis closes a client over its
// client-output-buffer-limit. So a session holds at most HELD_HARD plus one reply.
export const HELD_SOFT = 8 * 1024 * 1024
export const HELD_HARD = 64 * 1024 * 1024
export const LOST = 'upstream connection lost'
const PING = encodeCommand(['PING'])

/** per target: what the upstream's COMMAND says about commands the built-in table lacks */
export const upstreamTables = new Map<string, CommandTable>()

export abstract class SessionIO {
  readonly done: Promise<void>
  private resolveDone!: () => void
  protected readonly replies: ReplyFramer
  protected readonly slots: Slot[] = []
  // framed requests not yet handled: [inHead, length)
  protected inbox: Req[] = []
  protected inHead = 0
  protected inboxBytes = 0
  // a command waits for something (an approval, the upstream connection): later ones queue behind it
  protected processing = false
  protected upstream: Duplex | undefined
  // reply bytes in slots and in toClient, not yet handed to the client's socket
  protected held = 0
  protected clientBlocked = false
  // the gateway's own AUTH, kept to log back in after RESET without a wait
  protected upstreamAuthCommand: Buffer | undefined
  protected closed = false
  protected ending = false
  protected upstreamBlocked = false
  protected readingStopped = false
  protected readingPaused = false
  protected resp = 2
  protected subscribed = false
  protected readonly aborter = new AbortController()
  protected readonly classify: ClassifyOptions
  protected readonly responses = new Pieces()
  // one clock reading per batch of work: the start and end of each operation's audit duration
  protected now = Date.now()
  protected handshakeTimer: NodeJS.Timeout | undefined

  constructor(protected readonly client: Duplex, protected readonly session: Session) {
    this.done = new Promise(resolve => (this.resolveDone = resolve))
    const limits = session.target.limits
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
    client.on('drain', () => {
      this.clientBlocked = false
      this.upstream?.resume()
      this.maybeResume()
    })
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
        if (this.slots.length === 0 && this.inHead === this.inbox.length && !this.processing && !this.subscribed) this.fail(errorReply('ERR', 'idle timeout'))
      })
    }
    const onAbort = (): void => {
      const reason = session.signal.reason
      this.fail(errorReply('ERR', `session ended: ${isPortcullisError(reason) ? reason.message : 'closed'}`))
    }
    if (session.signal.aborted) queueMicrotask(onAbort)
    else session.signal.addEventListener('abort', onAbort, { once: true })
  }

  protected pauseReading(): void {
    this.readingPaused = true
    this.client.pause()
  }

  protected maybeResume(): void {
    if (this.readingPaused && !this.readingStopped && !this.upstreamBlocked && !this.clientBlocked && this.inbox.length - this.inHead + this.slots.length < HIGH_WATER / 2 && this.inboxBytes < HELD_SOFT / 2) {
      this.readingPaused = false
      this.client.resume()
    }
  }

  protected maybeFinish(): void {
    if (this.ending && !this.processing && this.inHead === this.inbox.length && this.slots.length === 0) this.close()
  }

  protected localReply(buf: Buffer, after?: () => void): void {
    const slot: Slot = { local: buf, expect: 0, started: 0, bytes: 0, masked: 0 }
    if (after) slot.after = after
    this.slots.push(slot)
  }

  /** reply bytes held for the client: not yet written, or written and not yet taken by its socket */
  protected heldBytes(): number {
    return this.held + this.client.writableLength
  }

  protected async connectUpstream(): Promise<void> {
    let auth: Buffer | undefined
    try {
      auth = await upstreamAuthCommand(this.session)
    } catch {
      this.fail(errorReply('ERR', 'upstream credential unavailable'))
      return
    }
    if (this.closed) return
    this.upstreamAuthCommand = auth
    const { sock, ready: readyEvent } = connectUpstream(this.session.target)
    this.upstream = sock
    sock.on('data', (chunk: Buffer) => this.onUpstreamData(chunk))
    sock.on('drain', () => {
      this.upstreamBlocked = false
      this.maybeResume()
    })
    sock.on('error', () => this.upstreamGone())
    sock.on('close', () => this.upstreamGone())
    await new Promise<void>(resolve => {
      const ready = (): void => {
        sock.off('error', ready)
        resolve()
      }
      sock.once(readyEvent, ready)
      sock.once('error', ready)
    })
    if (this.closed) return
    // the gateway's own login, checked before any client command goes up and never shown to the
    // client: its AUTH, or without a credential a PING, which an upstream that wants a login
    // answers with NOAUTH (then every command would fail; the client is told why instead)
    await new Promise<void>(resolve => {
      this.slots.push({
        expect: 1,
        drop: true,
        started: 0,
        bytes: 0,
        masked: 0,
        onReply: r => {
          const why = loginRefusal(r, auth !== undefined)
          if (why !== undefined) this.fail(errorReply('ERR', why))
          resolve()
        },
      })
      sock.write(auth ?? PING)
      this.aborter.signal.addEventListener('abort', () => resolve(), { once: true })
    })
    await this.loadCommandTable(sock)
  }

  /** once per target, unless options.commandInfo is 'builtin': the upstream's COMMAND metadata */
  protected async loadCommandTable(sock: Duplex): Promise<void> {
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
        started: 0,
        bytes: 0,
        masked: 0,
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

  protected onUpstreamData(chunk: Buffer): void {
    if (this.closed) return
    let replies: RedisReply[]
    try {
      replies = this.replies.push(chunk)
    } catch (err) {
      this.fail(errorReply('ERR', `upstream protocol error: ${(err as Error).message}`))
      return
    }
    this.now = Date.now()
    for (const r of replies) {
      this.onReply(r)
      if (this.closed) return
    }
    this.recordResponses()
    this.flush()
    this.maybeResume()
    // a client that stopped taking bytes (perhaps before this connection opened): Redis holds the rest
    if (this.clientBlocked) this.upstream?.pause()
  }

  /** one 'response' record per upstream read: the replies as written to the client (after masking) */
  protected recordResponses(): void {
    if (!this.responses.empty) this.session.record('response', { raw: this.responses.take() })
  }

  protected isPush(r: RedisReply): boolean {
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

  protected onReply(r: RedisReply): void {
    if (this.isPush(r)) {
      const masks = this.session.masks
      let out = r.raw
      if (!masks.empty && masks.hasDetectors) out = maskReply(r.raw, r.type, { name: 'MESSAGE', args: [] }, masks, this.resp).raw
      // replies before it leave before it, in the recording as on the wire
      this.recordResponses()
      this.flush()
      this.session.record('response', { push: true, raw: out })
      this.write(out)
      return
    }
    // the head upstream slot: local replies ahead of it wait in the queue and keep their place
    const slots = this.slots
    let slot: Slot | undefined
    for (let i = 0; i < slots.length; i++) {
      if (slots[i]!.expect > 0) {
        slot = slots[i]
        break
      }
    }
    if (slot === undefined) {
      this.fail(errorReply('ERR', 'upstream sent a reply nobody asked for'))
      return
    }
    this.deliver(slot, r)
  }

  /** an upstream reply for its slot: masked, counted and recorded; written when the slot is at the head */
  protected deliver(slot: Slot, r: RedisReply): void {
    slot.expect--
    slot.onReply?.(r)
    if (slot.drop) return
    let out = r.raw
    if (slot.replace) {
      out = slot.replace
      slot.replace = undefined
    } else if (slot.mask !== undefined || slot.exec !== undefined) {
      try {
        const res = slot.exec
          ? maskExecReply(r.raw, r.type, slot.exec, slot.masks!, this.resp)
          : maskReply(r.raw, r.type, slot.mask!, slot.masks!, this.resp)
        out = res.raw
        slot.masked += res.masked
      } catch {
        // a reply we cannot decode is not shown unmasked
        out = errorReply('ERR', 'reply could not be masked')
      }
    }
    slot.bytes += out.length
    slot.held = (slot.held ?? 0) + out.length
    this.held += out.length
    slot.local = slot.local ? Buffer.concat([slot.local, out]) : out
    this.responses.add(out)
  }

  /** writes finished slots from the head, in order */
  protected flush(): void {
    const slots = this.slots
    while (slots.length > 0) {
      const head = slots[0]!
      if (head.expect > 0) {
        // replies of a multi-reply slot go out as they come
        if (head.local) {
          this.release(head)
          this.write(head.local)
          head.local = undefined
        }
        break
      }
      slots.shift()
      this.release(head)
      if (head.local && !head.drop) {
        this.write(head.local)
        if (head.bytes === 0) head.bytes = head.local.length
      }
      if (head.op !== undefined) this.audit(head)
      head.after?.()
    }
    if (this.ending) this.maybeFinish()
  }

  /** a slot's replies move on to toClient, counted there */
  protected release(slot: Slot): void {
    if (slot.held) {
      this.held -= slot.held
      slot.held = 0
    }
  }

  protected audit(slot: Slot): void {
    const op = slot.op!
    const d = slot.decision
    // one object of one shape per operation; undefined fields are left out of the line. The
    // operation's own fields are serialized once per cached Operation (auditOperation)
    if (this.session.auditOperation) {
      this.session.auditOperation(op, {
        decision: d?.action,
        rule: d?.rule,
        approvalId: d?.approvalId,
        bytes: slot.bytes,
        masked: slot.masked,
        durationMs: this.now - slot.started,
        error: slot.error,
      })
      return
    }
    this.session.audit({
      class: op.class,
      resources: op.resources,
      fingerprint: op.fingerprint,
      statement: op.statement,
      decision: d?.action,
      rule: d?.rule,
      approvalId: d?.approvalId,
      bytes: slot.bytes,
      masked: slot.masked,
      durationMs: this.now - slot.started,
      error: slot.error,
    } as Partial<AuditEvent>)
  }

  // Writes wait until the current burst of work is done (a nextTick runs once the handler that
  // queued them returns): a pipeline of N commands becomes one write each way instead of N, and
  // frames that lie next to each other in the bytes read leave as one view of them, not copied.
  protected readonly toClient = new Pieces()
  protected readonly toServer = new Pieces()
  protected toClientBytes = 0
  protected writeScheduled = false

  protected write(buf: Buffer): void {
    if (this.closed) return
    this.toClient.add(buf)
    this.toClientBytes += buf.length
    this.held += buf.length
    this.scheduleWrites()
  }

  protected takeToClient(): Buffer {
    this.held -= this.toClientBytes
    this.toClientBytes = 0
    return this.toClient.take()
  }

  protected toUpstream(buf: Buffer): void {
    this.toServer.add(buf)
    this.scheduleWrites()
  }

  protected scheduleWrites(): void {
    if (this.writeScheduled) return
    this.writeScheduled = true
    process.nextTick(this.writeOut)
  }

  protected readonly writeOut = (): void => {
    this.writeScheduled = false
    if (this.closed) return
    if (!this.toServer.empty && this.upstream !== undefined && !this.upstream.write(this.toServer.take())) {
      this.upstreamBlocked = true
      this.pauseReading()
    }
    if (!this.toClient.empty && !this.client.write(this.takeToClient())) {
      // a lane is not paused for one slow client: that client stops sending instead
      this.clientBlocked = true
      this.upstream?.pause()
      this.pauseReading()
    }
  }

  /**
   * The session's own upstream connection ended. Like Redis when it drops a client: the commands
   * in flight (and one waiting on the connection) get an error each, in their place; a session
   * with nothing in flight is closed without a word, so that a client reconnects instead of
   * reading a stray error as the reply to its next command.
   */
  protected upstreamGone(): void {
    if (this.closed) return
    let inFlight = this.processing
    for (const s of this.slots) {
      if (s.expect === 0) continue
      s.expect = 0
      if (s.drop) continue
      inFlight = true
      const lost = errorReply('ERR', LOST)
      s.local = s.local ? Buffer.concat([s.local, lost]) : lost
      s.bytes += lost.length
      s.error = LOST
    }
    if (!inFlight) {
      this.close()
      return
    }
    this.readingStopped = true
    this.flush()
    if (this.processing) this.fail(errorReply('ERR', LOST))
    else this.close()
  }

  /** writes a last error and ends the connection */
  protected fail(reply: Buffer): void {
    if (this.closed) return
    // the replies already due go first
    if (!this.toClient.empty) this.client.write(this.takeToClient())
    this.client.write(reply)
    this.close()
  }

  protected close(): void {
    if (this.closed) return
    this.closed = true
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer)
    this.aborter.abort()
    this.upstream?.destroy()
    this.onClose()
    if (!this.toClient.empty) this.client.write(this.takeToClient())
    this.client.end()
    // give the last bytes a moment to leave, then make sure the socket is gone
    setTimeout(() => this.client.destroy(), 100).unref()
    this.resolveDone()
  }

  /** bytes from the client */
  protected abstract onClientData(chunk: Buffer): void

  /** what the session holds beside its own connection (its lane), let go on close */
  protected abstract onClose(): void
}
