// Test support: a tiny line protocol codec (NOT one of the real codecs, which have their own tests)
// so the gateway's own behaviour — listeners, sessions, limits, reload, shutdown, admin — is tested
// against the real core with real tokens, independent of the protocol packages.
//
//   client: AUTH <token>\n          server: OK <subject>\n | ERR <code> <message>\n
//   client: <class> <statement>\n   server: ALLOW <rule>\n | BLOCK <rule> <reason>\n | PENDING <id>\n (then ALLOW/BLOCK)
import { connect, type Socket } from 'node:net'
import { once } from 'node:events'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Duplex } from 'node:stream'
import { isPortcullisError, parseConfig, type Config, type Operation, type ProtocolCodec, type Protocol, type Session } from '@portcullis/core'
import { devIssuerConfig, mintDevToken } from '../src/dev-tokens.ts'

export function lineCodec(protocol: Protocol = 'redis', prefix = ''): ProtocolCodec {
  return {
    protocol,
    sniff(first) {
      const want = Buffer.from(prefix + 'AUTH ')
      const n = Math.min(first.length, want.length)
      if (!first.subarray(0, n).equals(want.subarray(0, n))) return false
      return n === want.length ? true : undefined
    },
    async serve(client: Duplex, session: Session) {
      // Plain 'data' listeners (no readline, which resumes the stream itself): a codec written this
      // way proves the gateway hands over a stream that flows once the codec listens.
      const rl = dataLines(client)
      const write = (line: string) => {
        if (client.writable) client.write(line + '\n')
      }
      session.signal.addEventListener('abort', () => {
        const reason = session.signal.reason as Error & { code?: string }
        write(`ERR ${reason?.code ?? 'SESSION_CLOSED'} ${reason?.message ?? ''}`)
        client.end()
      })
      for await (let line of rl) {
        if (prefix && line.startsWith(prefix)) line = line.slice(prefix.length)
        const sp = line.indexOf(' ')
        const verb = sp < 0 ? line : line.slice(0, sp)
        const rest = sp < 0 ? '' : line.slice(sp + 1)
        if (verb === 'AUTH') {
          try {
            const p = await session.authenticate(rest)
            write(`OK ${p.subject}`)
          } catch (err) {
            write(`ERR ${isPortcullisError(err) ? err.code : 'ERROR'} ${(err as Error).message}`)
            client.end()
            return
          }
          continue
        }
        if (verb === 'QUIT') break
        try {
          session.assertAlive()
          const op = operation(protocol, verb, rest)
          session.record('request', { line })
          const d = await session.decide(op, { onPending: (r) => write(`PENDING ${r.id}`) })
          write(d.action === 'allow' ? `ALLOW ${d.rule}` : `BLOCK ${d.rule} ${d.reason}`)
          session.record('response', { line: d.action })
          session.audit({ class: op.class, statement: op.statement, decision: d.action, rule: d.rule })
        } catch (err) {
          write(`ERR ${isPortcullisError(err) ? err.code : 'ERROR'} ${(err as Error).message}`)
        }
      }
      client.end()
    },
  }
}

async function* dataLines(client: Duplex): AsyncGenerator<string> {
  const queue: string[] = []
  let wake: (() => void) | undefined
  let ended = false
  let buf = ''
  client.on('data', (d: Buffer) => {
    buf += d.toString('utf8')
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      queue.push(buf.slice(0, i).replace(/\r$/, ''))
      buf = buf.slice(i + 1)
    }
    wake?.()
  })
  const stop = () => {
    ended = true
    wake?.()
  }
  client.on('end', stop)
  client.on('close', stop)
  client.on('error', stop)
  for (;;) {
    const line = queue.shift()
    if (line !== undefined) {
      yield line
      continue
    }
    if (ended) return
    await new Promise<void>((r) => (wake = r))
    wake = undefined
  }
}

function operation(protocol: Protocol, cls: string, statement: string): Operation {
  return {
    protocol,
    class: cls as Operation['class'],
    resources: [statement.split(' ')[1] ?? 'thing'],
    statement,
    fingerprint: Buffer.from(statement).toString('hex').slice(0, 16).padEnd(16, '0'),
    statements: [{ class: cls as Operation['class'], resources: [], statement }],
    facts: {},
  }
}

