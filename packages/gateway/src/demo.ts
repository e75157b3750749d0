// The embedded default (`portcullis start` with no config): PGlite + pgvector seeded with a small
// RAG data set that carries PII, a Redis target when redis-server is installed, a dev token issuer,
// a demo policy and recordings under a temp dir — everything a first run needs on one machine.
import { mkdtemp, mkdir, writeFile, rm } from 'node:fs/promises'
import { createServer, connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { parseConfig, type Config } from '@portcullis/core'
import { startPglite, type PgliteServer } from '@portcullis/fixtures/pglite'
import { startRedis, type RedisServer } from '@portcullis/fixtures/redis'
import { redisHashes } from '@portcullis/fixtures/rag-data'
import { startGateway, type Gateway } from './gateway.ts'
import { devIssuerConfig, devIssuerDir, mintDevToken } from './dev-tokens.ts'
import { createLogger, silentLogger } from './log.ts'

export interface DemoOptions {
  /** where config, secrets, recordings and the audit log go (default: a new temp dir) */
  dir?: string
  /** print the ready-to-paste lines and log to stderr (default false) */
  log?: boolean
  /** use ephemeral ports instead of 15432 / 16379 / 9090 (tests) */
  ephemeral?: boolean
  /** dev token key set (default ~/.portcullis/dev-issuer, shared with `portcullis token`) */
  issuerDir?: string
  /** start the Redis target when redis-server is installed (default true) */
  redis?: boolean
}

export interface Demo {
  gateway: Gateway
  dir: string
  configFile: string
  config: Config
  pglite: PgliteServer
  redis?: RedisServer
  tokens: { agent: string; approver: string; auditor: string }
  /** the lines printed on start, ready to paste */
  instructions: string
  close(): Promise<void>
}

export const DEMO_TOKEN_TTL_SECONDS = 8 * 3600

export async function startDemo(opts: DemoOptions = {}): Promise<Demo> {
  const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), 'portcullis-demo-')))
  const issuerDir = opts.issuerDir ?? devIssuerDir()
  const stops: Array<() => Promise<void>> = []
  const cleanup = async () => {
    for (const stop of stops.reverse()) await stop().catch(() => {})
  }
  try {
    await mkdir(join(dir, 'secrets'), { recursive: true, mode: 0o700 })
    await mkdir(join(dir, 'recordings'), { recursive: true })
    const pglite = await startPglite({ seed: true })
    stops.push(() => pglite.stop())
    await writeFile(join(dir, 'secrets', 'pglite'), pglite.password, { mode: 0o600 })

    let redis: RedisServer | undefined
    if ((opts.redis ?? true) && onPath('redis-server')) {
      const password = randomBytes(12).toString('hex')
      redis = await startRedis({ password, search: true })
      stops.push(() => redis!.stop())
      await writeFile(join(dir, 'secrets', 'redis'), password, { mode: 0o600 })
      await seedRedis(redis.port, password)
    }

    // Concrete ports even when ephemeral: the config refuses two targets on the same address, 127.0.0.1:0 included.
    const pick = async (preferred: number) => (!opts.ephemeral && (await portFree(preferred)) ? preferred : freePort())
    const ports = { admin: await pick(9090), postgres: await pick(15432), redis: await pick(16379) }
    const issuer = await devIssuerConfig(issuerDir)
    const yaml = demoConfigYaml({ dir, issuer, pglite, redis, ports })
    const configFile = join(dir, 'portcullis.yaml')
    await writeFile(configFile, yaml)
    const config = parseConfig(yaml, configFile)

    const log = opts.log ? createLogger(process.stderr) : silentLogger
    const gateway = await startGateway(config, { configFile, log })
    stops.push(() => gateway.close(2000))

    const mint = (sub: string, groups: string[]) =>
      mintDevToken({ sub, groups, ttlSeconds: DEMO_TOKEN_TTL_SECONDS, dir: issuerDir }).then((r) => r.token)
    const tokens = {
      agent: await mint('demo-agent', ['agents']),
      approver: await mint('demo-approver', ['approvers']),
      auditor: await mint('demo-auditor', ['auditors']),
    }
    const instructions = formatInstructions({ gateway, tokens, redis: redis !== undefined, dir })
    if (opts.log) process.stdout.write(instructions)

    let closed: Promise<void> | undefined
    return {
      gateway,
      dir,
      configFile,
      config,
      pglite,
      redis,
      tokens,
      instructions,
      close() {
        closed ??= (async () => {
          await cleanup()
          // Recordings and the audit log stay for `portcullis verify` / `replay`; the secrets go.
          await rm(join(dir, 'secrets'), { recursive: true, force: true })
        })()
        return closed
      },
    }
  } catch (err) {
    await cleanup()
    throw err
  }
}

interface ConfigInputs {
  dir: string
  issuer: { issuer: string; audience: string; jwksFile: string }
  pglite: PgliteServer
  redis: RedisServer | undefined
  ports: { admin: number; postgres: number; redis: number }
}

