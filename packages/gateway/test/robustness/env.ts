// The robustness suite's world: one real gateway PROCESS (the CLI, so its pid, file descriptors, RSS,
// stderr and a SIGKILL are real) with all three targets — a real Postgres 15, a real Redis 7 (our own
// child, so it can be killed and restarted on the same port), and the HTTP fixture upstream (an
// OpenAI-shaped stand-in: no real LLM can run here). Every secret and token the suite creates is
// remembered, so the hygiene check can look for each of them everywhere afterwards.
import { spawn, execFile as execFileCb, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { mkdtemp, readFile, readdir, rm, writeFile, mkdir } from 'node:fs/promises'
import { openSync, readFileSync, readlinkSync, readdirSync, writeFileSync } from 'node:fs'
import { connect } from 'node:net'
import { setPriority, tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { startPostgres, type RunningPostgres } from '@portcullis/fixtures/postgres'
import { startHttpUpstream, type HttpUpstream } from '@portcullis/fixtures/http-upstream'
import { freePort } from '@portcullis/fixtures/net'
import { devIssuerConfig, mintDevToken } from '../../src/dev-tokens.ts'
import { startGate, type Gate } from './gate.ts'
import { rssBreakdown, type RssBreakdown } from './memory.ts'

const execFile = promisify(execFileCb)
const BIN = new URL('../../bin/portcullis.mjs', import.meta.url).pathname
const PG_BIN = process.env.PG_BIN ?? '/usr/lib/postgresql/15/bin'
const asRoot = typeof process.getuid === 'function' && process.getuid() === 0

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))

/**
 * Gives every thread of these processes the nice value `nice` (Linux: a nice value is per thread, so
 * each task of /proc/<pid>/task). A measurement that compares two runs on a machine other work
 * shares is then barely touched by that work: at -10 a thread outweighs a nice-0 one ~9:1 when
 * they contend. False where that is not permitted (not root: only raising the value is), and the
 * caller measures at the priority it has.
 */
export function prioritise(pids: number[], nice = -10): boolean {
  try {
    for (const pid of pids) for (const tid of readdirSync(`/proc/${pid}/task`)) setPriority(Number(tid), nice)
    return true
  } catch {
    return false
  }
}

export async function waitFor(cond: () => boolean | Promise<boolean>, what: string, ms = 30_000): Promise<void> {
  const end = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await sleep(25)
  }
}

/** A redis-server child that can be SIGKILLed and started again on the same port and config. */
// A test file killed by tap's timeout must not leave servers behind, however it dies (tap may end it
// with SIGKILL): a detached watchdog shell waits for this process to go, then stops what it started
// (the gateway, redis-server, the Postgres cluster) and removes their directories. Normal cleanup
// still happens in World.cleanup; the watchdog then finds nothing left to do.
const watched: { pids: Set<number>; pgData: Set<string>; dirs: Set<string> } = { pids: new Set(), pgData: new Set(), dirs: new Set() }
let watchdogFile: string | undefined

