// Runs Portcullis in its own process so that its CPU and memory are its own: the bench reads its
// peak RSS from /proc and the load generators never share its event loop. Reads a spec (JSON) from
// argv[2], prints one marked JSON line (`@@bench {…}`) on stdout — {ready, targets, token} or {unavailable} or {error} —
// and serves until SIGTERM. Each further line on stdin ({targets, masking}) reloads the config and
// answers with another marked line.
//
// Like `portcullis start`, it runs from the build (dist/bench-gateway-child.mjs, scripts/build.mjs)
// when that is current, else from these sources through tsx (lib/gateway.ts picks). The audit log is
// the config's `audit.destination` file, written the way a user's is (batched lines), not a stream
// of the bench's own.
//
// `workers` above 1 (`--workers N`): this process is a node:cluster primary (the gateway's own
// runPrimary, as `portcullis start` with `workers: N` runs it) and its forks, which run this same
// file, are the workers reading the config file it wrote. Such a child serves one scenario: it
// takes no reload (the bench starts one per scenario).
import { readFileSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { createInterface } from 'node:readline'
import { applyV8Flags } from '../../packages/gateway/bin/v8-flags.mjs'

// the V8 settings `portcullis` applies, before any WebAssembly is compiled
applyV8Flags()

interface ChildSpec {
  dir: string
  workers?: number
  targets: Record<string, unknown>[]
  masking: Record<string, unknown>[]
}

function say(msg: Record<string, unknown>): void {
  // a marked line: the gateway's own log may share stdout
  process.stdout.write('@@bench ' + JSON.stringify(msg) + '\n')
}

/** the import written out (not a name passed in) so that the build bundles the package */
async function importOr(load: () => Promise<unknown>): Promise<Record<string, unknown> | undefined> {
  try {
    return (await load()) as Record<string, unknown>
  } catch {
    return undefined
  }
}

async function main(): Promise<void> {
  const spec = JSON.parse(readFileSync(process.argv[2], 'utf8')) as ChildSpec
  const gw = await importOr(() => import('@portcullis/gateway'))
  const core = await importOr(() => import('@portcullis/core'))
  if (typeof gw?.startGateway !== 'function') return say({ unavailable: 'gateway not available yet' })
  const configFile = join(spec.dir, 'portcullis.yaml')
  const workers = spec.workers ?? 1
  if (workers > 1 && (gw.isClusterWorker as () => boolean)()) {
    const log = (gw.createLogger as (s: NodeJS.WritableStream, l: string) => unknown)(process.stderr, 'warn')
    await (gw.runWorker as (o: unknown) => Promise<number>)({ configFile, log, deadlineMs: 5_000 })
    return
  }
  if (typeof core?.parseConfig !== 'function' || typeof core?.createDevIssuer !== 'function') {
    return say({ unavailable: 'core config/identity not available yet' })
  }
  const issuer = await (core.createDevIssuer as (o: { dir: string }) => Promise<{
    mint(o: { sub: string; groups: string[] }): Promise<string>
    issuerConfig(): Record<string, unknown>
  }>)({ dir: spec.dir })
  const rawOf = (targets: Record<string, unknown>[], masking: Record<string, unknown>[]) => ({
    identity: { issuers: [issuer.issuerConfig()] },
    recording: { dir: join(spec.dir, 'recordings'), onFailure: 'block' },
    audit: { destination: join(spec.dir, 'audit.log') },
    targets,
    rules: [
      // the bench principal may do what a workload does; anything else is blocked by default
      { id: 'bench-data', when: { groups: ['bench'], class: ['session', 'read', 'write', 'delete'] }, action: 'allow' },
    ],
    masking,
  })
  // JSON is YAML: the config goes through the same parser as a user's file
  const configOf = (targets: Record<string, unknown>[], masking: Record<string, unknown>[]) =>
    (core.parseConfig as (text: string, file: string) => unknown)(JSON.stringify(rawOf(targets, masking)), 'bench.yaml')
  if (workers > 1) {
    const config = configOf(spec.targets, spec.masking)
    writeFileSync(configFile, JSON.stringify({ ...rawOf(spec.targets, spec.masking), workers }))
    const log = (gw.createLogger as (s: NodeJS.WritableStream, l: string) => unknown)(process.stderr, 'warn')
    const token = await issuer.mint({ sub: 'bench', groups: ['bench'] })
    const code = await (gw.runPrimary as (o: unknown) => Promise<number>)({
      config, workers, log, deadlineMs: 5_000,
      onReady: (targets: Record<string, { host: string; port: number }>) => say({ ready: true, targets, token }),
    })
    process.exit(code)
  }
  const gateway = (await (gw.startGateway as (c: unknown) => Promise<{
    targets: Record<string, { host: string; port: number }>
    reload(c: unknown): Promise<void>
    close(): Promise<void>
  }>)(configOf(spec.targets, spec.masking)))
  const ready = async (names: string[]) => {
    const targets: Record<string, { host: string; port: number }> = {}
    for (const n of names) {
      if (!gateway.targets[n]) throw new Error(`target ${n} is not listening`)
      targets[n] = { host: gateway.targets[n].host, port: gateway.targets[n].port }
    }
    say({ ready: true, targets, token: await issuer.mint({ sub: 'bench', groups: ['bench'] }) })
  }
  await ready(spec.targets.map(t => String(t.name)))

  // one gateway serves a whole run: each scenario sends its targets and masking rules as a reload
  createInterface({ input: process.stdin }).on('line', line => {
    const next = JSON.parse(line) as { targets: Record<string, unknown>[]; masking: Record<string, unknown>[] }
    gateway.reload(configOf(next.targets, next.masking))
      .then(() => ready(next.targets.map(t => String(t.name))))
      .catch(err => say({ error: (err as Error).stack ?? String(err) }))
  })

  let closing = false
  const stop = async () => {
    if (closing) return
    closing = true
    // closing core flushes the audit file and seals the recordings
    await gateway.close().catch(() => {})
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

main().catch(err => {
  say({ error: (err as Error).stack ?? String(err) })
  process.exit(1)
})
