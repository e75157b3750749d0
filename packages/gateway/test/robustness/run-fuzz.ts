// `pnpm fuzz --cases N [--seed S] [--batch B] [--parallel P] [--protocol postgres,redis,http]`: the robustness
// fuzzers of fuzz.test.ts at any size, against the same real gateway, Postgres, Redis and HTTP
// fixture. Prints the figures of every batch and the totals; exits 1 when a check failed.
import { parseArgs } from 'node:util'
import { startWorld } from './env.ts'
import { campaign } from './campaign.ts'
import { formatStats, type Protocol } from './fuzz.ts'

const { values } = parseArgs({
  options: {
    cases: { type: 'string', default: '20000' },
    seed: { type: 'string', default: String(Date.now() % 1_000_000) },
    batch: { type: 'string' },
    protocol: { type: 'string', default: 'postgres,redis,http' },
    parallel: { type: 'string' },
  },
})
const cases = Number(values.cases)
const seed = Number(values.seed)
const batch = Number(values.batch ?? Math.min(cases, Math.max(5000, Math.ceil(cases / 20))))
const protocols = values.protocol!.split(',') as Protocol[]
const print = (l: string) => process.stdout.write(`[${new Date().toISOString()}] ${l}\n`)

print(`fuzz: ${cases} cases per protocol (${protocols.join(', ')}), seed ${seed}, checks every ${batch} cases`)
const w = await startWorld()
// stopped early (a long run out of time): the batches printed so far are the figures; clean up
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.once(sig, () => {
    print(`stopped by ${sig}: the figures are the batches printed above`)
    w.cleanup().finally(() => process.exit(2))
  })
}
let failed = false
try {
  const { batches, totals } = await campaign(w, { cases, seed, batch, protocols, print, ...(values.parallel ? { parallel: Number(values.parallel) } : {}) })
  failed = batches.some((b) => b.report.problems.length > 0 || b.stats.loginFailures > 0)
  print('totals:')
  for (const s of Object.values(totals)) print('  ' + formatStats(s))
  print(`gateway log: ${w.gateway.log().split('\n').length} lines; ${failed ? 'FAILED checks above' : 'every check held after every batch'}`)
} finally {
  await w.cleanup()
}
process.exit(failed ? 1 : 0)
