import { parseArgs } from 'node:util'
import { ConfigError, loadConfig, scopeWarnings, type Config } from '@portcullis/core'
import { UsageError } from '../args.ts'

export async function run(argv: string[]): Promise<number> {
  const { positionals } = parseArgs({ args: argv, allowPositionals: true, options: {} })
  const file = positionals[0]
  if (!file || positionals.length > 1) throw new UsageError('usage: portcullis check-config FILE')
  try {
    const config = await loadConfig(file)
    process.stdout.write(`${file}: ok (${config.targets.length} targets, ${config.rules.length} rules)\n`)
    for (const w of warnings(config)) process.stderr.write(`${file}: warning: ${w}\n`)
    return 0
  } catch (err) {
    if (err instanceof ConfigError) {
      for (const i of err.issues) process.stderr.write(`${i.file}:${i.line}: ${i.path}: ${i.message}\n`)
      return 1
    }
    process.stderr.write(`${file}: ${(err as Error).message}\n`)
    return 1
  }
}

/** valid, but worth a second look: printed, and check-config still succeeds */
function warnings(config: Config): string[] {
  const out: string[] = []
  for (const t of config.targets) {
    out.push(...scopeWarnings(t))
    // without a password the gateway sends no AUTH: Redis takes it as `default`, a user that any
    // client reaching that Redis is too, and that a permitted CONFIG SET requirepass locks out
    if (t.protocol === 'redis' && !t.upstream.password) {
      out.push(`target ${t.name}: the gateway logs in to its Redis upstream as the 'default' user without a password; give it an ACL user of its own (upstream.user, upstream.password)`)
    }
  }
  return out
}
