// The two sides of the idle-connections check, shared by idle-connections.test.ts (the check) and
// idle-profile.ts (the diagnosis): an active Redis client doing sequential GETs, and an idle set of
// logged-in Redis sessions and HTTP keep-alive connections.
import { connect, type Socket } from 'node:net'
import { once } from 'node:events'
import { Agent, request } from 'node:http'
import { resp } from './wire.ts'

export interface Active {
  socket: Socket
  get(): Promise<void>
}

/** a raw RESP client logged in with `token`: get() sends one GET and resolves on its whole reply */
export async function activeClient(port: number, token: string): Promise<Active> {
  const socket = connect({ host: '127.0.0.1', port, noDelay: true })
  socket.on('error', () => {})
  await once(socket, 'connect')
  let pending = 0
  let want = 0
  let done: (() => void) | undefined
  socket.on('data', (d: Buffer) => {
    pending += d.length
    if (want > 0 && pending >= want) {
      pending -= want
      want = 0
      done?.()
    }
  })
  const rpc = (bytes: Buffer, replyBytes: number) =>
    new Promise<void>((resolve) => {
      want = replyBytes
      done = resolve
      socket.write(bytes)
    })
  await rpc(resp('AUTH', token), 5) // +OK\r\n
  const get = resp('GET', 'robust:idle-test')
  return { socket, get: () => rpc(get, 7) } // $1\r\nv\r\n
}

export interface IdleSet {
  sockets: Socket[]
  agent: Agent
}

/** `redis` sessions after AUTH and `http` keep-alive connections after one request, all left idle */
export async function openIdle(g: { ports: { redis: number; http: number } }, token: string, counts: { redis: number; http: number }): Promise<IdleSet> {
  const sockets: Socket[] = []
  for (let i = 0; i < counts.redis; i += 50) {
    await Promise.all(
      Array.from({ length: Math.min(50, counts.redis - i) }, async () => {
        const s = connect({ host: '127.0.0.1', port: g.ports.redis })
        s.on('error', () => {})
        await once(s, 'connect')
        s.write(resp('AUTH', token))
        await once(s, 'data')
        sockets.push(s)
      }),
    )
  }
  // maxFreeSockets: node's default (256) would close the rest as soon as their request ended
  const agent = new Agent({ keepAlive: true, maxSockets: Math.max(1, counts.http), maxFreeSockets: Math.max(1, counts.http) })
  await Promise.all(
    Array.from(
      { length: counts.http },
      () =>
        new Promise<void>((resolve, reject) => {
          request({ host: '127.0.0.1', port: g.ports.http, path: '/v1/models', agent, headers: { authorization: `Bearer ${token}` } }, (res) => res.resume().on('end', resolve))
            .on('error', reject)
            .end()
        }),
    ),
  )
  return { sockets, agent }
}
