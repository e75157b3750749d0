// The memory control store of a host with several workers (`workers: N`): the store lives in the
// cluster primary (ControlStoreHost) and each worker reaches it over the IPC channel node:cluster
// opened to it (IpcControlStore). One host then needs no database: what one worker is told (an
// approval, a window, a revocation, a kill) every worker hears, as it would from Postgres or Redis.
//
// The primary tells every worker each change the store makes before it answers the call that made
// it, and messages on one channel arrive in order: the calling worker has heard of its own change
// when its call returns, as with MemoryControlStore in one process.
//
// The channel is the one node:cluster made between the primary and the processes it forked: there
// is no one else on it, so nothing here authenticates. What leaves it is what a worker would write
// to Postgres (requests, grants, revocations, session records): never a token or a secret.
import { PortcullisError, type ErrorCode } from '../errors.ts'
import type { RevocationEntry } from '../config/types.ts'
import type { ApprovalRequest } from '../types.ts'
import type {
  ApprovalGrant,
  ControlChange,
  ControlHealth,
  ControlStore,
  InstanceInfo,
  KillRequest,
  RequestVerdict,
  SessionRecord,
} from './store.ts'

/** the worker's end: `process` in a cluster worker */
export interface IpcChannel {
  send(message: unknown): unknown
  on(event: 'message', fn: (message: unknown) => void): unknown
  on(event: 'disconnect', fn: () => void): unknown
  readonly connected: boolean
}

/** what a worker may ask of the primary's store: the ControlStore's own methods, nothing else */
const METHODS = new Set([
  'start',
  'close',
  'putRequest',
  'getRequest',
  'listRequests',
  'decide',
  'release',
  'findGrant',
  'grants',
  'revoke',
  'revocations',
  'putSessions',
  'endSession',
  'listSessions',
  'kill',
  'putObjects',
  'ownedObjects',
  'dropObjects',
] as const)
type Method = typeof METHODS extends Set<infer M> ? M : never

export interface ControlCall {
  portcullis: 'control'
  id: number
  method: Method
  args: unknown[]
}
export type ControlReply =
  | { portcullis: 'control-reply'; id: number; ok: true; value: unknown }
  | { portcullis: 'control-reply'; id: number; ok: false; error: { code?: ErrorCode; message: string; details?: Record<string, unknown> } }
export interface ControlChangeMessage {
  portcullis: 'control-change'
  change: ControlChange
}

function isMessage(m: unknown, kind: string): boolean {
  return typeof m === 'object' && m !== null && (m as { portcullis?: unknown }).portcullis === kind
}

/** The worker's view of the primary's memory store: the same interface, every call a message. */
export class IpcControlStore implements ControlStore {
  readonly kind: ControlStore['kind'] = 'memory'
  readonly shared = true
  readonly #channel: IpcChannel
  readonly #pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>()
  readonly #subscribers = new Set<(c: ControlChange) => void>()
  readonly #healthWatchers = new Set<(h: ControlHealth) => void>()
  #next = 1
  #ok: boolean

  constructor(channel: IpcChannel) {
    this.#channel = channel
    this.#ok = channel.connected
    channel.on('message', (m) => {
      if (isMessage(m, 'control-reply')) this.#reply(m as ControlReply)
      else if (isMessage(m, 'control-change')) for (const fn of [...this.#subscribers]) fn((m as ControlChangeMessage).change)
    })
    channel.on('disconnect', () => {
      // the primary is gone (node:cluster ends this worker right after): nothing will answer
      this.#ok = false
      for (const p of this.#pending.values()) p.reject(unavailable())
      this.#pending.clear()
      for (const fn of [...this.#healthWatchers]) fn(this.health())
    })
  }

  health(): ControlHealth {
    return this.#ok ? { kind: this.kind, ok: true } : { kind: this.kind, ok: false, error: 'the cluster primary is not reachable' }
  }

  onHealth(fn: (health: ControlHealth) => void): () => void {
    this.#healthWatchers.add(fn)
    return () => this.#healthWatchers.delete(fn)
  }

  subscribe(onChange: (change: ControlChange) => void): () => void {
    this.#subscribers.add(onChange)
    return () => this.#subscribers.delete(onChange)
  }

  #call<T>(method: Method, ...args: unknown[]): Promise<T> {
    if (!this.#ok || !this.#channel.connected) return Promise.reject(unavailable())
    const id = this.#next++
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject })
      try {
        this.#channel.send({ portcullis: 'control', id, method, args } satisfies ControlCall)
      } catch (err) {
        this.#pending.delete(id)
        reject(err as Error)
      }
    })
  }

  #reply(m: ControlReply) {
    const p = this.#pending.get(m.id)
    if (!p) return
    this.#pending.delete(m.id)
    if (m.ok) p.resolve(m.value)
    else p.reject(m.error.code ? new PortcullisError(m.error.code, m.error.message, m.error.details ?? {}) : new Error(m.error.message))
  }

