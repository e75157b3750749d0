// Connections to one exposed target for one MCP session: bounded, reused, closed when idle and when
// the MCP session ends. Each connection is a client of that target's listener, authenticated with
// the caller's own token, so a pooled connection never serves anyone else.

export interface PoolOptions<C> {
  create(): Promise<C>
  destroy(c: C): void
  /** most connections open at once; calls past it wait their turn */
  max: number
  /** an unused connection is closed after this long */
  idleMs: number
}

interface Idle<C> {
  c: C
  timer: NodeJS.Timeout
}

export class Pool<C> {
  readonly #o: PoolOptions<C>
  readonly #idle: Idle<C>[] = []
  readonly #waiting: Array<{ resolve: (c: C) => void; reject: (e: Error) => void }> = []
  #open = 0
  #closed = false

  constructor(o: PoolOptions<C>) {
    this.#o = o
  }

  get size(): number {
    return this.#open
  }

  async acquire(): Promise<C> {
    if (this.#closed) throw new Error('the MCP session has ended')
    const idle = this.#idle.pop()
    if (idle) {
      clearTimeout(idle.timer)
      return idle.c
    }
    if (this.#open >= this.#o.max) return new Promise<C>((resolve, reject) => this.#waiting.push({ resolve, reject }))
    this.#open++
    try {
      return await this.#o.create()
    } catch (err) {
      this.#open--
      this.#wakeOne()
      throw err
    }
  }

  /** back into the pool; `broken`: the connection is closed instead (its state is not known clean) */
  release(c: C, broken = false): void {
    if (broken || this.#closed) {
      this.#o.destroy(c)
      this.#open--
      this.#wakeOne()
      return
    }
    const next = this.#waiting.shift()
    if (next) return next.resolve(c)
    const timer = setTimeout(() => {
      const i = this.#idle.findIndex((x) => x.c === c)
      if (i >= 0) this.#idle.splice(i, 1)
      this.#o.destroy(c)
      this.#open--
    }, this.#o.idleMs)
    timer.unref()
    this.#idle.push({ c, timer })
  }

  /** a waiter gets a fresh connection when one was closed under it */
  #wakeOne(): void {
    const next = this.#waiting.shift()
    if (!next) return
    this.#open++
    this.#o.create().then(next.resolve, (err: Error) => {
      this.#open--
      next.reject(err)
      this.#wakeOne()
    })
  }

  close(): void {
    this.#closed = true
    for (const w of this.#waiting.splice(0)) w.reject(new Error('the MCP session has ended'))
    for (const { c, timer } of this.#idle.splice(0)) {
      clearTimeout(timer)
      this.#o.destroy(c)
      this.#open--
    }
  }
}
