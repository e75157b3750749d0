// `portcullis <command> …` — see the CLI reference in the README. Exit codes: 0 success, 1 the thing
// checked is not fine (bad config, tampered recording, refused request), 2 usage or environment error.
import { UsageError } from './args.ts'

const USAGE = `usage: portcullis <command> [options]

  start [--config FILE]              run the gateway (no config: the embedded demo)
  check-config FILE                  validate a config file
  explain --protocol postgres --sql TEXT
  explain --protocol redis --command 'CMD ARG …'
  explain --protocol http --request 'METHOD /path' [--body JSON] [--profile NAME]
          [--config FILE --target NAME --subject S --groups a,b]   adds the policy decision
          [--claims JSON]                    a scoped target: the scope for these claims
  token [--sub S] [--groups a,b] [--ttl 1h]   mint a dev token (demos and tests only)
  verify FILE|s3://BUCKET/KEY [--hmac-key-file F] [--public-key-file PEM] [--config FILE]
                                     check a recording's hash chain and seal
  replay FILE|s3://BUCKET/KEY [--config FILE]
                                     print a recording as a readable transcript
                                     (s3://: the store of --config's recording.upload, else env AWS_*)
  approvals list | show ID | approve ID | deny ID [--reason R] | wait ID [--timeout S] [--admin URL] [--token T]
`

const commands: Record<string, () => Promise<{ run(argv: string[]): Promise<number> }>> = {
  start: () => import('./commands/start.ts'),
  'check-config': () => import('./commands/check-config.ts'),
  explain: () => import('./commands/explain.ts'),
  token: () => import('./commands/token.ts'),
  verify: () => import('./commands/verify.ts'),
  replay: () => import('./commands/replay.ts'),
  approvals: () => import('./commands/approvals.ts'),
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(USAGE)
    return name ? 0 : 2
  }
  const load = commands[name]
  if (!load) {
    process.stderr.write(`portcullis: unknown command ${JSON.stringify(name)}\n\n${USAGE}`)
    return 2
  }
  try {
    return await (await load()).run(rest)
  } catch (err) {
    // Usage errors (ours and parseArgs' ERR_PARSE_ARGS_*) and environment failures alike: exit 2.
    const usage = err instanceof UsageError || String((err as { code?: unknown }).code).startsWith('ERR_PARSE_ARGS')
    process.stderr.write(`portcullis ${name}: ${(err as Error).message}\n`)
    if (usage) process.stderr.write(USAGE)
    return 2
  }
}

// `start` keeps running on its listeners and exits from its signal handlers; the rest end here.
process.exitCode = await main(process.argv.slice(2))
