// `portcullis explain --protocol redis --command '…'`: the operation a command line becomes, with
// no upstream needed. The line is split as redis-cli splits what you type.
import type { Operation } from '@portcullis/core'
import { classifyToOperation, type ClassifyOptions } from './classify.ts'
import { splitCommandLine } from './split-args.ts'

export function explainRedis(commandLine: string, opts: ClassifyOptions = {}): Operation {
  const args = splitCommandLine(commandLine)
  if (args === undefined || args.length === 0) {
    const statement = commandLine.trim().slice(0, 120)
    return {
      protocol: 'redis', class: 'admin', resources: [], statement, fingerprint: '', statements: [], facts: {},
      error: args === undefined ? 'unbalanced quotes in command line' : 'empty command line',
    }
  }
  return classifyToOperation(args, opts)
}