/** A line client: send() a line, next() the next reply line. */
export interface LineClient {
  socket: Socket
  send(line: string): void
  next(): Promise<string>
  closed: Promise<void>
}

export async function lineClient(port: number, host = '127.0.0.1'): Promise<LineClient> {
  const socket = connect({ port, host })
  await once(socket, 'connect')
  const lines: string[] = []
  const waiters: Array<(l: string) => void> = []
  let buf = ''
  socket.setEncoding('utf8')
  socket.on('data', (d: string) => {
    buf += d
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      const l = buf.slice(0, i)
      buf = buf.slice(i + 1)
      const w = waiters.shift()
      if (w) w(l)
      else lines.push(l)
    }
  })
  socket.on('error', () => {})
  const closed = once(socket, 'close').then(() => {
    for (const w of waiters.splice(0)) w('<closed>')
  })
  return {
    socket,
    send: (line) => void socket.write(line + '\n'),
    next: () => {
      const l = lines.shift()
      if (l !== undefined) return Promise.resolve(l)
      if (socket.destroyed) return Promise.resolve('<closed>')
      return new Promise((r) => waiters.push(r))
    },
    closed,
  }
}

export interface TestEnv {
  dir: string
  issuerDir: string
  yaml(extra?: { targets?: string; rules?: string; admin?: boolean }): string
  config(extra?: { targets?: string; rules?: string; admin?: boolean }): Config
  token(sub: string, groups: string[], ttlSeconds?: number): Promise<string>
  cleanup(): Promise<void>
}

export const DEFAULT_TARGETS = `
  - { name: lines, protocol: redis, listen: 127.0.0.1:0, upstream: { host: 127.0.0.1, port: 1 } }`

export const DEFAULT_RULES = `
  - { id: read, when: { groups: [agents, approvers, admins], class: [session, read] }, action: allow }
  - { id: agents-write, when: { groups: [agents], class: [write] }, action: approve, approvers: [approvers], timeout: 1m }
  - { id: no-admin, when: { class: [admin] }, action: block, reason: admin is blocked }`

export async function testEnv(): Promise<TestEnv> {
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-gw-test-'))
  const issuerDir = join(dir, 'issuer')
  const issuer = await devIssuerConfig(issuerDir)
  const yaml = (extra: { targets?: string; rules?: string; admin?: boolean } = {}) => `
${extra.admin === false ? '' : 'admin: { listen: 127.0.0.1:0 }'}
identity:
  issuers:
    - { issuer: ${JSON.stringify(issuer.issuer)}, audience: ${issuer.audience}, jwksFile: ${JSON.stringify(issuer.jwksFile)}, algorithms: [ES256] }
recording: { dir: ${JSON.stringify(join(dir, 'recordings'))}, onFailure: block }
audit: { destination: ${JSON.stringify(join(dir, 'audit.jsonl'))} }
targets:${extra.targets ?? DEFAULT_TARGETS}
rules:${extra.rules ?? DEFAULT_RULES}
`
  return {
    dir,
    issuerDir,
    yaml,
    config: (extra) => parseConfig(yaml(extra), join(dir, 'portcullis.yaml')),
    token: async (sub, groups, ttlSeconds) => (await mintDevToken({ sub, groups, ttlSeconds, dir: issuerDir })).token,
    cleanup: () => rm(dir, { recursive: true, force: true }),
  }
}

export async function waitFor(cond: () => boolean | Promise<boolean>, what: string, ms = 30_000): Promise<void> {
  const end = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

/** Every recording file (*.pcr) under a recordings dir (core files them by day). */
export async function recordingsIn(dir: string): Promise<string[]> {
  const { readdir } = await import('node:fs/promises')
  try {
    const entries = await readdir(dir, { recursive: true })
    return entries.filter((f) => f.endsWith('.pcr')).map((f) => join(dir, f))
  } catch {
    return []
  }
}

const BIN = new URL('../bin/portcullis.mjs', import.meta.url).pathname

/** Runs the real CLI as a subprocess. */
export async function portcullis(
  args: string[],
  env: Record<string, string | undefined> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const { spawn } = await import('node:child_process')
  const child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d))
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d))
  const [code] = (await once(child, 'close')) as [number]
  return { code, stdout, stderr }
}
