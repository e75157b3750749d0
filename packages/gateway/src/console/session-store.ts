// Console sign-ins: server-side sessions behind a cookie that carries only a random id. The store is
// an interface: one process keeps them in memory; gateway workers or several instances behind one
// address need a shared implementation (or sticky routing), see the README.
import { createHash, randomBytes } from 'node:crypto'
import type { Principal } from '@portcullis/core'

export interface ConsoleSession {
  principal: Principal
  /** synchronizer token every state-changing request must carry */
  csrf: string
  created: number
  /** ms since epoch: the earlier of the ID token's expiry and the configured session lifetime */
  expires: number
}

/** A sign-in in flight: what the callback must find again, bound to the browser by a cookie. */
export interface PendingLogin {
  state: string
  nonce: string
  codeVerifier: string
  returnTo: string
  expires: number
}

export interface ConsoleSessionStore {
  get(id: string): Promise<ConsoleSession | undefined>
  put(id: string, session: ConsoleSession): Promise<void>
  delete(id: string): Promise<void>
  /** one-time: returned once, then gone */
  takeLogin(id: string): Promise<PendingLogin | undefined>
  putLogin(id: string, login: PendingLogin): Promise<void>
}

export function newId(): string {
  return randomBytes(32).toString('base64url')
}

/** ids are kept hashed: what the store holds (or a dump of it) does not sign anyone in */
function key(id: string): string {
  return createHash('sha256').update(id).digest('base64url')
}

/** in this process's memory, bounded: past the bound the oldest entries go first */
export class MemoryConsoleSessionStore implements ConsoleSessionStore {
  readonly #sessions = new Map<string, ConsoleSession>()
  readonly #logins = new Map<string, PendingLogin>()
  constructor(
    private readonly maxSessions = 10_000,
    private readonly maxLogins = 1_000,
    private readonly now: () => number = Date.now,
  ) {}

  async get(id: string): Promise<ConsoleSession | undefined> {
    const k = key(id)
    const s = this.#sessions.get(k)
    if (s && s.expires <= this.now()) {
      this.#sessions.delete(k)
      return undefined
    }
    return s
  }

  async put(id: string, session: ConsoleSession): Promise<void> {
    bound(this.#sessions, this.maxSessions, this.now())
    this.#sessions.set(key(id), session)
  }

  async delete(id: string): Promise<void> {
    this.#sessions.delete(key(id))
  }

  async takeLogin(id: string): Promise<PendingLogin | undefined> {
    const k = key(id)
    const l = this.#logins.get(k)
    this.#logins.delete(k)
    return l && l.expires > this.now() ? l : undefined
  }

  async putLogin(id: string, login: PendingLogin): Promise<void> {
    bound(this.#logins, this.maxLogins, this.now())
    this.#logins.set(key(id), login)
  }
}

function bound<V extends { expires: number }>(m: Map<string, V>, max: number, now: number): void {
  if (m.size < max) return
  for (const [k, v] of m) if (v.expires <= now) m.delete(k)
  // Maps iterate in insertion order: the oldest first
  for (const k of m.keys()) {
    if (m.size < max) break
    m.delete(k)
  }
}
