// Shared test setup: a dev issuer, a config that trusts it, and an audit stream captured in memory.
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { createDevIssuer, type DevIssuer } from '../src/identity/dev-issuer.ts'
import { parseConfig } from '../src/config/parse.ts'
import type { Config } from '../src/config/types.ts'
import type { Operation, OperationClass } from '../src/types.ts'
import { fingerprint } from '../src/policy/fingerprint.ts'

export async function tempDir(t: { teardown(fn: () => unknown): void }, prefix = 'portcullis-core-'): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  t.teardown(() => rm(dir, { recursive: true, force: true }))
  return dir
}

export interface Setup {
  dir: string
  issuer: DevIssuer
  config: Config
  yaml: string
}

/** A config trusting a fresh dev issuer; `extra` is YAML appended at the top level. */
export async function setup(t: { teardown(fn: () => unknown): void }, rules: string, extra = ''): Promise<Setup> {
  const dir = await tempDir(t)
  const issuer = await createDevIssuer({ dir })
  const yaml = `
identity:
  issuers:
    - { issuer: "${issuer.issuer}", audience: ${issuer.audience}, jwksFile: "${issuer.jwksFile}", algorithms: [ES256] }
secrets:
  pg: { env: PORTCULLIS_TEST_PG_PASSWORD }
recording: { dir: "${join(dir, 'recordings')}", onFailure: block }
targets:
  - { name: docs-db, protocol: postgres, listen: 127.0.0.1:15432,
      upstream: { host: 127.0.0.1, port: 5432, database: app, user: app, password: { secret: pg } } }
  - { name: cache, protocol: redis, listen: 127.0.0.1:16379, upstream: { host: 127.0.0.1, port: 6379 } }
rules:
${rules}
${extra}`
  return { dir, issuer, config: parseConfig(yaml, 'test.yaml'), yaml }
}

export function op(cls: OperationClass, statement: string, resources: string[] = [], facts: Operation['facts'] = {}): Operation {
  return {
    protocol: 'postgres',
    class: cls,
    resources,
    statement,
    fingerprint: fingerprint(statement),
    statements: [{ class: cls, resources, statement }],
    facts,
  }
}

/** Collects audit lines written through pino. */
export function auditSink(): { stream: PassThrough; lines: () => Record<string, unknown>[]; text: () => string } {
  const stream = new PassThrough()
  let buf = ''
  stream.on('data', (c: Buffer) => (buf += c.toString('utf8')))
  return {
    stream,
    text: () => buf,
    lines: () =>
      buf
        .split('\n')
        .filter(Boolean)
        .map(l => JSON.parse(l) as Record<string, unknown>),
  }
}
