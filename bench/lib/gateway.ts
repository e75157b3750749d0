// Portcullis runs in a child process (lib/gateway-child.ts), one per mode for the whole run: each
// scenario reconfigures it (a config reload: its targets, its masking rules) instead of paying for
// a process start. A scenario that measures memory asks for a fresh process of its own.
// The child runs from the build (dist/, `node scripts/build.mjs`, which `pnpm bench` runs first) as
// `portcullis start` does, so the bench measures the process users run; without a current build it
// runs the sources through tsx and says so once. PORTCULLIS_RUN=source|build forces either.
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs'
import { createInterface, type Interface } from 'node:readline'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { runtimeFor } from '../../packages/gateway/bin/built.mjs'
import { peakRssMB } from './proc.ts'
import { Unavailable } from './types.ts'
import type { GatewaySpec } from './types.ts'

/** inspect: auth, classification, policy, audit and recording, no masking rule hits; mask: plus a rule that hits */
export type GatewayMode = 'inspect' | 'mask'
export const MODES: GatewayMode[] = ['inspect', 'mask']

export interface GatewayHandle {
  targets: Record<string, { host: string; port: number }>
  /** a dev token for subject `bench`, group `bench` */
  token: string
  pid: number
  /** what the gateway process runs: the build (plain Node) or the sources through tsx */
  runtime: GatewayRuntime
  /** the gateway process's peak resident set so far, MB (with workers: the primary's alone) */
  peakRssMB(): number | undefined
  /** a fresh process stops; a shared one stays for the next scenario */
  stop(): Promise<void>
}

const here = dirname(fileURLToPath(import.meta.url))

export type GatewayRuntime = 'build' | 'tsx'

let toldStale = false

/** node's arguments for the child: the built child when current, else the source through tsx */
function childCommand(): { runtime: GatewayRuntime; args: string[] } {
  const built = runtimeFor('bench-gateway-child.mjs')
  if (built.file) return { runtime: 'build', args: [built.file] }
  if (built.refuse) throw new Error(built.refuse)
  if (!toldStale && process.env.PORTCULLIS_RUN !== 'source') {
    toldStale = true
    process.stderr.write(`[bench] the gateway runs from its sources through tsx (${built.stale}): node scripts/build.mjs builds what users run\n`)
  }
  return { runtime: 'tsx', args: ['--import', 'tsx', join(here, 'gateway-child.ts')] }
}

const CODEC_EXPORT: Record<string, [string, string]> = {
  postgres: ['@portcullis/postgres', 'postgresCodec'],
  redis: ['@portcullis/redis', 'redisCodec'],
  http: ['@portcullis/http', 'httpCodec'],
}

/** a protocol whose codec has not landed yet is 'n/a', not a failure */
async function assertCodecs(spec: GatewaySpec): Promise<void> {
  for (const p of new Set(spec.targets.map(t => String(t.protocol)))) {
    const [pkg, name] = CODEC_EXPORT[p] ?? []
    const mod = pkg ? ((await import(pkg).catch(() => undefined)) as Record<string, unknown> | undefined) : undefined
    if (!mod || mod[name] === undefined) throw new Unavailable(`${p} codec not available yet`)
  }
}

type Reply = { ready?: boolean; targets?: GatewayHandle['targets']; token?: string; unavailable?: string; error?: string }

export class GatewayProcess {
  private readonly child: ChildProcess
  private readonly lines: Interface
  private readonly dir: string
  private stderr = ''
  private waiting: ((r: Reply) => void) | undefined
  private exited = false
  readonly runtime: GatewayRuntime

  /** node:cluster workers (1: one process, as without a cluster) */
  readonly workers: number

  private constructor(tmp: string, spec: GatewaySpec, workers: number, childFile?: string) {
    // childFile: another build's bench-gateway-child.mjs (an A/B of two builds, bench/sse-ab.ts)
    const command = childFile !== undefined ? { runtime: 'build' as const, args: [childFile] } : childCommand()
    this.runtime = command.runtime
    this.workers = workers
    this.dir = mkdtempSync(join(tmp, 'gw-'))
    const specFile = join(this.dir, 'spec.json')
    writeFileSync(specFile, JSON.stringify({ dir: this.dir, targets: spec.targets, masking: spec.masking, workers }))
    // BENCH_CPU_PROF=DIR: the gateway writes a V8 CPU profile there when it stops (Chrome DevTools opens it)
    // (BENCH_CPU_PROF_INTERVAL=µs: sampled that often, for line ticks of a short run; V8's default is 1000)
    const prof = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`, ...(process.env.BENCH_CPU_PROF_INTERVAL ? [`--cpu-prof-interval=${process.env.BENCH_CPU_PROF_INTERVAL}`] : [])] : []
    this.child = spawn(process.execPath, [...prof, ...command.args, specFile], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: { ...process.env, NODE_ENV: 'production' },
    })
    this.child.stderr!.on('data', d => { this.stderr = (this.stderr + d).slice(-4000) })
    // every line is read, so a chatty gateway never blocks on a full pipe; only marked ones matter
    this.lines = createInterface({ input: this.child.stdout! })
    this.lines.on('line', l => {
      if (!l.startsWith('@@bench ')) return
      let msg: Reply
      try { msg = JSON.parse(l.slice(8)) } catch { msg = { error: `unexpected output: ${l}` } }
      const w = this.waiting
      this.waiting = undefined
      w?.(msg)
    })
    this.child.once('close', code => {
      this.exited = true
      const w = this.waiting
      this.waiting = undefined
      w?.({ error: `gateway exited (${code}): ${this.stderr.trim()}` })
    })
  }

  get pid(): number { return this.child.pid! }
  get alive(): boolean { return !this.exited }

  private reply(timeoutMs = 60_000): Promise<Reply> {
    return new Promise(resolve => {
      const timer = setTimeout(() => { this.waiting = undefined; resolve({ error: `gateway did not answer within ${timeoutMs / 1000} s` }) }, timeoutMs)
      this.waiting = r => { clearTimeout(timer); resolve(r) }
    })
  }

  private handle(r: Reply, fresh: boolean): GatewayHandle {
    if (r.unavailable) throw new Unavailable(r.unavailable)
    if (!r.ready) throw new Error(`gateway: ${r.error}`)
    return {
      targets: r.targets!,
      token: r.token!,
      pid: this.pid,
      runtime: this.runtime,
      peakRssMB: () => peakRssMB(this.pid),
      stop: fresh ? () => this.stop() : async () => {},
    }
  }

  static async start(tmp: string, spec: GatewaySpec, fresh: boolean, workers = 1, childFile?: string): Promise<{ process: GatewayProcess; handle: GatewayHandle }> {
    await assertCodecs(spec)
    const p = new GatewayProcess(tmp, spec, workers, childFile)
    const r = await p.reply()
    if (!r.ready) await p.stop()
    return { process: p, handle: p.handle(r, fresh) }
  }

  /** applies another scenario's targets and masking rules to the running gateway */
  async configure(spec: GatewaySpec): Promise<GatewayHandle> {
    await assertCodecs(spec)
    const answer = this.reply()
    this.child.stdin!.write(JSON.stringify({ targets: spec.targets, masking: spec.masking }) + '\n')
    return this.handle(await answer, false)
  }

  async stop(): Promise<void> {
    if (!this.exited) {
      const closed = new Promise<void>(r => this.child.once('close', () => r()))
      this.child.kill('SIGTERM')
      const t = setTimeout(() => this.child.kill('SIGKILL'), 10_000)
      await closed
      clearTimeout(t)
    }
    rmSync(this.dir, { recursive: true, force: true })
  }
}
