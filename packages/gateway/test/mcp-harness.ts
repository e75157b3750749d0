// Test support for the mcp profile: the real gateway (core, admin API, audit captured) with an
// `mcp` target in front of an MCP server — the real SDK-built fixture, or (`upstream`) a server of
// the test's own — and the SDK's own Client on connections of its own, its received bytes tapped.
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { Agent as Dispatcher, fetch as undiciFetch } from 'undici'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { CreateMessageRequestSchema, ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js'
import { parseConfig } from '@portcullis/core'
import { startMcpServer, type McpFixture } from '@portcullis/fixtures/mcp-server'
import { startGateway, type Gateway } from '../src/index.ts'
import { silentLogger } from '../src/log.ts'
import { testEnv, waitFor, type TestEnv } from './helpers.ts'

type T = { teardown(fn: () => unknown): void }

const KEY_ENV = 'PORTCULLIS_MCP_PROXY_TEST_KEY'
export const UPSTREAM_KEY = 'mcp-upstream-key-7f3a'

export const RULES = `
  - { id: mcp-session, when: { groups: [agents, editors], class: [session, read] }, action: allow }
  - { id: notes-editors, when: { groups: [editors], class: [write] }, action: allow }
  - { id: mcp-delete, when: { groups: [agents], class: [delete] }, action: approve, approvers: [dba], timeout: 1m }
  - { id: tool-changes, when: { operations: ['tools/pin'] }, action: approve, approvers: [security], timeout: 1m }`

export interface Setup {
  env: TestEnv
  gw: Gateway
  /** the SDK-built fixture; absent when the test brings its own upstream */
  mcp?: McpFixture
  url: string
  token(sub: string, groups: string[]): Promise<string>
  api(method: string, path: string, token: string): Promise<{ status: number; body: any }>
  audit(): string
}

/**
 * fetch on connections of its own: the gateway binds one token to one connection, so two
 * identities in one test process must not share the global pool (as two agents on two hosts do not)
 */
export function ownFetch(t: T): typeof fetch {
  const dispatcher = new Dispatcher()
  t.teardown(() => dispatcher.close())
  return ((input: any, init?: any) => undiciFetch(input, { ...init, dispatcher })) as unknown as typeof fetch
}

export async function setup(t: T, o: { jsonResponse?: boolean; approvalMode?: 'wait' | 'defer'; rules?: string; options?: string; upstream?: string } = {}): Promise<Setup> {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const mcp = o.upstream === undefined ? await startMcpServer({ key: UPSTREAM_KEY, jsonResponse: o.jsonResponse }) : undefined
  if (mcp) t.teardown(() => mcp.stop())
  process.env[KEY_ENV] = UPSTREAM_KEY
  // the target's upstream is the MCP endpoint itself; the client calls the same path on the gateway
  const endpoint = o.upstream ?? mcp!.url
  const targets = `
  - name: remote-mcp
    protocol: http
    listen: 127.0.0.1:0
    upstream: { url: ${JSON.stringify(endpoint)}, auth: { header: authorization, value: "Bearer {secret}", secret: { secret: mcpkey } } }
    options: { profile: mcp, approvalMode: ${o.approvalMode ?? 'wait'}, mcp: { tools: [{ name: write_note, class: write }] }${o.options ?? ''} }`
  const yaml =
    env.yaml({ targets, rules: o.rules ?? RULES }) +
    `\nsecrets:\n  mcpkey: { env: ${KEY_ENV} }\nmasking:\n  - { id: secrets, when: { targets: [remote-mcp] }, detectors: [api-key, email], method: redact }\n`
  const lines: string[] = []
  const auditStream = new PassThrough()
  auditStream.setEncoding('utf8').on('data', (d: string) => lines.push(d))
  const gw = await startGateway(parseConfig(yaml, join(env.dir, 'p.yaml')), { log: silentLogger, auditStream })
  t.teardown(() => gw.close(100))
  const admin = gw.admin!.url
  return {
    env,
    gw,
    ...(mcp ? { mcp } : {}),
    url: `http://127.0.0.1:${gw.targets['remote-mcp']!.port}${new URL(endpoint).pathname}`,
    token: (sub, groups) => env.token(sub, groups),
    async api(method, path, token) {
      const res = await fetch(admin + path, { method, headers: { authorization: `Bearer ${token}` } })
      return { status: res.status, body: await res.json() }
    },
    audit: () => lines.join(''),
  }
}

export interface Agent {
  client: Client
  transport: StreamableHTTPClientTransport
  /** every POST response body the client was sent, as bytes */
  received: string[]
  sampled: unknown[]
}

export async function connect(t: T, s: Setup, token: string, sampledText = 'the agent model wrote this'): Promise<Agent> {
  const received: string[] = []
  const sampled: unknown[] = []
  const own = ownFetch(t)
  const tap: typeof fetch = async (input, init) => {
    const res = await own(input, init)
    if (init?.method === 'POST') void res.clone().text().then(text => received.push(text), () => {})
    return res
  }
  const transport = new StreamableHTTPClientTransport(new URL(s.url), { requestInit: { headers: { authorization: `Bearer ${token}` } }, fetch: tap })
  const client = new Client({ name: 'agent', version: '1.0.0' }, { capabilities: { sampling: {}, elicitation: {} } })
  // were the gateway to pass the server's sampling or elicitation request on, the client would answer it
  client.setRequestHandler(CreateMessageRequestSchema, async req => {
    sampled.push(req)
    return { role: 'assistant', model: 'agent-model', content: { type: 'text', text: sampledText } }
  })
  client.setRequestHandler(ElicitRequestSchema, async req => {
    sampled.push(req)
    return { action: 'accept', content: { ok: true } }
  })
  await client.connect(transport)
  t.teardown(() => client.close())
  return { client, transport, received, sampled }
}

export async function pending(s: Setup, token: string, n = 1): Promise<any[]> {
  let list: any[] = []
  await waitFor(async () => {
    list = (await s.api('GET', '/api/approvals', token)).body.approvals
    return list.length >= n
  }, `${n} pending approval(s)`)
  return list
}

