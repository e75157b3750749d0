// Classifies one request the way the gateway would, without any upstream, and optionally runs the
// policy on it. Prints one JSON object on stdout.
import { parseArgs } from 'node:util'
import { attachClaims, decide, loadConfig, type Operation, type Principal } from '@portcullis/core'
import { UsageError, splitList } from '../args.ts'
import { importExport } from '../codecs.ts'
import { explainScope } from './explain-scope.ts'

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      protocol: { type: 'string' },
      sql: { type: 'string' },
      command: { type: 'string' },
      request: { type: 'string' },
      body: { type: 'string' },
      profile: { type: 'string' },
      config: { type: 'string' },
      target: { type: 'string' },
      subject: { type: 'string' },
      groups: { type: 'string' },
      claims: { type: 'string' },
    },
  })
  let op: Operation
  try {
    op = await classify(values)
  } catch (err) {
    if (err instanceof UsageError) throw err
    process.stderr.write(`portcullis explain: ${(err as Error).message}\n`)
    return 2
  }
  const out: Record<string, unknown> = {
    class: op.class,
    resources: op.resources,
    statement: op.statement,
    fingerprint: op.fingerprint,
    statements: op.statements,
    facts: op.facts,
    ...(op.error !== undefined ? { error: op.error } : {}),
  }
  if (values.config) {
    if (!values.target) throw new UsageError('--config needs --target NAME (and usually --subject and --groups)')
    const config = await loadConfig(values.config)
    const target = config.targets.find((t) => t.name === values.target)
    if (!target) throw new UsageError(`no target ${JSON.stringify(values.target)} in ${values.config}`)
    // an MCP target's tool calls are decided where they land, by the target each tool reaches
    if (target.protocol === 'mcp')
      throw new UsageError(`target ${target.name} is an mcp target: its tool calls are decided on the target they reach; use --target ${(target.targets ?? []).join(' | ')}`)
    const principal: Principal = { subject: values.subject ?? 'anonymous', groups: splitList(values.groups), issuer: 'explain' }
    if (values.claims !== undefined) {
      let claims: unknown
      try {
        claims = JSON.parse(values.claims)
      } catch {
        throw new UsageError('--claims must be a JSON object (the token\'s claims)')
      }
      if (claims === null || typeof claims !== 'object' || Array.isArray(claims)) throw new UsageError('--claims must be a JSON object (the token\'s claims)')
      attachClaims(principal, claims as Record<string, unknown>)
    }
    const d = decide(config.rules, principal, target.name, op)
    out.decision = { action: d.action, rule: d.rule, reason: d.reason }
    if (target.scope) out.scope = await explainScope(target, principal, values.claims !== undefined, op, values)
  }
  process.stdout.write(JSON.stringify(out, null, 2) + '\n')
  return 0
}

/** classifies one request as the gateway would (the CLI and the web console's policy page) */
export async function classify(v: Record<string, string | undefined>): Promise<Operation> {
  switch (v.protocol) {
    case 'postgres': {
      if (v.sql === undefined) throw new UsageError('--protocol postgres needs --sql TEXT')
      const explainSql = await importExport<(sql: string) => Promise<Operation>>('postgres', 'explainSql')
      return await explainSql(v.sql)
    }
    case 'redis': {
      if (v.command === undefined) throw new UsageError("--protocol redis needs --command 'CMD ARG …'")
      const explainRedis = await importExport<(line: string) => Operation>('redis', 'explainRedis')
      return await explainRedis(v.command)
    }
    case 'http': {
      if (v.request === undefined) throw new UsageError("--protocol http needs --request 'METHOD /path'")
      const m = /^\s*([A-Za-z]+)\s+(\S+)\s*$/.exec(v.request)
      if (!m) throw new UsageError(`--request must be 'METHOD /path', got ${JSON.stringify(v.request)}`)
      let body: unknown
      if (v.body !== undefined) {
        try {
          body = JSON.parse(v.body)
        } catch {
          throw new UsageError('--body must be JSON')
        }
      }
      const explainHttp = await importExport<(req: { method: string; path: string; body?: unknown; profile?: string }) => Operation>(
        'http',
        'explainHttp',
      )
      return await explainHttp({ method: m[1]!.toUpperCase(), path: m[2]!, body, profile: v.profile })
    }
    default:
      throw new UsageError('--protocol must be postgres, redis or http')
  }
}
