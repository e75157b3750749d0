// One fuzz campaign: capture the real clients' traffic through the running gateway, then N cases per
// protocol in batches, with the after-batch checks between batches. Shared by fuzz.test.ts (CI size)
// and `pnpm fuzz --cases N --seed S` (long runs).
import { captureCorpus, type Corpus } from './capture.ts'
import { afterBatch, baseline, formatMemory, type BatchReport } from './checks.ts'
import { fuzz, formatStats, type FuzzStats, type Protocol } from './fuzz.ts'
import { pgDirect, redisDirect, type World } from './env.ts'

export interface CampaignOptions {
  cases: number
  seed: number
  /** cases per batch (checks run after each) */
  batch: number
  protocols?: Protocol[]
  /** connections in flight per protocol (default PARALLEL): a stalled case idles its connection for the stall time, so a long run on a quiet machine goes faster with more */
  parallel?: number
  print?: (line: string) => void
}

export interface BatchResult {
  protocol: Protocol
  stats: FuzzStats
  report: BatchReport
}

/** a long run re-captures its seed corpus (and mints a fresh token) this often (PORTCULLIS_FUZZ_RECAPTURE_MS) */
export const RECAPTURE_MS = Number(process.env.PORTCULLIS_FUZZ_RECAPTURE_MS ?? 40 * 60_000)

export const PARALLEL: Record<Protocol, number> = { postgres: 16, redis: 24, http: 24 }

async function resetData(w: World): Promise<void> {
  // (the world's own redis-server: every key in it is the fuzzers', including the bit-flipped names)
  await redisDirect(w.redis, 'FLUSHALL')
  await pgDirect(w.pg, 'DELETE FROM robust_items WHERE id > 50; UPDATE robust_items SET n = id')
}

export async function campaign(w: World, opts: CampaignOptions): Promise<{ corpus: Corpus; batches: BatchResult[]; totals: Record<string, FuzzStats> }> {
  const print = opts.print ?? (() => {})
  let corpus = await captureCorpus(w)
  let capturedAt = Date.now()
  print(`seed corpus captured from real clients: postgres ${corpus.pg.length} connections (${corpus.pg.reduce((n, b) => n + b.length, 0)} bytes), redis ${corpus.redis.length} (${corpus.redis.reduce((n, b) => n + b.length, 0)} bytes), http ${corpus.http.length} (${corpus.http.reduce((n, b) => n + b.length, 0)} bytes)`)
  const base = await baseline(w)
  print(`gateway baseline: ${base.fds} fds, RSS ${(base.rss / 1048576).toFixed(0)} MiB after a full collection (${formatMemory(base.memory)})`)
  const seen = new Set<string>()
  let token = await w.token('robust-fuzz')
  const batches: BatchResult[] = []
  const totals: Record<string, FuzzStats> = {}
  for (const protocol of opts.protocols ?? (['postgres', 'redis', 'http'] as Protocol[])) {
    for (let done = 0, b = 0; done < opts.cases; b++) {
      const n = Math.min(opts.batch, opts.cases - done)
      // the captured logins carry tokens that expire after an hour (env.ts mints them with a 1 h
      // ttl); past RECAPTURE_MS a long run captures the real clients again, so its cases keep
      // reaching the session phase instead of all ending at a refused login
      if (Date.now() - capturedAt > RECAPTURE_MS) {
        corpus = await captureCorpus(w)
        token = await w.token('robust-fuzz')
        capturedAt = Date.now()
        print(`seed corpus captured again (its tokens were about to expire)`)
      }
      // the fuzzed traffic writes the same few keys and rows again and again: put them back to the
      // captured size, so that batch N's cases cost what batch 1's did
      if (b > 0) await resetData(w)
      const seeds = protocol === 'postgres' ? corpus.pg : protocol === 'redis' ? corpus.redis : corpus.http
      const stats = await fuzz({ protocol, port: w.gateway.ports[protocol === 'postgres' ? 'pg' : protocol], seeds, cases: n, seed: opts.seed + b, parallel: opts.parallel ?? PARALLEL[protocol], token })
      done += stats.cases
      const report = await afterBatch(w, base, seen)
      batches.push({ protocol, stats, report })
      print(formatStats(stats))
      print(
        `  after the batch: ${report.problems.length ? 'PROBLEMS: ' + report.problems.join(' | ') : 'alive, answering, no crash logged'}; fds ${report.fds} (HTTP pool ${report.httpPool}), RSS ${(report.rss / 1048576).toFixed(0)} MiB after a full collection (${(report.rssBefore / 1048576).toFixed(0)} before), ` +
          `upstream pg ${report.pgBackends} redis ${report.redisClients}, recordings verified ${report.recordings.files} (intact ${report.recordings.status.intact}, tampered ${report.recordings.status.tampered}); ${formatMemory(report.memory)}`,
      )
      const t = (totals[protocol] ??= { ...stats, cases: 0, preLoginCases: 0, connections: 0, answered: 0, closedByGateway: 0, fin: 0, rst: 0, stalled: 0, loginFailures: 0, mutations: {}, ms: 0 })
      for (const k of ['cases', 'preLoginCases', 'connections', 'answered', 'closedByGateway', 'fin', 'rst', 'stalled', 'loginFailures', 'ms'] as const) t[k] += stats[k]
      for (const [k, v] of Object.entries(stats.mutations)) t.mutations[k as keyof FuzzStats['mutations']] = (t.mutations[k as keyof FuzzStats['mutations']] ?? 0) + v
    }
  }
  return { corpus, batches, totals }
}
