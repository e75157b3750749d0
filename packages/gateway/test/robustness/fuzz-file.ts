// The body of fuzz-postgres/redis/http.test.ts: one world per file (tap runs two files at once), the
// campaign at CI size (20,000 cases per protocol, checked after each 10,000), then secret hygiene.
import t, { type Test } from 'tap'
import { startWorld } from './env.ts'
import { campaign } from './campaign.ts'
import { formatStats, type Protocol } from './fuzz.ts'
import { FD_SLACK, PARSER_CEILING_BYTES, RSS_SLACK_BYTES } from './checks.ts'
import { hygieneTest } from './hygiene.ts'
import { cpuSeconds } from './memory.ts'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'

/** the postmaster's pid: the first line of postmaster.pid (undefined where it cannot be read) */
function postmaster(dataDir: string): number | undefined {
  try {
    return Number(readFileSync(join(dataDir, 'postmaster.pid'), 'latin1').split('\n')[0])
  } catch {
    return undefined
  }
}

export const CI_CASES = 20_000
const BATCH = 10_000

export function fuzzFile(protocol: Protocol): void {
  t.test(`${protocol}: ${CI_CASES} mutated real-client cases leave the gateway alive, answering, leak-free, every recording intact`, async (t) => {
    // where the file's time goes, as comments (wall and CPU seconds of this process and the
    // gateway's): what a slow CI run is spent on, never asserted
    const clock = phases(t)
    const w = await startWorld()
    t.teardown(() => w.cleanup())
    clock.gateway = w.gateway.pid
    clock.postgres = postmaster(w.pg.dataDir)
    clock.mark('world started (Postgres from the template, redis-server, the gateway)')
    const { batches, totals } = await campaign(w, { cases: CI_CASES, batch: BATCH, seed: Number(process.env.PORTCULLIS_FUZZ_SEED ?? 20261201), protocols: [protocol], print: (l) => (t.comment(l), clock.mark(l.slice(0, 60))) })
    const total = totals[protocol]!
    t.ok(total.cases >= CI_CASES, `${total.cases} cases ran (${formatStats(total)})`)
    t.ok(total.answered > 0 && total.closedByGateway > 0 && total.rst > 0 && total.fin > 0, 'the cases reached every outcome: answered, closed by the gateway, cut by FIN and by RST')
    t.equal(total.loginFailures, 0, 'every captured login was answered with a ready session')
    batches.forEach((b, i) => {
      t.same(b.report.problems, [], `after batch ${i + 1}: alive, a normal request answered on each protocol, no crash logged, no upstream connection left, fds within baseline + ${FD_SLACK}, RSS within baseline + ${RSS_SLACK_BYTES >> 20} MiB and libpg_query's growth within its ${PARSER_CEILING_BYTES >> 20} MiB, every recording intact`)
    })
    await t.test('secret hygiene: no password, key or token in logs, audit or recordings', (t) => hygieneTest(t, w))
    clock.mark('secret hygiene')
  })
}

/**
 * comments "phase: wall s, CPU s of this process (and its exited children: psql, redis-cli, the
 * collection's node), of the gateway, of Postgres (the postmaster and its exited backends)" per mark
 */
function phases(t: Test): { gateway: number | undefined; postgres: number | undefined; mark(what: string): void } {
  let wall = Date.now()
  const last = new Map<string, number>()
  const delta = (name: string, read: () => number): string => {
    try {
      const now = read()
      const d = now - (last.get(name) ?? 0)
      last.set(name, now)
      return `${name} ${d.toFixed(1)} s`
    } catch {
      return `${name} ?`
    }
  }
  const clock = {
    gateway: undefined as number | undefined,
    postgres: undefined as number | undefined,
    mark(what: string) {
      const now = Date.now()
      const cpu = [delta('test process', () => cpuSeconds('self', true))]
      if (clock.gateway !== undefined) cpu.push(delta('gateway', () => cpuSeconds(clock.gateway!)))
      if (clock.postgres !== undefined) cpu.push(delta('postgres', () => cpuSeconds(clock.postgres!, true)))
      t.comment(`time: ${what}: ${((now - wall) / 1000).toFixed(1)} s wall; CPU ${cpu.join(', ')}`)
      wall = now
    },
  }
  clock.mark('start')
  return clock
}
