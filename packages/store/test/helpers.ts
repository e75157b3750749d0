// What the Postgres and Redis store tests share: waiting for a change or a condition, and a TCP hop
// between one store and its server that a test can cut (a network partition) and heal.
import { once } from 'node:events'
import { createServer, connect, type Server, type Socket } from 'node:net'
import type { ControlChange, ControlStore } from '@portcullis/core'

/** resolves with the first change that matches */
export function next(s: ControlStore, pred: (c: ControlChange) => boolean): Promise<ControlChange> {
  return new Promise(resolve => {
    const off = s.subscribe(c => {
      if (!pred(c)) return
      off()
      resolve(c)
    })
  })
}

/** polls `cond` every 20 ms until it holds; throws after `ms` */
export async function until(cond: () => boolean | Promise<boolean>, what: string, ms = 20_000) {
  const end = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise(r => setTimeout(r, 20))
  }
}

/** a TCP hop between one store and its server that the test can cut: a network partition */
export async function cuttable(target: { host: string; port: number }) {
  let open = true
  const sockets = new Set<Socket>()
  const proxy: Server = createServer(client => {
    if (!open) return void client.destroy()
    const up = connect(target.port, target.host)
    sockets.add(client).add(up)
    client.pipe(up).pipe(client)
    const done = () => {
      client.destroy()
      up.destroy()
      sockets.delete(client)
      sockets.delete(up)
    }
    client.on('error', done).on('close', done)
    up.on('error', done).on('close', done)
  })
  proxy.listen(0, '127.0.0.1')
  await once(proxy, 'listening')
  return {
    port: (proxy.address() as { port: number }).port,
    cut() {
      open = false
      for (const s of sockets) s.destroy()
    },
    heal() {
      open = true
    },
    close: () => new Promise<void>(r => proxy.close(() => r())),
  }
}
