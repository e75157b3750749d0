// Child processes and ports. Every server the bench starts is a child that dies with the run.
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { createServer, connect } from 'node:net'
import { existsSync, readFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import { Unavailable } from './types.ts'

export function which(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(':').concat(['/usr/sbin', '/sbin', '/usr/lib/postgresql/15/bin'])) {
    const p = `${dir}/${cmd}`
    if (dir && existsSync(p)) return p
  }
  return undefined
}

/** a tool the scenario cannot run without: missing, the scenario reads 'n/a (… not installed)' */
export function requireTool(cmd: string): string {
  const p = which(cmd)
  if (!p) throw new Unavailable(`${cmd} not installed`)
  return p
}

export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0

/** runs as the `postgres` user when we are root: initdb, postgres and pgbouncer refuse root */
export function asPostgres(cmd: string, args: string[]): [string, string[]] {
  return isRoot ? ['runuser', ['-u', 'postgres', '--', cmd, ...args]] : [cmd, args]
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.once('error', reject)
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address()
      const port = typeof addr === 'object' && addr ? addr.port : 0
      srv.close(() => resolve(port))
    })
  })
}

export async function waitForPort(port: number, host = '127.0.0.1', timeoutMs = 20_000, child?: ChildProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (child && child.exitCode !== null) throw new Error(`process exited (${child.exitCode}) before listening on ${port}`)
    const ok = await new Promise<boolean>(resolve => {
      const s = connect(port, host)
      s.once('connect', () => { s.destroy(); resolve(true) })
      s.once('error', () => resolve(false))
    })
    if (ok) return
    if (Date.now() > deadline) throw new Error(`nothing listens on ${host}:${port} after ${timeoutMs} ms`)
    await sleep(50)
  }
}

export interface RunResult { code: number | null; stdout: string; stderr: string }

/** runs a command to completion and captures its output */
export function run(cmd: string, args: string[], opts: SpawnOptions & { timeoutMs?: number } = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout!.setEncoding('utf8').on('data', d => { stdout += d })
    child.stderr!.setEncoding('utf8').on('data', d => { stderr += d })
    const timer = opts.timeoutMs ? setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs) : undefined
    child.once('error', err => { clearTimeout(timer); reject(err) })
    child.once('close', code => { clearTimeout(timer); resolve({ code, stdout, stderr }) })
  })
}

/** a long-running server child; stop() sends SIGTERM then SIGKILL */
export interface Daemon {
  child: ChildProcess
  stop(): Promise<void>
  /** what it wrote, for error messages */
  output(): string
}

export function daemon(cmd: string, args: string[], opts: SpawnOptions = {}): Daemon {
  const child = spawn(cmd, args, { ...opts, stdio: ['ignore', 'pipe', 'pipe'] })
  let out = ''
  const keep = (d: Buffer) => { out = (out + d.toString('utf8')).slice(-8000) }
  child.stdout!.on('data', keep)
  child.stderr!.on('data', keep)
  child.on('error', err => { out += `\n${err.message}` })
  return {
    child,
    output: () => out,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return
      const closed = new Promise<void>(resolve => child.once('close', () => resolve()))
      child.kill('SIGTERM')
      const t = setTimeout(() => child.kill('SIGKILL'), 5000)
      await closed
      clearTimeout(t)
    },
  }
}

/** peak resident set (VmHWM) of a live process, MB; undefined off Linux */
export function peakRssMB(pid: number | undefined): number | undefined {
  if (!pid) return undefined
  try {
    const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
    return m ? Number(m[1]) / 1024 : undefined
  } catch {
    return undefined
  }
}

/**
 * user + system time of a process so far, µs (/proc, ticks of 10 ms): on a shared machine events/s
 * moves several-fold with the load, the CPU the gateway spends per event much less
 */
export function cpuMicros(pid: number): number | undefined {
  try {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ')
    return (Number(f[11]) + Number(f[12])) * 10_000
  } catch {
    return undefined
  }
}
