import { parseArgs } from 'node:util'
import { ConfigError, loadConfig } from '@portcullis/core'
import { UsageError } from '../args.ts'

export async function run(argv: string[]): Promise<number> {
  const { positionals } = parseArgs({ args: argv, allowPositionals: true, options: {} })
  const file = positionals[0]
  if (!file || positionals.length > 1) throw new UsageError('usage: portcullis check-config FILE')
  try {
    const config = await loadConfig(file)
    process.stdout.write(`${file}: ok (${config.targets.length} targets, ${config.rules.length} rules)\n`)
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
