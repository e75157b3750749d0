// Raw-byte clients for the fault and slow-reader tests: every byte the gateway sends is seen (how many
// ErrorResponses, whether it closed), and a client can stop reading at will.
import { connect, type Socket } from 'node:net'
import { once } from 'node:events'

export interface PgMessage {
  type: string
  body: Buffer
}

export interface RawPg {
  socket: Socket
  messages: PgMessage[]
  closed: Promise<void>
  isClosed(): boolean
  query(sql: string): void
  /** resolves when a message of this type arrived after `from` (index), or the socket closed */
  next(type: string, from?: number, ms?: number): Promise<PgMessage | undefined>
  errors(): Array<{ severity: string; code: string; message: string }>
}

function cstring(s: string): Buffer {
  return Buffer.from(s + '\0', 'utf8')
}

function message(type: string, body: Buffer): Buffer {
  const h = Buffer.alloc(5)
  h.write(type, 0, 'latin1')
  h.writeInt32BE(4 + body.length, 1)
  return Buffer.concat([h, body])
}

export async function rawPg(port: number, user: string, token: string, database = 'app'): Promise<RawPg> {
  const socket = connect({ host: '127.0.0.1', port })
  socket.on('error', () => {})
  await once(socket, 'connect')
  const messages: PgMessage[] = []
  let buf: Buffer = Buffer.alloc(0)
  let closed = false
  let wake: (() => void) | undefined
  socket.on('data', (d: Buffer) => {
    buf = buf.length ? Buffer.concat([buf, d]) : d
    while (buf.length >= 5) {
      const len = buf.readInt32BE(1)
      if (buf.length < 1 + len) break
      messages.push({ type: String.fromCharCode(buf[0]!), body: buf.subarray(5, 1 + len) })
      buf = buf.subarray(1 + len)
    }
    wake?.()
  })
  // not events.once: it rejects when 'error' (ECONNRESET) comes before 'close'
  const closedP = new Promise<void>((resolve) =>
    socket.once('close', () => {
      closed = true
      wake?.()
      resolve()
    }),
  )
  const next = async (type: string, from = 0, ms = 30_000): Promise<PgMessage | undefined> => {
    const end = Date.now() + ms
    for (;;) {
      const m = messages.slice(from).find((x) => x.type === type)
      if (m) return m
      if (closed || Date.now() > end) return undefined
      await new Promise<void>((r) => {
        const t = setTimeout(r, 50)
        wake = () => (clearTimeout(t), r())
      })
    }
  }
  const params = Buffer.concat([cstring('user'), cstring(user), cstring('database'), cstring(database), cstring('application_name'), cstring('robust-raw'), Buffer.from([0])])
  const startup = Buffer.alloc(8)
  startup.writeInt32BE(8 + params.length, 0)
  startup.writeInt32BE(196608, 4)
  socket.write(Buffer.concat([startup, params]))
  if (!(await next('R'))) throw new Error('no authentication request')
  socket.write(message('p', cstring(token)))
  if (!(await next('Z'))) throw new Error(`login failed: ${JSON.stringify(messages.map((m) => m.type + m.body.toString('latin1')))}`)
  return {
    socket,
    messages,
    closed: closedP,
    isClosed: () => closed,
    query: (sql) => void socket.write(message('Q', cstring(sql))),
    next,
    errors: () =>
      messages
        .filter((m) => m.type === 'E')
        .map((m) => {
          const f: Record<string, string> = {}
          for (const part of m.body.toString('utf8').split('\0')) if (part) f[part[0]!] = part.slice(1)
          return { severity: f.V ?? f.S ?? '', code: f.C ?? '', message: f.M ?? '' }
        }),
  }
}

export function resp(...args: string[]): Buffer {
  return Buffer.from(`*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join(''))
}

export interface RawRedis {
  socket: Socket
  received(): string
  closed: Promise<void>
  isClosed(): boolean
  send(...args: string[]): void
  /** resolves once the received text matches, or on close / timeout */
  until(re: RegExp, ms?: number): Promise<boolean>
  /** forgets what was received so far */
  clear(): void
}

export async function rawRedis(port: number, token: string): Promise<RawRedis> {
  const socket = connect({ host: '127.0.0.1', port })
  socket.on('error', () => {})
  await once(socket, 'connect')
  let text = ''
  let closed = false
  socket.on('data', (d: Buffer) => {
    text += d.toString('latin1')
    if (text.length > 1 << 20) text = text.slice(-4096)
  })
  const closedP = new Promise<void>((resolve) => socket.once('close', () => ((closed = true), resolve())))
  const until = async (re: RegExp, ms = 30_000) => {
    const end = Date.now() + ms
    while (!re.test(text)) {
      if (closed || Date.now() > end) return re.test(text)
      await new Promise((r) => setTimeout(r, 20))
    }
    return true
  }
  socket.write(resp('AUTH', token))
  if (!(await until(/\+OK\r\n/))) throw new Error(`AUTH failed: ${text}`)
  text = ''
  return { socket, received: () => text, closed: closedP, isClosed: () => closed, send: (...a) => void socket.write(resp(...a)), until, clear: () => void (text = '') }
}
