// The body of fuzz-postgres/redis/http.test.ts: one world per file (tap runs two files at once), the
// campaign at CI size (20,000 cases per protocol, checked after each 10,000), then secret hygiene.
import t from 'tap'
import { startWorld } from './env.ts'
import { campaign } from './campaign.ts'
import { formatStats, type Protocol } from './fuzz.ts'
import { FD_SLACK, RSS_SLACK_BYTES } from './checks.ts'
import { hygieneTest } from './hygiene.ts'

export const CI_CASES = 20_000
const BATCH = 10_000

export function fuzzFile(protocol: Protocol): void {
  t.test(`${protocol}: ${CI_CASES} mutated real-client cases leave the gateway alive, answering, leak-free, every recording intact`, async (t) => {
    const w = await startWorld()
    t.teardown(() => w.cleanup())
    const { batches, totals } = await campaign(w, { cases: CI_CASES, batch: BATCH, seed: Number(process.env.PORTCULLIS_FUZZ_SEED ?? 20261201), protocols: [protocol], print: (l) => t.comment(l) })
    const total = totals[protocol]!
    t.ok(total.cases >= CI_CASES, `${total.cases} cases ran (${formatStats(total)})`)
    t.ok(total.answered > 0 && total.closedByGateway > 0 && total.rst > 0 && total.fin > 0, 'the cases reached every outcome: answered, closed by the gateway, cut by FIN and by RST')
    t.equal(total.loginFailures, 0, 'every captured login was answered with a ready session')
    batches.forEach((b, i) => {
      t.same(b.report.problems, [], `after batch ${i + 1}: alive, a normal request answered on each protocol, no crash logged, no upstream connection left, fds within baseline + ${FD_SLACK}, RSS within baseline + ${RSS_SLACK_BYTES >> 20} MiB, every recording intact`)
    })
    await t.test('secret hygiene: no password, key or token in logs, audit or recordings', (t) => hygieneTest(t, w))
  })
}
