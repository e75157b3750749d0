// The embedded default (`portcullis start` with no config): PGlite + pgvector seeded with a small
// RAG data set that carries PII, a Redis target (redis-server found, or installed from Debian when
// missing and running as root), an HTTP target in front of a local stand-in for an OpenAI-compatible
// API, a dev token issuer, a demo policy and recordings under a temp dir — everything a first run
// needs on one machine, with all three protocols.
import { mkdtemp, mkdir, writeFile, rm } from 'node:fs/promises'
import { createServer, connect } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { randomBytes } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { parseConfig, type Config } from '@portcullis/core'
import { freePort } from '@portcullis/fixtures/net'
import { startPglite, type PgliteServer } from '@portcullis/fixtures/pglite'
import { REDIS_SERVER, startRedis, type RedisServer } from '@portcullis/fixtures/redis'
// NOT an LLM: the test fixture that speaks the OpenAI API's shapes with canned answers (see its header)
import { startHttpUpstream, type HttpUpstream } from '@portcullis/fixtures/http-upstream'
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
  /** install Debian's redis-server with apt-get when it is missing and the process runs as root (default: when `log`) */
  installRedis?: boolean
  /** start the HTTP target and its OpenAI-compatible stand-in (default true) */
  http?: boolean
}

export interface Demo {
  gateway: Gateway
  dir: string
  configFile: string
  config: Config
  pglite: PgliteServer
  redis?: RedisServer
  /** the local stand-in for an OpenAI-compatible API behind the demo-llm target */
  llm?: HttpUpstream
  tokens: { agent: string; approver: string; auditor: string }
  /** the lines printed on start, ready to paste */
  instructions: string
  close(): Promise<void>
}

export const DEMO_TOKEN_TTL_SECONDS = 8 * 3600

/** what the stand-in answers every chat: an email and an API key, for the masking to show */
export const DEMO_LLM_REPLY = 'Support is ada@example.com; the staging key is sk-proj-DEMOdemo1234567890abcdef (rotate it).'

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
    let redisNote: string | undefined
    const say = opts.log ? (line: string) => process.stderr.write(`demo: ${line}\n`) : () => {}
    const found = opts.redis === false ? undefined : findRedisServer({ install: opts.installRedis ?? opts.log === true, say })
    if (found && !found.ok) redisNote = found.note
    if (found?.ok) {
      const password = randomBytes(12).toString('hex')
      redis = await startRedis({ password, search: true })
      stops.push(() => redis!.stop())
      await writeFile(join(dir, 'secrets', 'redis'), password, { mode: 0o600 })
      await seedRedis(redis.port, password)
    }

    let llm: HttpUpstream | undefined
    if (opts.http ?? true) {
      llm = await startHttpUpstream({ reply: DEMO_LLM_REPLY, extra: { system_fingerprint: 'fp_portcullis_demo_stand_in' } })
      stops.push(() => llm!.stop())
      // the key the gateway presents upstream: the client never holds it
      await writeFile(join(dir, 'secrets', 'llm'), `sk-demo-upstream-${randomBytes(12).toString('hex')}`, { mode: 0o600 })
    }

    // Concrete ports even when ephemeral: the config refuses two targets on the same address, 127.0.0.1:0 included.
    const pick = async (preferred: number) => (!opts.ephemeral && (await portFree(preferred)) ? preferred : freePort())
    const ports = { admin: await pick(9090), postgres: await pick(15432), redis: await pick(16379), http: await pick(18080) }
    const issuer = await devIssuerConfig(issuerDir)
    const yaml = demoConfigYaml({ dir, issuer, pglite, redis, llm, ports })
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
    const instructions = formatInstructions({ gateway, tokens, dir, ...(redisNote ? { redisNote } : {}) })
    if (opts.log) process.stdout.write(instructions)

    let closed: Promise<void> | undefined
    return {
      gateway,
      dir,
      configFile,
      config,
      pglite,
      redis,
      llm,
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
  llm: HttpUpstream | undefined
  ports: { admin: number; postgres: number; redis: number; http: number }
}

