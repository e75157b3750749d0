import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

export interface Upstream { host: string; port: number; events: number; stop(): Promise<void> }

const here = dirname(fileURLToPath(import.meta.url))

/** the stand-in OpenAI-shaped upstream, in its own process */
export async function startUpstream(events: number): Promise<Upstream> {
  const child = spawn(process.execPath, ['--import', 'tsx', join(here, 'upstream-child.ts')], {
    stdio: ['ignore', 'pipe', 'inherit'],
    env: { ...process.env, BENCH_SSE_EVENTS: String(events) },
  })
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve)
    child.once('close', code => reject(new Error(`upstream exited (${code})`)))
  })
  const { port } = JSON.parse(line) as { port: number }
  return {
    host: '127.0.0.1',
    port,
    events,
    async stop() {
      if (child.exitCode !== null) return
      const closed = new Promise<void>(r => child.once('close', () => r()))
      child.kill('SIGTERM')
      await closed
    },
  }
}
