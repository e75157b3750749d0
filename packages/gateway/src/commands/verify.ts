import { parseArgs } from 'node:util'
import { readFile } from 'node:fs/promises'
import { createPublicKey } from 'node:crypto'
import { verifyRecording } from '@portcullis/core'
import { UsageError } from '../args.ts'
import { withRecording } from './recording-location.ts'

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { 'hmac-key-file': { type: 'string' }, 'public-key-file': { type: 'string' }, config: { type: 'string' } },
  })
  const file = positionals[0]
  if (!file || positionals.length > 1) {
    throw new UsageError('usage: portcullis verify FILE|s3://BUCKET/KEY [--hmac-key-file F] [--public-key-file PEM] [--config FILE]')
  }
  const opts: Parameters<typeof verifyRecording>[1] = {}
  const keyFile = values['hmac-key-file']
  // Read like a `file:` secret (one trailing newline dropped), so the same file serves both.
  if (keyFile) opts.hmacKey = Buffer.from((await readFile(keyFile, 'utf8')).replace(/\r?\n$/, ''), 'utf8')
  const pubFile = values['public-key-file']
  if (pubFile) opts.publicKey = createPublicKey(await readFile(pubFile))
  const r = await withRecording(file, values.config, local => verifyRecording(local, opts))
  const sig = r.signature && r.signature !== 'absent' ? `, signature ${r.signature}` : ''
  if (r.status === 'intact' && r.signature !== 'invalid') {
    process.stdout.write(`${file}: intact (${r.records} records${sig})\n`)
    return 0
  }
  const where = r.problem ? ` at record ${r.problem.record} (byte offset ${r.problem.offset}): ${r.problem.message}` : ''
  process.stdout.write(`${file}: ${r.status}${where} (${r.records} records read${sig})\n`)
  return 1
}
