// Runs Portcullis in its own process so that its CPU and memory are its own: the bench reads its
// peak RSS from /proc and the load generators never share its event loop. Reads a spec (JSON) from
// argv[2], prints one marked JSON line (`@@bench {…}`) on stdout — {ready, targets, token} or {unavailable} or {error} —
// and serves until SIGTERM.
import { createWriteStream, readFileSync } from 'node:fs'
import { join } from 'node:path'

interface ChildSpec {
  dir: string
  protocols: string[]
  targets: Record<string, unknown>[]
  masking: Record<string, unknown>[]
}

const CODEC_EXPORT: Record<string, [string, string]> = {
  postgres: ['@portcullis/postgres', 'postgresCodec'],
  redis: ['@portcullis/redis', 'redisCodec'],
  http: ['@portcullis/http', 'httpCodec'],
}

function say(msg: Record<string, unknown>): void {
  // a marked line: the gateway's own log may share stdout
  process.stdout.write('@@bench ' + JSON.stringify(msg) + '\n')
}

async function importOr(spec: string): Promise<Record<string, unknown> | undefined> {
  try {
    return (await import(spec)) as Record<string, unknown>
  } catch {
    return undefined
  }
}

async function main(): Promise<void> {
  const spec = JSON.parse(readFileSync(process.argv[2], 'utf8')) as ChildSpec
  const gw = await importOr('@portcullis/gateway')
  const core = await importOr('@portcullis/core')
  if (typeof gw?.startGateway !== 'function') return say({ unavailable: 'gateway not available yet' })
  if (typeof core?.parseConfig !== 'function' || typeof core?.createDevIssuer !== 'function') {
    return say({ unavailable: 'core config/identity not available yet' })
  }
  for (const p of spec.protocols) {
    const [pkg, name] = CODEC_EXPORT[p]
    const mod = await importOr(pkg)
    if (!mod || mod[name] === undefined) return say({ unavailable: `${p} codec not available yet` })
  }

  const issuer = await (core.createDevIssuer as (o: { dir: string }) => Promise<{
    mint(o: { sub: string; groups: string[] }): Promise<string>
    issuerConfig(): Record<string, unknown>
  }>)({ dir: spec.dir })
  const raw = {
    identity: { issuers: [issuer.issuerConfig()] },
    recording: { dir: join(spec.dir, 'recordings'), onFailure: 'block' },
    audit: { destination: join(spec.dir, 'audit.log') },
    targets: spec.targets,
    rules: [
      // the bench principal may do everything a workload does; anything else is blocked by default
      { id: 'bench-data', when: { groups: ['bench'], class: ['session', 'read', 'write', 'delete'] }, action: 'allow' },
    ],
    masking: spec.masking,
  }
  // JSON is YAML: the config goes through the same parser as a user's file
  const config = (core.parseConfig as (text: string, file: string) => unknown)(JSON.stringify(raw), 'bench.yaml')
  const auditStream = createWriteStream(join(spec.dir, 'audit.log'))
  const gateway = (await (gw.startGateway as (c: unknown, o: unknown) => Promise<{
    targets: Record<string, { host: string; port: number }>
    close(): Promise<void>
  }>)(config, { auditStream }))
  const token = await issuer.mint({ sub: 'bench', groups: ['bench'] })
  say({ ready: true, targets: gateway.targets, token })

  let closing = false
  const stop = async () => {
    if (closing) return
    closing = true
    await gateway.close().catch(() => {})
    auditStream.end()
    process.exit(0)
  }
  process.on('SIGTERM', stop)
  process.on('SIGINT', stop)
}

main().catch(err => {
  say({ error: (err as Error).stack ?? String(err) })
  process.exit(1)
})
