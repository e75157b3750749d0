// A gateway in miniature for the Redis codec: a real redis-server (gateway's own ACL user), a dev
// token issuer, a YAML config through parseConfig + createCore, and a net.Server whose connections
// are served by redisCodec with a fresh session each.
import { createServer, type Server, type Socket } from 'node:net'
import { once } from 'node:events'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { createCore, createDevIssuer, parseConfig, type Core, type DevIssuer } from '@portcullis/core'
import { startRedis, type RedisOptions, type RedisServer } from '@portcullis/fixtures/redis'
import { redisCodec } from '../src/index.ts'

export interface Gateway {
  port: number
  redis: RedisServer
  core: Core
  issuer: DevIssuer
  recordings: string
  token(sub?: string, groups?: string[], ttlSeconds?: number): Promise<string>
  audit(): Record<string, unknown>[]
}

export interface GatewayOptions {
  /** YAML list items under rules: */
  rules?: string
  /** YAML list items under masking: */
  masking?: string
  /** YAML flow map for target options */
  options?: string
  /** YAML flow map for target limits */
  limits?: string
  /** YAML flow map for the audit section, e.g. { reads: summary } */
  audit?: string
  redis?: RedisOptions
  /** extra YAML for the upstream map, e.g. tls */
  upstream?: string
  /** YAML flow map for the target's scope (scoped retrieval) */
  scope?: string
  /** an upstream started elsewhere (a container), without a password */
  external?: { host: string; port: number }
}

export const ALLOW_ALL = `
  - { id: agents-all, when: { groups: [agents], class: [read, write, delete, bulk-delete, schema-change, admin, session] }, action: allow }`

export async function startGateway(t: { teardown(fn: () => unknown): void }, o: GatewayOptions = {}): Promise<Gateway> {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-redis-gw-'))
  const redis: RedisServer = o.external
    ? { ...o.external, hasSearch: false, tls: false, stop: async () => {} }
    : await startRedis({ aclUser: { name: 'gateway', password: 'gw-secret-pw' }, password: 'default-pw-unused', ...o.redis })
  const issuer = await createDevIssuer({ dir })
  const secretFile = join(dir, 'redis-password')
  await writeFile(secretFile, redis.password ?? '', { mode: 0o600 })
  const yaml = `
identity:
  issuers:
    - { issuer: "${issuer.issuer}", audience: ${issuer.audience}, jwksFile: "${issuer.jwksFile}", algorithms: [ES256] }
secrets:
  redis: { file: "${secretFile}" }
recording: { dir: "${join(dir, 'recordings')}", onFailure: block }
approvals: { timeout: 2s }
${o.audit ? `audit: ${o.audit}` : ''}
targets:
  - name: cache
    protocol: redis
    listen: 127.0.0.1:0
    upstream: { host: ${redis.host}, port: ${redis.port}${redis.password ? `, user: ${redis.user ?? 'default'}, password: { secret: redis }` : ''}${o.upstream ? ', ' + o.upstream : ''} }
    options: ${o.options ?? '{}'}
    ${o.limits ? `limits: ${o.limits}` : ''}
    ${o.scope ? `scope: ${o.scope}` : ''}
rules:
${o.rules ?? ALLOW_ALL}
${o.masking ? `masking:\n${o.masking}` : ''}
`
  const config = parseConfig(yaml, 'redis-test.yaml')
  const auditStream = new PassThrough()
  let auditText = ''
  auditStream.on('data', d => (auditText += String(d)))
  // an audit destination of the test's own (a file) is written there, not to the captured stream
  const core = await createCore(config, o.audit?.includes('destination') ? {} : { auditStream })
  const target = config.targets[0]!
  const sockets = new Set<Socket>()
  // allowHalfOpen: a client that half-closes after its last command still reads the replies
  const server: Server = createServer({ allowHalfOpen: true }, sock => {
    sockets.add(sock)
    sock.on('close', () => sockets.delete(sock))
    const session = core.openSession(target, `${sock.remoteAddress}:${sock.remotePort}`)
    void redisCodec.serve(sock, session).finally(() => session.close())
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(async () => {
    for (const s of sockets) s.destroy()
    await new Promise(resolve => server.close(resolve))
    await core.close()
    await redis.stop()
    await rm(dir, { recursive: true, force: true })
  })
  return {
    port: (server.address() as { port: number }).port,
    redis,
    core,
    issuer,
    recordings: join(dir, 'recordings'),
    token: (sub = 'agent-1', groups = ['agents'], ttlSeconds) => issuer.mint({ sub, groups, ...(ttlSeconds ? { ttlSeconds } : {}) }),
    audit: () => auditText.split('\n').filter(Boolean).map(l => JSON.parse(l) as Record<string, unknown>),
  }
}

/** a raw RESP conversation: write bytes, read until `n` replies arrived */
export class RawClient {
  private buf = ''
  private waiters: (() => void)[] = []
  constructor(readonly sock: Socket) {
    sock.on('data', d => {
      this.buf += d.toString('latin1')
      for (const w of this.waiters.splice(0)) w()
    })
    sock.on('close', () => {
      this.closed = true
      for (const w of this.waiters.splice(0)) w()
    })
  }
  closed = false
  static async connect(port: number): Promise<RawClient> {
    const { connect } = await import('node:net')
    const sock = connect({ host: '127.0.0.1', port })
    await once(sock, 'connect')
    return new RawClient(sock)
  }
  send(data: string | Buffer): void {
    this.sock.write(data)
  }
  /** waits until the received text satisfies `done`, then takes it all */
  async read(done: (s: string) => boolean = s => s.endsWith('\r\n')): Promise<string> {
    const deadline = Date.now() + 5000
    while (!done(this.buf)) {
      if (this.closed || Date.now() > deadline) break
      await new Promise<void>(resolve => {
        this.waiters.push(resolve)
        setTimeout(resolve, 100)
      })
    }
    const out = this.buf
    this.buf = ''
    return out
  }
  /** waits for `n` CRLF-terminated lines */
  lines(n: number): Promise<string> {
    return this.read(s => s.split('\r\n').length - 1 >= n)
  }
  close(): void {
    this.sock.destroy()
  }
}
