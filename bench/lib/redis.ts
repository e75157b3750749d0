// The bench's own redis-server and its reference proxy, nutcracker (twemproxy). Redis runs without a
// password: twemproxy cannot pass a client's AUTH through, so every path talks to the same
// unauthenticated server (Portcullis still authenticates its clients with a token).
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs'
import { join } from 'node:path'
import { daemon, freePort, run, waitForPort, which } from './proc.ts'
import { Unavailable } from './types.ts'

export interface RedisServer {
  host: string
  port: number
  cli(...args: string[]): Promise<string>
  stop(): Promise<void>
}

export async function startRedis(tmp: string): Promise<RedisServer> {
  const exe = which('redis-server')
  if (!exe) throw new Unavailable('redis-server not installed')
  const dir = mkdtempSync(join(tmp, 'redis-'))
  const port = await freePort()
  const d = daemon(exe, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--protected-mode', 'no'])
  await waitForPort(port, '127.0.0.1', 10_000, d.child)
  return {
    host: '127.0.0.1',
    port,
    async cli(...args) {
      const r = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args])
      if (r.code !== 0) throw new Error(`redis-cli: ${r.stderr}`)
      return r.stdout
    },
    async stop() { await d.stop(); rmSync(dir, { recursive: true, force: true }) },
  }
}

export interface Nutcracker { host: string; port: number; stop(): Promise<void> }

export async function startNutcracker(tmp: string, upstream: { host: string; port: number }): Promise<Nutcracker> {
  const exe = which('nutcracker')
  if (!exe) throw new Unavailable('nutcracker not installed')
  const dir = mkdtempSync(join(tmp, 'nutcracker-'))
  const port = await freePort()
  const statsPort = await freePort()
  const conf = join(dir, 'nutcracker.yml')
  writeFileSync(conf, [
    'bench:',
    `  listen: 127.0.0.1:${port}`,
    '  hash: fnv1a_64',
    '  distribution: ketama',
    '  redis: true',
    '  preconnect: true',
    '  server_connections: 1',
    '  servers:',
    `    - ${upstream.host}:${upstream.port}:1`,
    '',
  ].join('\n'))
  const d = daemon(exe, ['-c', conf, '-s', String(statsPort), '-a', '127.0.0.1', '-o', join(dir, 'nutcracker.log')])
  try {
    await waitForPort(port, '127.0.0.1', 10_000, d.child)
  } catch (err) {
    throw new Error(`nutcracker did not start: ${(err as Error).message}\n${d.output()}`)
  }
  return { host: '127.0.0.1', port, async stop() { await d.stop(); rmSync(dir, { recursive: true, force: true }) } }
}
