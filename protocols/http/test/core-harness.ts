// The gateway in miniature with the real core: a dev token issuer, a YAML config through
// parseConfig + createCore, a secret file holding the upstream key, and a net.Server whose
// connections are served by httpCodec with core.openSession(...), closed when the codec returns.
import { createServer, type Server, type Socket } from 'node:net'
import { once } from 'node:events'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { createCore, createDevIssuer, parseConfig, type ControlStore, type Core, type DevIssuer } from '@portcullis/core'
import { httpCodec } from '../src/index.ts'

export const CORE_UPSTREAM_KEY = 'sk-upstream-from-secret-file-1'

export interface CoreGateway {
  url: string
  core: Core
  issuer: DevIssuer
  recordings: string
  token(sub?: string, groups?: string[]): Promise<string>
  audit(): Record<string, unknown>[]
}

export async function startCoreGateway(
  t: { teardown(fn: () => unknown): void },
  o: { upstreamUrl: string; rules: string; masking?: string; options?: string; scope?: string; controlStore?: ControlStore; /** audit.destination (a file): audit() then stays empty */ auditDestination?: string },
): Promise<CoreGateway> {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-http-gw-'))
  const issuer = await createDevIssuer({ dir })
  const secretFile = join(dir, 'openai-key')
  await writeFile(secretFile, CORE_UPSTREAM_KEY, { mode: 0o600 })
  const yaml = `
identity:
  issuers:
    - { issuer: "${issuer.issuer}", audience: ${issuer.audience}, jwksFile: "${issuer.jwksFile}", algorithms: [ES256] }
secrets:
  openai: { file: "${secretFile}" }
recording: { dir: "${join(dir, 'recordings')}", onFailure: block }
approvals: { timeout: 3s }
${o.auditDestination ? `audit: { destination: ${o.auditDestination} }` : ''}
targets:
  - name: llm
    protocol: http
    listen: 127.0.0.1:0
    upstream: { url: "${o.upstreamUrl}", auth: { header: Authorization, value: "Bearer {secret}", secret: { secret: openai } } }
    options: ${o.options ?? '{ profile: openai }'}
    ${o.scope ? `scope: ${o.scope}` : ''}
rules:
${o.rules}
${o.masking ? `masking:\n${o.masking}` : ''}
`
  const config = parseConfig(yaml, 'http-test.yaml')
  const auditStream = new PassThrough()
  let auditText = ''
  auditStream.on('data', d => (auditText += String(d)))
  const core = await createCore(config, { ...(o.auditDestination ? {} : { auditStream }), ...(o.controlStore ? { controlStore: o.controlStore } : {}) })
  const target = config.targets[0]!
  const sockets = new Set<Socket>()
  const server: Server = createServer(sock => {
    sockets.add(sock)
    sock.on('close', () => sockets.delete(sock))
    const session = core.openSession(target, `${sock.remoteAddress}:${sock.remotePort}`)
    void httpCodec.serve(sock, session).finally(() => session.close())
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  t.teardown(async () => {
    for (const s of sockets) s.destroy()
    await new Promise(resolve => server.close(resolve))
    await core.close()
    await rm(dir, { recursive: true, force: true })
  })
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    core,
    issuer,
    recordings: join(dir, 'recordings'),
    token: (sub = 'agent-1', groups = ['agents']) => issuer.mint({ sub, groups }),
    audit: () => auditText.split('\n').filter(Boolean).map(l => JSON.parse(l) as Record<string, unknown>),
  }
}