function demoConfigYaml({ dir, issuer, pglite, redis, ports }: ConfigInputs): string {
  const q = (s: string) => JSON.stringify(s)
  const redisTarget = redis
    ? `  - name: demo-redis
    protocol: redis
    listen: 127.0.0.1:${ports.redis}
    upstream: { host: ${redis.host}, port: ${redis.port}, password: { secret: redis } }
`
    : ''
  const redisSecret = redis ? `  redis: { file: ${q(join(dir, 'secrets', 'redis'))} }\n` : ''
  return `# Portcullis embedded demo (generated). Edit and save: the running demo reloads it.
admin: { listen: 127.0.0.1:${ports.admin} }
identity:
  issuers:
    - issuer: ${q(issuer.issuer)}
      audience: ${q(issuer.audience)}
      jwksFile: ${q(issuer.jwksFile)}
      algorithms: [ES256]
      groupsClaim: groups
secrets:
  pglite: { file: ${q(join(dir, 'secrets', 'pglite'))} }
${redisSecret}recording: { dir: ${q(join(dir, 'recordings'))}, onFailure: block }
audit: { destination: ${q(join(dir, 'audit.jsonl'))} }
approvals: { timeout: 5m }
targets:
  - name: demo-postgres
    protocol: postgres
    listen: 127.0.0.1:${ports.postgres}
    upstream: { host: ${pglite.host}, port: ${pglite.port}, database: ${pglite.database}, user: ${pglite.user}, password: { secret: pglite } }
${redisTarget}rules:
  - { id: read, when: { groups: [agents, approvers, auditors], class: [session, read] }, action: allow }
  - { id: agents-write, when: { groups: [agents], class: [write, delete] }, action: approve, approvers: [approvers],
      reason: "writes need a human approver" }
  - { id: no-bulk-or-schema, when: { class: [bulk-delete, schema-change] }, action: block,
      reason: "bulk deletes and schema changes are blocked in the demo" }
  - { id: no-admin, when: { class: [admin] }, action: block, reason: "server-side code, files and config are off limits" }
masking:
  # Everyone the demo mints tokens for except group auditors sees emails and API keys redacted.
  - id: pii
    when: { groups: [agents, approvers] }
    columns: [customers.email, customers.phone]
    fields: [email, phone]
    detectors: [email, api-key]
    method: redact
`
}

function formatInstructions(o: { gateway: Gateway; tokens: Demo['tokens']; redis: boolean; dir: string }): string {
  const pg = o.gateway.targets['demo-postgres']!
  const rd = o.gateway.targets['demo-redis']
  const admin = o.gateway.admin?.url ?? ''
  const lines = [
    '',
    'Portcullis demo is running (dev tokens below are for this demo only; they expire in 8h).',
    '',
    `Agent token (group agents):        ${o.tokens.agent}`,
    `Approver token (group approvers):  ${o.tokens.approver}`,
    `Auditor token (group auditors, sees unmasked PII): ${o.tokens.auditor}`,
    '',
    'Postgres (PGlite + pgvector, tables customers and documents):',
    `  PGPASSWORD=${o.tokens.agent} psql "host=${pg.host} port=${pg.port} dbname=postgres user=agent sslmode=disable"`,
  ]
  if (rd) {
    lines.push('Redis (hashes customer:1 … customer:6):', `  redis-cli -h ${rd.host} -p ${rd.port} --no-auth-warning -a ${o.tokens.agent}`)
  } else {
    lines.push('Redis: redis-server is not on PATH, so there is no Redis target.')
  }
  lines.push(
    '',
    `Admin API and approvals page: ${admin}/`,
    `  PORTCULLIS_ADMIN=${admin} PORTCULLIS_TOKEN=${o.tokens.approver} pnpm exec portcullis approvals list`,
    `  PORTCULLIS_ADMIN=${admin} PORTCULLIS_TOKEN=${o.tokens.approver} pnpm exec portcullis approvals approve <id>`,
    '',
    `Config (hot-reloaded): ${join(o.dir, 'portcullis.yaml')}`,
    `Recordings: ${join(o.dir, 'recordings')}   Audit log: ${join(o.dir, 'audit.jsonl')}`,
    'Stop with Ctrl-C.',
    '',
  )
  return lines.join('\n')
}

function onPath(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number }
      s.close(() => resolve(port))
    })
  })
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createServer()
    s.once('error', () => resolve(false))
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)))
  })
}

/** HSETs over raw RESP: the gateway package has no Redis client, and this is all it needs. */
async function seedRedis(port: number, password: string): Promise<void> {
  const cmd = (...args: string[]) => `*${args.length}\r\n` + args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')
  const hashes = redisHashes()
  const payload =
    cmd('AUTH', password) + hashes.map((h) => cmd('HSET', h.key, ...Object.entries(h.fields).flat())).join('')
  const expected = 1 + hashes.length
  await new Promise<void>((resolve, reject) => {
    const sock = connect({ host: '127.0.0.1', port })
    let replies = ''
    sock.setEncoding('utf8')
    sock.on('data', (d: string) => {
      replies += d
      if (replies.startsWith('-')) {
        sock.destroy()
        return reject(new Error(`redis seed failed: ${replies.split('\r\n')[0]}`))
      }
      if (replies.split('\r\n').length - 1 >= expected) {
        sock.end()
        resolve()
      }
    })
    sock.on('error', reject)
    sock.write(payload)
  })
}
