// A gateway for tests: a real Postgres 15 (fixture), a dev token issuer, the real core from a YAML
// config, and a net.Server that hands each connection to the Postgres codec.
import { createServer, type Server, type Socket } from 'node:net'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { once } from 'node:events'
import { createCore, createDevIssuer, parseConfig, type Core, type DevIssuer } from '@portcullis/core'
import { startPostgres, type RunningPostgres, type StartPostgresOptions } from '@portcullis/fixtures/postgres'
import { testCertificate } from '@portcullis/fixtures/tls'
import pg from 'pg'
import { postgresCodec } from '../src/index.ts'

export interface GatewayOptions {
  rules?: unknown[]
  masking?: unknown[]
  postgres?: StartPostgresOptions
  /** reuse a running Postgres (not stopped by the gateway) */
  pg?: RunningPostgres
  /** client-facing TLS with the test certificate */
  tls?: boolean
  limits?: Record<string, number>
  options?: Record<string, unknown>
  upstreamTls?: Record<string, unknown>
  approvals?: Record<string, unknown>
  /** the target's scope (scoped retrieval) */
  scope?: Record<string, unknown>
  /** audit.destination (a file); `audit` then stays empty */
  auditDestination?: string
}

export interface Gateway {
  host: string
  port: number
  core: Core
  issuer: DevIssuer
  pg: RunningPostgres
  audit: Record<string, unknown>[]
  /** the recording directory */
  recordings: string
  sessions: Set<Socket>
  token(sub?: string, groups?: string[], ttlSeconds?: number): Promise<string>
  /** a connection string for pg / postgres.js / psql with a freshly minted token */
  url(sub?: string, groups?: string[]): Promise<string>
  stop(): Promise<void>
}

export const DEFAULT_RULES = [
  { id: 'session', when: { class: ['session'] }, action: 'allow' },
  { id: 'agents-read', when: { groups: ['agents'], class: ['read'] }, action: 'allow' },
  { id: 'agents-write', when: { groups: ['agents'], class: ['write', 'delete'] }, action: 'allow' },
  { id: 'no-danger', when: { class: ['bulk-delete', 'admin'] }, action: 'block', reason: 'dangerous statements are not allowed' },
  { id: 'dba-schema', when: { groups: ['dba'], class: ['schema-change'] }, action: 'allow' },
]

const PASSWORD_ENV = 'PORTCULLIS_TEST_PG_PASSWORD'

export async function startGateway(opts: GatewayOptions = {}): Promise<Gateway> {
  const pg = opts.pg ?? (await startPostgres(opts.postgres))
  const ownsPg = !opts.pg
  process.env[PASSWORD_ENV] = pg.password
  const issuer = await createDevIssuer()
  const recordings = mkdtempSync(join(tmpdir(), 'portcullis-pg-rec-'))
  const cert = testCertificate()
  const config = {
    identity: { issuers: [issuer.issuerConfig()] },
    secrets: { pg: { env: PASSWORD_ENV } },
    recording: { dir: recordings, onFailure: 'block' },
    audit: { destination: opts.auditDestination ?? 'stdout' },
    ...(opts.approvals ? { approvals: opts.approvals } : {}),
    targets: [
      {
        name: 'db',
        protocol: 'postgres',
        listen: '127.0.0.1:0',
        upstream: { host: pg.host, port: pg.port, database: pg.database, user: pg.user, password: { secret: 'pg' }, ...(opts.upstreamTls ? { tls: opts.upstreamTls } : {}) },
        ...(opts.tls ? { tls: { cert: cert.certFile, key: cert.keyFile } } : {}),
        ...(opts.limits ? { limits: opts.limits } : {}),
        ...(opts.options ? { options: opts.options } : {}),
        ...(opts.scope ? { scope: opts.scope } : {}),
      },
    ],
    rules: opts.rules ?? DEFAULT_RULES,
    masking: opts.masking ?? [],
  }
  const auditStream = new PassThrough()
  const audit: Record<string, unknown>[] = []
  let partial = ''
  auditStream.on('data', (chunk: Buffer) => {
    partial += chunk.toString()
    let nl
    while ((nl = partial.indexOf('\n')) >= 0) {
      const line = partial.slice(0, nl)
      partial = partial.slice(nl + 1)
      try {
        audit.push(JSON.parse(line))
      } catch {}
    }
  })
  const core = await createCore(parseConfig(JSON.stringify(config)), opts.auditDestination ? {} : { auditStream })
  const target = core.config.targets[0]
  const sessions = new Set<Socket>()
  const server: Server = createServer(socket => {
    sessions.add(socket)
    socket.on('close', () => sessions.delete(socket))
    const session = core.openSession(target, `${socket.remoteAddress}:${socket.remotePort}`)
    postgresCodec.serve(socket, session).finally(() => session.close())
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  const port = (server.address() as { port: number }).port
  const gw: Gateway = {
    host: '127.0.0.1',
    port,
    core,
    issuer,
    pg,
    audit,
    recordings,
    sessions,
    token: (sub = 'agent-1', groups = ['agents'], ttlSeconds) => issuer.mint({ sub, groups, ...(ttlSeconds ? { ttlSeconds } : {}) }),
    async url(sub, groups) {
      const token = await gw.token(sub, groups)
      return `postgres://${sub ?? 'agent-1'}:${encodeURIComponent(token)}@127.0.0.1:${port}/app`
    },
    async stop() {
      for (const s of sessions) s.destroy()
      await new Promise(r => server.close(r))
      await core.close()
      if (ownsPg) await pg.stop()
      rmSync(recordings, { recursive: true, force: true })
    },
  }
  return gw
}

/** a node-postgres client through the gateway, ended when the test ends */
export async function connectClient(t: { teardown(fn: () => unknown): void }, gw: Gateway, opts: Partial<pg.ClientConfig> = {}): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: await gw.url(), ...opts })
  client.on('error', () => {})
  await client.connect()
  t.teardown(() => client.end().catch(() => {}))
  return client
}