  start(instance: InstanceInfo): Promise<void> {
    return this.#call('start', instance)
  }
  async close(): Promise<void> {
    // a worker leaving after its primary is a worker with nothing left to give back
    if (this.#ok) await this.#call('close').catch(() => {})
  }
  putRequest(request: ApprovalRequest): Promise<void> {
    return this.#call('putRequest', request)
  }
  getRequest(id: string): Promise<ApprovalRequest | undefined> {
    return this.#call('getRequest', id)
  }
  listRequests(): Promise<ApprovalRequest[]> {
    return this.#call('listRequests')
  }
  decide(id: string, verdict: RequestVerdict): Promise<ApprovalRequest> {
    return this.#call('decide', id, verdict)
  }
  release(id: string): Promise<ApprovalRequest | undefined> {
    return this.#call('release', id)
  }
  findGrant(subject: string, target: string, fingerprint: string): Promise<ApprovalGrant | undefined> {
    return this.#call('findGrant', subject, target, fingerprint)
  }
  grants(): Promise<ApprovalGrant[]> {
    return this.#call('grants')
  }
  revoke(entry: RevocationEntry): Promise<void> {
    return this.#call('revoke', entry)
  }
  revocations(): Promise<RevocationEntry[]> {
    return this.#call('revocations')
  }
  putSessions(sessions: SessionRecord[]): Promise<void> {
    return this.#call('putSessions', sessions)
  }
  endSession(id: string): Promise<void> {
    return this.#call('endSession', id)
  }
  listSessions(): Promise<SessionRecord[]> {
    return this.#call('listSessions')
  }
  kill(request: KillRequest): Promise<void> {
    return this.#call('kill', request)
  }
  putObjects(target: string, scope: string, kind: string, ids: string[]): Promise<void> {
    return this.#call('putObjects', target, scope, kind, ids)
  }
  ownedObjects(target: string, scope: string, kind: string, ids: string[]): Promise<string[]> {
    return this.#call('ownedObjects', target, scope, kind, ids)
  }
  dropObjects(target: string, scope: string, kind: string, ids: string[]): Promise<void> {
    return this.#call('dropObjects', target, scope, kind, ids)
  }
}

function unavailable(): PortcullisError {
  return new PortcullisError('CONTROL_STORE_UNAVAILABLE', 'control store unavailable (the cluster primary is not reachable)')
}

/**
 * The primary's end: answers each worker's calls from one store (a MemoryControlStore) and tells
 * every worker each change. A worker that leaves, by close() or by dying, is an instance whose
 * lease ended: its pending requests read withdrawn and its sessions leave the registry.
 */
export class ControlStoreHost {
  readonly #store: ControlStore
  readonly #workers = new Map<string, { send(m: unknown): void; instance?: string }>()
  readonly #log: (msg: string, fields?: Record<string, unknown>) => void

  constructor(store: ControlStore, opts: { log?: (msg: string, fields?: Record<string, unknown>) => void } = {}) {
    this.#store = store
    this.#log = opts.log ?? (() => {})
    store.subscribe((change) => {
      const m: ControlChangeMessage = { portcullis: 'control-change', change }
      for (const [key, w] of this.#workers) {
        try {
          w.send(m)
        } catch (err) {
          this.#log('control change not delivered to a worker', { worker: key, error: (err as Error).message })
        }
      }
    })
  }

  /** a worker that will call: it hears every change from now on */
  attach(key: string, send: (m: unknown) => void): void {
    this.#workers.set(key, { send })
  }

  /** answers `message` when it is a control call (and says so) */
  handle(key: string, message: unknown): boolean {
    if (!isMessage(message, 'control')) return false
    const w = this.#workers.get(key)
    const call = message as ControlCall
    if (!w || !METHODS.has(call.method) || !Array.isArray(call.args)) return true
    void this.#answer(key, w, call)
    return true
  }

  async #answer(key: string, w: { send(m: unknown): void; instance?: string }, call: ControlCall): Promise<void> {
    let reply: ControlReply
    try {
      let value: unknown
      if (call.method === 'start') {
        w.instance = (call.args[0] as InstanceInfo).id
      } else if (call.method === 'close') {
        await this.#release(w.instance)
        w.instance = undefined
      } else {
        const fn = this.#store[call.method] as (...a: unknown[]) => Promise<unknown>
        value = await fn.apply(this.#store, call.args)
      }
      reply = { portcullis: 'control-reply', id: call.id, ok: true, value }
    } catch (err) {
      const e = err as PortcullisError
      reply = {
        portcullis: 'control-reply',
        id: call.id,
        ok: false,
        error: { message: e.message, ...(e instanceof PortcullisError ? { code: e.code, details: e.details } : {}) },
      }
    }
    if (!this.#workers.has(key)) return
    try {
      w.send(reply)
    } catch (err) {
      this.#log('control reply not delivered to a worker', { worker: key, error: (err as Error).message })
    }
  }

  /** the worker is gone (exit, crash, disconnect): what its instance held is withdrawn */
  async detach(key: string): Promise<void> {
    const w = this.#workers.get(key)
    this.#workers.delete(key)
    await this.#release(w?.instance)
  }

  async #release(instance: string | undefined): Promise<void> {
    if (!instance) return
    let withdrawn = 0
    for (const r of await this.#store.listRequests()) {
      if (r.instance !== instance || r.status !== 'pending') continue
      try {
        await this.#store.decide(r.id, { status: 'withdrawn', reason: 'the gateway worker holding the operation ended' })
        withdrawn++
      } catch {
        // decided meanwhile: nothing to withdraw
      }
    }
    let ended = 0
    for (const s of await this.#store.listSessions()) {
      if (s.instance !== instance) continue
      await this.#store.endSession(s.id)
      ended++
    }
    if (withdrawn + ended > 0) this.#log('worker instance released', { instance, withdrawn, sessions: ended })
  }
}
