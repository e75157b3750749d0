// A TCP relay in front of a real upstream server that the test can shut: while held, a connection the
// gateway opens is accepted and then left waiting (its bytes stay unread, the real server is not yet
// dialled) until release(). That pins the gateway inside its upstream connect for as long as a test
// needs — long enough to do something to the client connection at exactly that point — without a
// sleep and without touching the gateway's code. Open, it relays every byte both ways unchanged.
import { createServer, connect, type Server, type Socket } from 'node:net'
import { once } from 'node:events'

export interface Gate {
  port: number
  /** connections opened from now on wait, accepted, until release() */
  hold(): void
  /** dials the real server for every waiting connection, and for those that come later */
  release(): void
  /** resolves when the next connection is accepted (call before the gateway would connect) */
  nextAccept(): Promise<void>
  close(): Promise<void>
}

export async function startGate(upstream: { host: string; port: number }): Promise<Gate> {
  let held = false
  const waiting: Socket[] = []
  const live = new Set<Socket>()
  let onAccept: (() => void) | undefined
  const relay = (c: Socket) => {
    const u = connect({ host: upstream.host, port: upstream.port })
    live.add(u)
    u.on('error', () => c.destroy())
    c.on('error', () => u.destroy())
    u.on('close', () => (live.delete(u), c.destroy()))
    c.on('close', () => u.destroy())
    c.pipe(u)
    u.pipe(c)
    c.resume()
  }
  const server: Server = createServer({ allowHalfOpen: true }, (c) => {
    live.add(c)
    c.on('close', () => live.delete(c))
    c.on('error', () => {})
    c.pause()
    const wake = onAccept
    onAccept = undefined
    if (held) waiting.push(c)
    else relay(c)
    wake?.()
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    port: (server.address() as { port: number }).port,
    hold: () => void (held = true),
    release() {
      held = false
      for (const c of waiting.splice(0)) if (!c.destroyed) relay(c)
    },
    nextAccept: () => new Promise<void>((r) => (onAccept = r)),
    async close() {
      for (const s of live) s.destroy()
      server.close()
    },
  }
}