function demoConfigYaml({ dir, issuer, pglite, redis, llm, ports }: ConfigInputs): string {
  const q = (s: string) => JSON.stringify(s)
  const redisTarget = redis
    ? `  - name: demo-redis
    protocol: redis
    listen: 127.0.0.1:${ports.redis}
    upstream: { host: ${redis.host}, port: ${redis.port}, password: { secret: redis } }
`
    : ''
  const redisSecret = redis ? `  redis: { file: ${q(join(dir, 'secrets', 'redis'))} }\n` : ''
  // a local stand-in for an OpenAI-compatible API (canned answers, no model): the gateway in front of it
  // is the real one
  const llmTarget = llm
    ? `  - name: demo-llm
    protocol: http
    listen: 127.0.0.1:${ports.http}
    upstream: { url: ${q(llm.url)}, auth: { header: authorization, value: "Bearer {secret}", secret: { secret: llm } } }
    options: { profile: openai }
`
    : ''
  const llmSecret = llm ? `  llm: { file: ${q(join(dir, 'secrets', 'llm'))} }\n` : ''
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
${redisSecret}${llmSecret}recording: { dir: ${q(join(dir, 'recordings'))}, onFailure: block }
audit: { destination: ${q(join(dir, 'audit.jsonl'))} }
approvals: { timeout: 5m }
targets:
  - name: demo-postgres
    protocol: postgres
    listen: 127.0.0.1:${ports.postgres}
    upstream: { host: ${pglite.host}, port: ${pglite.port}, database: ${pglite.database}, user: ${pglite.user}, password: { secret: pglite } }
${redisTarget}${llmTarget}rules:
  - { id: read, when: { groups: [agents, approvers, auditors], class: [session, read] }, action: allow }
  - { id: agents-write, when: { groups: [agents], class: [write, delete] }, action: approve, approvers: [approvers],
      reason: "writes need a human approver" }
  - { id: no-bulk-or-schema, when: { class: [bulk-delete, schema-change] }, action: block,
      reason: "bulk deletes and schema changes are blocked in the demo" }
  - { id: no-admin, when: { class: [admin] }, action: block, reason: "server-side code, files and config are off limits" }
masking:
  # Everyone the demo mints tokens for except group auditors sees emails and API keys redacted,
  # on all three targets (columns in Postgres, hash fields in Redis, JSON fields and text over HTTP).
  - id: pii
    when: { groups: [agents, approvers] }
    columns: [customers.email, customers.phone]
    fields: [email, phone]
    detectors: [email, api-key]
    method: redact
`
}

function formatInstructions(o: { gateway: Gateway; tokens: Demo['tokens']; dir: string; redisNote?: string }): string {
  const pg = o.gateway.targets['demo-postgres']!
  const rd = o.gateway.targets['demo-redis']
  const llm = o.gateway.targets['demo-llm']
  const admin = o.gateway.admin?.url ?? ''
  const agent = o.tokens.agent
  const lines = [
    '',
    'Portcullis demo is running (dev tokens below are for this demo only; they expire in 8h).',
    '',
    `Agent token (group agents):        ${agent}`,
    `Approver token (group approvers):  ${o.tokens.approver}`,
    `Auditor token (group auditors, sees unmasked PII): ${o.tokens.auditor}`,
    '',
    'Postgres (PGlite + pgvector, tables customers and documents):',
    `  PGPASSWORD=${agent} psql "host=${pg.host} port=${pg.port} dbname=postgres user=agent sslmode=disable"`,
  ]
  if (rd) {
    lines.push('Redis (hashes customer:1 … customer:6; try HGETALL customer:1, then FLUSHALL):', `  redis-cli -h ${rd.host} -p ${rd.port} --no-auth-warning -a ${agent}`)
  } else {
    lines.push(`Redis: ${o.redisNote ?? 'no Redis target.'}`)
  }
  if (llm) {
    const base = `http://${llm.host}:${llm.port}`
    const auth = `-H "Authorization: Bearer ${agent}"`
    const chat = (stream: boolean) =>
      `'{"model":"gpt-4o-mini",${stream ? '"stream":true,' : ''}"messages":[{"role":"user","content":"Who do I contact about the staging key?"}]}'`
    lines.push(
      'HTTP (an OpenAI-compatible API: a LOCAL STAND-IN with canned answers, no model behind it; its',
      'answers carry an email and an API key; the gateway in front of it, masking and recording are real):',
      `  curl -s ${base}/v1/chat/completions ${auth} -H "Content-Type: application/json" -d ${chat(false)}`,
      `  curl -sN ${base}/v1/chat/completions ${auth} -H "Content-Type: application/json" -d ${chat(true)}`,
      `  curl -s ${base}/v1/embeddings ${auth} -H "Content-Type: application/json" -d '{"model":"text-embedding-3-small","input":"hello"}'`,
      `  curl -s -X DELETE ${base}/v1/files/file-1 ${auth}    # a delete: waits for an approver`,
      '  Python (pip install openai):',
      `  python3 -c 'from openai import OpenAI; c = OpenAI(base_url="${base}/v1", api_key="${agent}"); print(c.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Who do I contact?"}]).choices[0].message.content)'`,
      '  Node (npm i openai):',
      `  node --input-type=module -e 'import OpenAI from "openai"; const c = new OpenAI({ baseURL: "${base}/v1", apiKey: "${agent}" }); const s = await c.chat.completions.create({ model: "gpt-4o-mini", stream: true, messages: [{ role: "user", content: "Who do I contact?" }] }); for await (const e of s) process.stdout.write(e.choices[0]?.delta?.content ?? ""); console.log()'`,
    )
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

export interface FindRedis {
  /** the binary to look for (default: $REDIS_SERVER or redis-server, as the tests' fixture starts it) */
  command?: string
  /** may install Debian's redis-server with apt-get when it is missing */
  install: boolean
  say(line: string): void
  isRoot?: boolean
  hasAptGet?: boolean
  /** runs apt-get (the default runs apt-get update and install -y redis-server) */
  aptInstall?: () => void
}

/**
 * redis-server on the PATH, or installed the way scripts/bootstrap.sh installs the tests' servers
 * (Debian's package, apt-get, only as root), or a note that says what to install.
 */
export function findRedisServer(o: FindRedis): { ok: true; installed: boolean } | { ok: false; note: string } {
  const command = o.command ?? REDIS_SERVER
  if (onPath(command)) return { ok: true, installed: false }
  const isRoot = o.isRoot ?? process.getuid?.() === 0
  const hasApt = o.hasAptGet ?? onPath('apt-get')
  const what = 'install redis-server (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis) and start the demo again'
  if (!o.install || !isRoot || !hasApt) return { ok: false, note: `${command} is not on PATH, so there is no Redis target: ${what}.` }
  o.say(`${command} is not on PATH: installing Debian's redis-server with apt-get (running as root)`)
  try {
    ;(o.aptInstall ?? aptInstallRedis)()
  } catch (err) {
    return { ok: false, note: `apt-get could not install redis-server (${(err as Error).message.split('\n')[0]}), so there is no Redis target: ${what}.` }
  }
  if (!onPath(command)) return { ok: false, note: `redis-server was installed but ${command} is still not on PATH, so there is no Redis target.` }
  o.say('redis-server installed')
  return { ok: true, installed: true }
}

function aptInstallRedis(): void {
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  execFileSync('apt-get', ['update', '-qq'], { stdio: 'ignore', env })
  execFileSync('apt-get', ['install', '-y', '-qq', 'redis-server'], { stdio: ['ignore', 'ignore', 'pipe'], env })
}

function onPath(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' })
    return true
  } catch {
    return false
  }
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