function watch(): void {
  const q = (x: string) => `'${x.replace(/'/g, `'\\''`)}'`
  const pgCtl = join(PG_BIN, 'pg_ctl')
  const lines = [
    ...[...watched.pids].map((p) => `kill -9 ${p} 2>/dev/null`),
    ...[...watched.pgData].map((d) => `[ -d ${q(d)} ] && ${asRoot ? 'runuser -u postgres -- ' : ''}${q(pgCtl)} -D ${q(d)} -m immediate -w stop >/dev/null 2>&1`),
    ...[...watched.dirs].map((d) => `rm -rf ${q(d)}`),
  ]
  if (!watchdogFile) {
    watchdogFile = join(tmpdir(), `portcullis-robust-watchdog-${process.pid}.sh`)
    writeFileSync(watchdogFile, '')
    const child = spawn('sh', ['-c', `while kill -0 ${process.pid} 2>/dev/null; do sleep 1; done; . ${q(watchdogFile)}; rm -f ${q(watchdogFile)}`], { detached: true, stdio: 'ignore' })
    child.unref()
  }
  writeFileSync(watchdogFile, lines.join('\n') + '\n')
}

function atExit(what: { pid?: number; pgData?: string; dir?: string }): () => void {
  if (what.pid) watched.pids.add(what.pid)
  if (what.pgData) watched.pgData.add(what.pgData)
  if (what.dir) watched.dirs.add(what.dir)
  watch()
  return () => {
    if (what.pid) watched.pids.delete(what.pid)
    if (what.pgData) watched.pgData.delete(what.pgData)
    if (what.dir) watched.dirs.delete(what.dir)
    watch()
  }
}

export interface RestartableRedis {
  host: string
  port: number
  password: string
  kill(): Promise<void>
  start(): Promise<void>
  stop(): Promise<void>
  /** the running redis-server's pid */
  pid(): number | undefined
}

export async function startRestartableRedis(password: string): Promise<RestartableRedis> {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-robust-redis-'))
  const port = await freePort()
  const conf = join(dir, 'redis.conf')
  // the password lives in the config file, never on a command line
  writeFileSync(conf, [`bind 127.0.0.1`, `port ${port}`, `dir ${dir}`, `save ""`, `appendonly no`, `logfile ""`, `loglevel warning`, `maxclients 4000`, `requirepass ${password}`, ''].join('\n'), { mode: 0o600 })
  let child: ChildProcess | undefined
  const start = async () => {
    child = spawn('redis-server', [conf], { stdio: ['ignore', 'ignore', 'ignore'] })
    const c = child
    await waitFor(
      () =>
        new Promise<boolean>((resolve) => {
          if (c.exitCode !== null) return resolve(false)
          const s = connect({ host: '127.0.0.1', port })
          s.once('connect', () => (s.destroy(), resolve(true)))
          s.once('error', () => (s.destroy(), resolve(false)))
        }),
      'redis-server to listen',
      15_000,
    )
  }
  const kill = async () => {
    const c = child
    if (!c || c.exitCode !== null || c.signalCode !== null) return
    const exited = once(c, 'exit')
    c.kill('SIGKILL')
    await exited
  }
  let unhookPid = () => {}
  const unhookDir = atExit({ dir })
  const started = start
  const startWatched = async () => {
    await started()
    unhookPid()
    unhookPid = atExit({ pid: child!.pid! })
  }
  await startWatched()
  return {
    host: '127.0.0.1',
    port,
    password,
    kill,
    start: startWatched,
    pid: () => child?.pid,
    async stop() {
      await kill()
      await rm(dir, { recursive: true, force: true })
      unhookPid()
      unhookDir()
    },
  }
}

function runAsPostgres(cmd: string, args: string[]): Promise<unknown> {
  return asRoot ? execFile('runuser', ['-u', 'postgres', '--', cmd, ...args]) : execFile(cmd, args)
}

/** Stops the fixture's Postgres at once (as a crash would) and starts it again on the same port. */
export async function restartPostgres(pg: RunningPostgres, mode: 'immediate' | 'fast' = 'immediate'): Promise<void> {
  await runAsPostgres(join(PG_BIN, 'pg_ctl'), ['-D', pg.dataDir, '-m', mode, '-w', 'stop'])
  await runAsPostgres(join(PG_BIN, 'pg_ctl'), ['-D', pg.dataDir, '-w', '-t', '60', '-l', join(pg.socketDir, 'log'), '-o', `-p ${pg.port}`, 'start'])
}

/** psql over the fixture's unix socket (trust auth): sees the server as it is, past the gateway. */
export async function pgDirect(pg: RunningPostgres, sql: string): Promise<string> {
  const { stdout } = (await execFile('psql', ['-h', pg.socketDir, '-p', String(pg.port), '-U', pg.user, '-d', pg.database, '-XAtq', '-c', sql])) as { stdout: string }
  return stdout.trim()
}

/** The gateway's upstream backends right now (every backend of its user, except the ones psql opened to ask). */
/** The upstream backends of the gateway's sessions. The target's catalog connection (one per target,
 * `application_name` portcullis-catalog, closed ~10 s after its last lookup) is the gateway's own, not a
 * session's: pgCatalogBackends counts it apart. */
export async function pgGatewayBackends(pg: RunningPostgres): Promise<number> {
  return Number(
    await pgDirect(pg, `SELECT count(*) FROM pg_stat_activity WHERE usename = '${pg.user}' AND pid <> pg_backend_pid() AND backend_type = 'client backend' AND client_addr IS NOT NULL AND application_name IS DISTINCT FROM 'portcullis-catalog'`),
  )
}

export async function pgCatalogBackends(pg: RunningPostgres): Promise<number> {
  return Number(
    await pgDirect(pg, `SELECT count(*) FROM pg_stat_activity WHERE usename = '${pg.user}' AND backend_type = 'client backend' AND application_name = 'portcullis-catalog'`),
  )
}

export async function redisDirect(redis: RestartableRedis, ...args: string[]): Promise<string> {
  const { stdout } = (await execFile('redis-cli', ['-h', redis.host, '-p', String(redis.port), '--no-auth-warning', '-a', redis.password, ...args])) as { stdout: string }
  return stdout
}

/** Clients connected to Redis other than the redis-cli that asks. */
export async function redisGatewayClients(redis: RestartableRedis): Promise<string[]> {
  const out = await redisDirect(redis, 'CLIENT', 'LIST')
  return out
    .split('\n')
    .filter((l) => l.trim() !== '' && !/ cmd=client\|list /.test(l))
}

export interface GatewayProcess {
  pid: number
  child: ChildProcess
  ports: { pg: number; redis: number; http: number }
  /** the gateway's stderr (its operational log) so far */
  log(): string
  rssBytes(): number
  fds(): number
  /** what its fds are, counted by kind (recording, socket, pipe, ...): says what a leak is */
  fdKinds(): string
  /** its TCP sockets connected to this port (/proc/<pid>/fd inodes matched in /proc/net/tcp) */
  socketsTo(port: number): number
  /**
   * a full garbage collection in the gateway (the inspector's HeapProfiler.collectGarbage over the
   * port it was started with): what RSS holds after it is memory the gateway keeps, not garbage V8
   * had not yet needed to collect
   */
  collectGarbage(): Promise<NodeJS.MemoryUsage | undefined>
  /** where its resident memory is (memory.ts) */
  rss(): RssBreakdown
  /** true while the process runs */
  alive(): boolean
  exited: Promise<unknown>
  stop(): Promise<void>
}

export interface World {
  dir: string
  pg: RunningPostgres
  redis: RestartableRedis
  http: HttpUpstream
  /** the relay the gateway reaches Postgres through, when startWorld was asked for one (gate.ts) */
  pgGate: Gate | undefined
  /** the relay the gateway reaches Redis through, when startWorld was asked for one (gate.ts) */
  redisGate: Gate | undefined
  recordingsDir: string
  auditFile: string
  /** the HMAC key recordings are sealed with */
  sealKey: Buffer
  /** every secret the suite gave the gateway */
  secrets: Record<string, string>
  /** every token minted in the suite */
  tokens: string[]
  /** every gateway log the suite has seen (one per process) */
  logs: string[]
  token(sub?: string, groups?: string[]): Promise<string>
  gateway: GatewayProcess
  /** starts a gateway process on the same config (and the same ports, when given) */
  startGateway(ports?: { pg: number; redis: number; http: number }): Promise<GatewayProcess>
  cleanup(): Promise<void>
}

export const REDIS_PASSWORD = 'redis-robust-upstream-password-5d1e'
export const API_KEY = 'sk-robust-upstream-api-key-8c2f41'
export const SEAL_KEY = 'robust-recording-seal-key-77aa90'

/** Max client connections per target in this suite (1,000 idle + 50 active + the fuzzers' parallel ones). */
export const MAX_CONNECTIONS = 1500
/** File descriptors the spawned gateway may hold (ulimit -n). */
export const GATEWAY_FD_LIMIT = 4096

function configYaml(w: { dir: string; issuer: { issuer: string; audience: string; jwksFile: string }; pg: { host: string; port: number; database: string; user: string }; redis: { host: string; port: number }; http: HttpUpstream; ports: { pg: number; redis: number; http: number } }): string {
  const q = (s: string) => JSON.stringify(s)
  const limits = `limits: { maxConnections: ${MAX_CONNECTIONS}, handshakeTimeout: 5s }`
  return `
identity:
  issuers:
    - { issuer: ${q(w.issuer.issuer)}, audience: ${q(w.issuer.audience)}, jwksFile: ${q(w.issuer.jwksFile)}, algorithms: [ES256] }
secrets:
  pg: { file: ${q(join(w.dir, 'secrets', 'pg'))} }
  redis: { file: ${q(join(w.dir, 'secrets', 'redis'))} }
  openai: { file: ${q(join(w.dir, 'secrets', 'openai'))} }
  seal: { file: ${q(join(w.dir, 'secrets', 'seal'))} }
recording: { dir: ${q(join(w.dir, 'recordings'))}, onFailure: block, sign: { hmacKey: { secret: seal } } }
audit: { destination: ${q(join(w.dir, 'audit.jsonl'))} }
targets:
  - name: pg
    protocol: postgres
    listen: 127.0.0.1:${w.ports.pg}
    upstream: { host: ${w.pg.host}, port: ${w.pg.port}, database: ${w.pg.database}, user: ${w.pg.user}, password: { secret: pg } }
    ${limits}
  - name: redis
    protocol: redis
    listen: 127.0.0.1:${w.ports.redis}
    upstream: { host: ${w.redis.host}, port: ${w.redis.port}, password: { secret: redis } }
    ${limits}
  - name: llm
    protocol: http
    listen: 127.0.0.1:${w.ports.http}
    upstream: { url: ${q(w.http.url)}, auth: { header: authorization, value: "Bearer {secret}", secret: { secret: openai } } }
    # GET /big (the slow reader's 200 MB body) is application/octet-stream: under the pii mask plan
    # the codec refuses a type it cannot read unless the target lets it through unmasked (README)
    options: { profile: openai, unmaskedResponseTypes: [application/octet-stream] }
    ${limits}
rules:
  - { id: everyday, when: { groups: [agents], class: [session, read, write, delete] }, action: allow }
  - { id: no-danger, when: { class: [bulk-delete, schema-change, admin] }, action: block, reason: dangerous operations are blocked }
masking:
  - { id: pii, detectors: [email], method: redact }
`
}

function parsePorts(log: string): Partial<Record<'pg' | 'redis' | 'llm', number>> {
  const ports: Partial<Record<'pg' | 'redis' | 'llm', number>> = {}
  for (const line of log.split('\n')) {
    if (!line.includes('"msg":"listening"')) continue
    try {
      const o = JSON.parse(line) as { target: 'pg' | 'redis' | 'llm'; listen: string }
      ports[o.target] = Number(o.listen.split(':').pop())
    } catch {}
  }
  return ports
}

export interface WorldOptions {
  /** the gateway reaches Postgres through a relay the test can hold shut (World.pgGate) */
  pgGate?: boolean
  /** the gateway reaches Redis through a relay the test can hold shut (World.redisGate) */
  redisGate?: boolean
}

/**
 * node -e: connects to the inspector at argv[1], runs two full collections (the second frees what the
 * first's finalizers let go), then prints the gateway's own process.memoryUsage() as JSON: the V8
 * heap's and external figures that RSS lumps together
 */
const COLLECT_GARBAGE = `
const ws = new WebSocket(process.argv[1])
let id = 0
const next = () => ws.send(JSON.stringify(++id <= 2 ? { id, method: 'HeapProfiler.collectGarbage' } : { id, method: 'Runtime.evaluate', params: { expression: 'JSON.stringify(process.memoryUsage())', returnByValue: true } }))
ws.onopen = next
ws.onmessage = (m) => { const r = JSON.parse(m.data); if (r.id !== id) return; if (id < 3) return next(); process.stdout.write(r.result?.result?.value ?? ''); ws.close() }
ws.onclose = () => process.exit(id === 3 ? 0 : 1)
ws.onerror = () => process.exit(1)
`

/** sh: unsets NODE_OPTIONS and every TAP* / _TAPJS* variable (names from `env`; values may hold newlines, names do not) */
const UNSET_RUNNER_ENV = `{ unset NODE_OPTIONS; for v in $(env | sed -n 's/^\\(_\\{0,1\\}TAP[A-Za-z0-9_]*\\)=.*/\\1/p'); do unset "$v"; done; true; }`

export async function startWorld(opts: WorldOptions = {}): Promise<World> {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-robust-'))
  const [pg, redis, http] = await Promise.all([startPostgres(), startRestartableRedis(REDIS_PASSWORD), startHttpUpstream({ extra: { note: 'contact ada@example.com' } })])
  const pgGate = opts.pgGate ? await startGate({ host: pg.host, port: pg.port }) : undefined
  const pgUpstream = pgGate ? { host: '127.0.0.1', port: pgGate.port, database: pg.database, user: pg.user } : pg
  const redisGate = opts.redisGate ? await startGate({ host: redis.host, port: redis.port }) : undefined
  const redisUpstream = redisGate ? { host: '127.0.0.1', port: redisGate.port } : { host: redis.host, port: redis.port }
  const issuer = await devIssuerConfig(join(dir, 'issuer'))
  await mkdir(join(dir, 'secrets'), { recursive: true })
  const secrets = { pg: pg.password, redis: REDIS_PASSWORD, openai: API_KEY, seal: SEAL_KEY }
  for (const [k, v] of Object.entries(secrets)) await writeFile(join(dir, 'secrets', k), v + '\n', { mode: 0o600 })
  const tokens: string[] = []
  const logs: string[] = []
  const unhookPg = atExit({ pgData: pg.dataDir, dir: pg.socketDir })
  const unhookDir = atExit({ dir })
  const configFile = join(dir, 'portcullis.yaml')

  // the gateway as it runs in production: without the test runner's loader hooks in NODE_OPTIONS
  // (tap's processinfo import), which a child inherits and which hold memory the RSS bound would count.
  // Taking them out of the env passed to spawn is not enough: processinfo hooks spawn itself
  // (process-on-spawn) and puts NODE_OPTIONS and its _TAPJS_PROCESSINFO_* back into every child's
  // env, so the shell that execs node unsets them (UNSET_RUNNER_ENV); the gateway under tap held
  // 305-312 MiB after 10,000 Redis cases, 229-230 MiB run by `pnpm fuzz` with the same cases.
  const gatewayEnv = (): NodeJS.ProcessEnv => {
    const env = { ...process.env }
    delete env.NODE_OPTIONS
    for (const k of Object.keys(env)) if (k.startsWith('TAP') || k.startsWith('_TAPJS')) delete env[k]
    // glibc keeps one malloc arena per thread that allocates (up to 8 × cores), each holding freed
    // memory of its own: two arenas held the allocator's share of RSS after 30,000 fuzz cases to
    // +27 MiB where the default let it grow +42 (README, "Where the RSS that stays is"); the RSS
    // bound counts two (checks.ts RSS_COMPONENTS.allocator). An environment that sets it keeps its own
    env.MALLOC_ARENA_MAX ??= '2'
    return env
  }

  const startGateway = async (fixed?: { pg: number; redis: number; http: number }): Promise<GatewayProcess> => {
    const ports = fixed ?? { pg: 0, redis: 0, http: 0 }
    await writeFile(configFile, configYaml({ dir, issuer, pg: pgUpstream, redis: redisUpstream, http, ports }))
    // ulimit -n in the shell that execs node: 1,000 idle + 50 active clients and their upstreams
    // PORTCULLIS_GATEWAY_NODE_ARGS: node flags for the gateway only, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`
    // (a profile of the gateway itself; NODE_OPTIONS does not take --cpu-prof)
    // --inspect on a port of its own, loopback only: collectGarbage's way in (the address is in its stderr)
    const nodeArgs = ['--inspect=127.0.0.1:0', ...(process.env.PORTCULLIS_GATEWAY_NODE_ARGS ?? '').split(' ').filter(Boolean)]
    const child = spawn('sh', ['-c', `ulimit -n ${GATEWAY_FD_LIMIT} && ${UNSET_RUNNER_ENV} && exec "$0" "$@"`, process.execPath, ...nodeArgs, BIN, 'start', '--config', configFile], {
      // PORTCULLIS_GATEWAY_STDOUT=FILE: the gateway's stdout (where V8's --trace-gc writes) goes there
      stdio: ['ignore', process.env.PORTCULLIS_GATEWAY_STDOUT ? openSync(process.env.PORTCULLIS_GATEWAY_STDOUT, 'a') : 'ignore', 'pipe'],
      env: gatewayEnv(),
    })
    const index = logs.length
    logs.push('')
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (logs[index] += d))
    const exited = once(child, 'exit')
    const unhook = atExit({ pid: child.pid! })
    void exited.then(unhook)
    const log = () => logs[index]!
    await waitFor(() => {
      if (child.exitCode !== null) throw new Error(`gateway exited ${child.exitCode}: ${log()}`)
      const p = parsePorts(log())
      return p.pg !== undefined && p.redis !== undefined && p.llm !== undefined
    }, 'the gateway to listen on all three targets', 120_000)
    const p = parsePorts(log())
    const pid = child.pid!
    return {
      pid,
      child,
      ports: { pg: p.pg!, redis: p.redis!, http: p.llm! },
      log,
      alive: () => child.exitCode === null && child.signalCode === null,
      collectGarbage: async () => {
        const url = /Debugger listening on (ws:\/\/127\.0\.0\.1:\d+\/\S+)/.exec(log())?.[1]
        if (!url) throw new Error('the gateway has no inspector address in its log')
        // Node 20's WebSocket client is behind a flag: a one-off child speaks the inspector protocol
        const { stdout } = await execFile(process.execPath, ['--experimental-websocket', '--no-warnings', '-e', COLLECT_GARBAGE, url], { timeout: 60_000, env: gatewayEnv() })
        try {
          return JSON.parse(stdout) as NodeJS.MemoryUsage
        } catch {
          return undefined
        }
      },
      rss: () => rssBreakdown(pid),
      rssBytes: () => {
        const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
        return Number(m![1]) * 1024
      },
      fds: () => readdirSync(`/proc/${pid}/fd`).length,
      fdKinds: () => {
        const kinds = new Map<string, number>()
        for (const fd of readdirSync(`/proc/${pid}/fd`)) {
          let l = '?'
          try {
            l = readlinkSync(`/proc/${pid}/fd/${fd}`)
          } catch {}
          const k = l.endsWith('.pcr') ? 'recording' : l.replace(/:\[?\d+\]?$/, '').replace(/^\/.*\//, '')
          kinds.set(k, (kinds.get(k) ?? 0) + 1)
        }
        return [...kinds].map(([k, n]) => `${k} ${n}`).join(', ')
      },
      socketsTo: (port: number) => {
        const inodes = new Set<string>()
        for (const fd of readdirSync(`/proc/${pid}/fd`)) {
          try {
            const m = /^socket:\[(\d+)\]$/.exec(readlinkSync(`/proc/${pid}/fd/${fd}`))
            if (m) inodes.add(m[1]!)
          } catch {}
        }
        const hex = ':' + port.toString(16).toUpperCase().padStart(4, '0')
        let n = 0
        for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
          let text = ''
          try {
            text = readFileSync(table, 'latin1')
          } catch {
            continue
          }
          for (const line of text.split('\n').slice(1)) {
            const f = line.trim().split(/\s+/)
            if (f[2]?.endsWith(hex) && inodes.has(f[9]!)) n++
          }
        }
        return n
      },
      exited,
      async stop() {
        if (child.exitCode !== null || child.signalCode !== null) return
        child.kill('SIGTERM')
        const t = setTimeout(() => child.kill('SIGKILL'), 15_000)
        await exited
        clearTimeout(t)
      },
    }
  }

  const world: World = {
    dir,
    pg,
    redis,
    http,
    pgGate,
    redisGate,
    recordingsDir: join(dir, 'recordings'),
    auditFile: join(dir, 'audit.jsonl'),
    sealKey: Buffer.from(SEAL_KEY),
    secrets,
    tokens,
    logs,
    async token(sub = 'robust-agent', groups = ['agents']) {
      const t = (await mintDevToken({ sub, groups, ttlSeconds: 3600, dir: join(dir, 'issuer') })).token
      tokens.push(t)
      return t
    },
    gateway: undefined as unknown as GatewayProcess,
    startGateway,
    async cleanup() {
      await world.gateway?.stop().catch(() => {})
      await pgGate?.close()
      await redisGate?.close()
      await Promise.allSettled([pg.stop(), redis.stop(), http.stop()])
      await rm(dir, { recursive: true, force: true })
      unhookPg()
      unhookDir()
    },
  }
  world.gateway = await startGateway()
  return world
}

/** Every recording file under the world's recordings dir. */
export async function recordingFiles(dir: string): Promise<string[]> {
  try {
    const entries = await readdir(dir, { recursive: true })
    return entries.filter((f) => f.endsWith('.pcr')).map((f) => join(dir, f))
  } catch {
    return []
  }
}

export { readFile, readlinkSync }
