import { parseArgs } from 'node:util'
import { readFile } from 'node:fs/promises'
import { verifyRecording } from '@portcullis/core'
import { UsageError } from '../args.ts'

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { 'hmac-key-file': { type: 'string' } },
  })
  const file = positionals[0]
  if (!file || positionals.length > 1) throw new UsageError('usage: portcullis verify FILE [--hmac-key-file F]')
  const keyFile = values['hmac-key-file']
  const hmacKey = keyFile ? await readFile(keyFile) : undefined
  const r = await verifyRecording(file, hmacKey ? { hmacKey } : {})
  const sig = r.signature && r.signature !== 'absent' ? `, signature ${r.signature}` : ''
  if (r.status === 'intact' && r.signature !== 'invalid') {
    process.stdout.write(`${file}: intact (${r.records} records${sig})\n`)
    return 0
  }
  const where = r.problem ? ` at record ${r.problem.record} (byte offset ${r.problem.offset}): ${r.problem.message}` : ''
  process.stdout.write(`${file}: ${r.status}${where} (${r.records} records read${sig})\n`)
  return 1
}
