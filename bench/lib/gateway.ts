// Starts Portcullis (lib/gateway-child.ts) in a child process per scenario and mode.
import { spawn } from 'node:child_process'
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
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
  /** the gateway process's peak resident set so far, MB */
  peakRssMB(): number | undefined
  stop(): Promise<void>
}

const here = dirname(fileURLToPath(import.meta.url))

export async function startGatewayChild(tmp: string, spec: GatewaySpec): Promise<GatewayHandle> {
  const dir = mkdtempSync(join(tmp, 'gw-'))
  const protocols = [...new Set(spec.targets.map(t => String(t.protocol)))]
  const specFile = join(dir, 'spec.json')
  writeFileSync(specFile, JSON.stringify({ dir, protocols, targets: spec.targets, masking: spec.masking }))
  // BENCH_CPU_PROF=DIR: the gateway writes a V8 CPU profile there when it stops (open in Chrome DevTools)
  const prof = process.env.BENCH_CPU_PROF ? ['--cpu-prof', `--cpu-prof-dir=${process.env.BENCH_CPU_PROF}`] : []
  const child = spawn(process.execPath, [...prof, '--import', 'tsx', join(here, 'gateway-child.ts'), specFile], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, NODE_ENV: 'production' },
  })
  let stderr = ''
  child.stderr!.on('data', d => { stderr = (stderr + d).slice(-4000) })
  const lines = createInterface({ input: child.stdout! })
  const first = await new Promise<Record<string, unknown>>((resolve) => {
    const timer = setTimeout(() => resolve({ error: 'gateway did not start within 60 s' }), 60_000)
    const onLine = (l: string) => {
      if (!l.startsWith('@@bench ')) return
      lines.off('line', onLine)
      clearTimeout(timer)
      try { resolve(JSON.parse(l.slice(8))) } catch { resolve({ error: `unexpected output: ${l}` }) }
    }
    lines.on('line', onLine)
    child.once('close', code => { clearTimeout(timer); resolve({ error: `gateway exited (${code}): ${stderr.trim()}` }) })
  })
  // keep draining stdout so a chatty gateway never blocks on a full pipe
  lines.on('line', () => {})
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      const closed = new Promise<void>(r => child.once('close', () => r()))
      child.kill('SIGTERM')
      const t = setTimeout(() => child.kill('SIGKILL'), 5000)
      await closed
      clearTimeout(t)
    }
    rmSync(dir, { recursive: true, force: true })
  }
  if (!first.ready) {
    await stop()
    if (first.unavailable) throw new Unavailable(String(first.unavailable))
    throw new Error(`gateway failed to start: ${String(first.error)}`)
  }
  return {
    targets: first.targets as GatewayHandle['targets'],
    token: String(first.token),
    pid: child.pid!,
    peakRssMB: () => peakRssMB(child.pid),
    stop,
  }
}
