// The extra columns beside direct and the reference proxy (issue 13): the plain Node relay, what
// any Node proxy reaches on this machine (lib/relay-child.mjs: a net pipe for Postgres and Redis,
// node:http + undici for HTTP), and Portkey's open-source AI gateway (`@portkey-ai/gateway`, a bench
// devDependency) for the HTTP scenarios. Each runs in a process of its own.
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'
import { createRequire } from 'node:module'
import { existsSync } from 'node:fs'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { daemon, freePort, waitForPort } from './proc.ts'
import { Unavailable } from './types.ts'

const here = dirname(fileURLToPath(import.meta.url))

export interface Proxy { host: string; port: number; stop(): Promise<void>; /** the relay's process (lib/pg-cpu-per-tx.ts reads its CPU time) */ pid?: number }

/** the column names rows carry their values under (Row.columns) */
export const RELAY = 'Node relay'
export const PORTKEY = 'Portkey'

async function relay(kind: 'tcp' | 'http', upstream: { host: string; port: number }): Promise<Proxy> {
  const child = spawn(process.execPath, [join(here, 'relay-child.mjs'), kind, upstream.host, String(upstream.port)], { stdio: ['ignore', 'pipe', 'inherit'] })
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve)
    child.once('close', code => reject(new Error(`relay exited (${code})`)))
  })
  const { port } = JSON.parse(line) as { port: number }
  return {
    host: '127.0.0.1',
    port,
    pid: child.pid,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return
      const closed = new Promise<void>(r => child.once('close', () => r()))
      child.kill('SIGTERM')
      await closed
    },
  }
}

/** a net pipe to the upstream: no framing, no logic */
export const startTcpRelay = (upstream: { host: string; port: number }) => relay('tcp', upstream)
/** node:http in, undici keep-alive pool out, bodies streamed */
export const startHttpRelay = (upstream: { host: string; port: number }) => relay('http', upstream)

/**
 * Portkey's gateway (Node build, `--headless`: no console UI). Clients reach the stand-in upstream
 * through it with `x-portkey-provider: openai` and `x-portkey-custom-host` (portkeyHeaders).
 */
export async function startPortkey(): Promise<Proxy> {
  let entry: string
  try {
    const require = createRequire(join(here, '..', 'package.json'))
    entry = join(dirname(require.resolve('@portkey-ai/gateway/package.json')), 'build', 'start-server.js')
  } catch {
    throw new Unavailable('@portkey-ai/gateway not installed (pnpm install in bench/)')
  }
  if (!existsSync(entry)) throw new Unavailable('@portkey-ai/gateway has no build/start-server.js')
  const port = await freePort()
  const d = daemon(process.execPath, [entry, `--port=${port}`, '--headless'], { env: { ...process.env, NODE_ENV: 'production' } })
  try {
    await waitForPort(port, '127.0.0.1', 30_000, d.child)
  } catch (err) {
    await d.stop()
    throw new Error(`portkey did not start: ${(err as Error).message}\n${d.output().slice(-500)}`)
  }
  return { host: '127.0.0.1', port, stop: () => d.stop() }
}

/**
 * The headers a client sends through Portkey to the stand-in upstream. mask: Portkey's own local
 * guardrail that rewrites text, `default.regexReplace` on the response (its other PII guardrails
 * call a hosted service: Portkey's, Azure's, Pangea's, Promptfoo's…, which cannot run here).
 */
export function portkeyHeaders(upstream: { host: string; port: number }, mask: boolean): Record<string, string> {
  const headers: Record<string, string> = {
    'x-portkey-provider': 'openai',
    'x-portkey-custom-host': `http://${upstream.host}:${upstream.port}/v1`,
    authorization: 'Bearer sk-bench-not-a-key',
  }
  if (mask) {
    headers['x-portkey-config'] = JSON.stringify({
      provider: 'openai',
      custom_host: `http://${upstream.host}:${upstream.port}/v1`,
      output_guardrails: [{ 'default.regexReplace': { rule: '[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}', redactText: '[EMAIL]' }, deny: false }],
    })
  }
  return headers
}
