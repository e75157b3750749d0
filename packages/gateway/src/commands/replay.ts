import { parseArgs } from 'node:util'
import { formatTranscript } from '@portcullis/core'
import { UsageError } from '../args.ts'
import { withRecording } from './recording-location.ts'

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: { config: { type: 'string' } } })
  const file = positionals[0]
  if (!file || positionals.length > 1) throw new UsageError('usage: portcullis replay FILE|s3://BUCKET/KEY [--config FILE]')
  process.stdout.write(await withRecording(file, values.config, local => formatTranscript(local)))
  return 0
}
