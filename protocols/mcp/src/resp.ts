// A small RESP2 client over one connection to a Redis target's listener: enough to send one command
// and read its reply. Replies arrive in order, one per command (no pipelining across tool calls).
import type { Duplex } from 'node:stream'

export type Reply = string | number | null | Buffer | Reply[] | { error: string }

export class RespConnection {
  readonly #socket: Duplex
  #buf: Buffer = Buffer.alloc(0)
  readonly #queue: Array<{ resolve: (r: Reply) => void; reject: (e: Error) => void }> = []
  #ended: Error | undefined
  /** replies bigger than this end the connection (the tool answers with an error) */
  readonly #maxBytes: number

  constructor(socket: Duplex, maxBytes: number) {
    this.#socket = socket
    this.#maxBytes = maxBytes
    socket.on('data', (d: Buffer) => this.#data(d))
    const end = (err?: Error) => this.#fail(err ?? new Error('the Redis target closed the connection'))
    socket.on('error', end)
    socket.on('close', () => end())
  }

  get ended(): boolean {
    return this.#ended !== undefined
  }

  send(argv: readonly (string | Buffer)[]): Promise<Reply> {
    if (this.#ended) return Promise.reject(this.#ended)
    const parts: Buffer[] = [Buffer.from(`*${argv.length}\r\n`)]
    for (const a of argv) {
      const b = typeof a === 'string' ? Buffer.from(a, 'utf8') : a
      parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'))
    }
    return new Promise<Reply>((resolve, reject) => {
      this.#queue.push({ resolve, reject })
      this.#socket.write(Buffer.concat(parts))
    })
  }

  close(): void {
    this.#fail(new Error('closed'))
    this.#socket.destroy()
  }

  #fail(err: Error): void {
    if (!this.#ended) this.#ended = err
    for (const w of this.#queue.splice(0)) w.reject(err)
  }

  #data(d: Buffer): void {
    this.#buf = this.#buf.length === 0 ? d : Buffer.concat([this.#buf, d])
    if (this.#buf.length > this.#maxBytes) {
      this.#fail(new Error(`reply larger than ${this.#maxBytes} bytes`))
      this.#socket.destroy()
      return
    }
    for (;;) {
      let parsed: ReturnType<typeof parseReply>
      try {
        parsed = parseReply(this.#buf, 0)
      } catch (err) {
        this.#fail(err as Error)
        this.#socket.destroy()
        return
      }
      if (!parsed) return
      this.#buf = this.#buf.subarray(parsed.end)
      const w = this.#queue.shift()
      if (!w) {
        // a reply nobody asked for (a push): the connection's state is not what we think
        this.#fail(new Error('unexpected reply from the Redis target'))
        this.#socket.destroy()
        return
      }
      w.resolve(parsed.value)
    }
  }
}

/** one reply from `at`, or undefined when more bytes are needed; RESP3 types are not expected (no HELLO 3) */
export function parseReply(buf: Buffer, at: number): { value: Reply; end: number } | undefined {
  if (at >= buf.length) return undefined
  const nl = buf.indexOf('\r\n', at)
  if (nl < 0) return undefined
  const type = String.fromCharCode(buf[at]!)
  const line = buf.toString('utf8', at + 1, nl)
  const next = nl + 2
  switch (type) {
    case '+':
      return { value: line, end: next }
    case '-':
      return { value: { error: line }, end: next }
    case ':':
      return { value: Number(line), end: next }
    case '$': {
      const n = Number(line)
      if (n < 0) return { value: null, end: next }
      if (buf.length < next + n + 2) return undefined
      return { value: buf.subarray(next, next + n), end: next + n + 2 }
    }
    case '*': {
      const n = Number(line)
      if (n < 0) return { value: null, end: next }
      const items: Reply[] = []
      let pos = next
      for (let i = 0; i < n; i++) {
        const item = parseReply(buf, pos)
        if (!item) return undefined
        items.push(item.value)
        pos = item.end
      }
      return { value: items, end: pos }
    }
    default:
      throw new Error(`unexpected RESP type ${JSON.stringify(type)}`)
  }
}
