import { parseArgs } from 'node:util'
import { parseTtlSeconds, splitList } from '../args.ts'
import { devIssuerDir, mintDevToken, DEV_ISSUER } from '../dev-tokens.ts'

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { sub: { type: 'string', default: 'dev' }, groups: { type: 'string' }, ttl: { type: 'string', default: '1h' } },
  })
  const ttlSeconds = parseTtlSeconds(values.ttl!)
  const groups = splitList(values.groups)
  const { token, expiresAt } = await mintDevToken({ sub: values.sub!, groups, ttlSeconds })
  process.stdout.write(token + '\n')
  process.stderr.write(
    `portcullis token: DEV TOKEN for demos and tests only — issuer ${DEV_ISSUER}, keys in ${devIssuerDir()}; ` +
      `sub=${values.sub} groups=[${groups.join(',')}] expires ${new Date(expiresAt).toISOString()}\n`,
  )
  return 0
}
