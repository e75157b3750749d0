import { parseArgs } from 'node:util'
import { formatTranscript } from '@portcullis/core'
import { UsageError } from '../args.ts'

export async function run(argv: string[]): Promise<number> {
  const { positionals } = parseArgs({ args: argv, allowPositionals: true, options: {} })
  const file = positionals[0]
  if (!file || positionals.length > 1) throw new UsageError('usage: portcullis replay FILE')
  process.stdout.write(await formatTranscript(file))
  return 0
}
