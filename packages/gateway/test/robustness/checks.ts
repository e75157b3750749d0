// What must hold after every batch of abuse, checked on the real things: the gateway process (pid,
// /proc fds and RSS, its stderr), the upstream servers (pg_stat_activity, CLIENT LIST) and the
// recordings on disk (core's verifier with the seal key).
import pg from 'pg'
import { Redis } from 'ioredis'
import { readRecording, verifyRecording, type VerifyResult } from '@portcullis/core'
import { formatBreakdown, mib, type RssBreakdown } from './memory.ts'
import { pgCatalogBackends, pgGatewayBackends, recordingFiles, redisGatewayClients, sleep, type World } from './env.ts'

/** Descriptors the gateway may hold above its idle baseline once every client is gone. */
export const FD_SLACK = 16
const MiB = 1024 * 1024

/**
 * RSS the gateway may hold above its idle baseline after a batch, both read after a full garbage
 * collection (the inspector's, env.ts collectGarbage). Read without one, RSS said how far V8 had let
 * its garbage pile up, not what the gateway keeps: the live heap of two heap snapshots 4,000 closed
 * sessions apart grew 0.5 MB while RSS rose 164 MiB. After a collection what is left is what stays,
 * and the slack is the sum of what may stay, each part bounded by the code or measured (README,
 * "Where the RSS that stays is"); libpg_query's WASM memory is counted apart (PARSER_CEILING_BYTES).
 * The gateway runs with MALLOC_ARENA_MAX=2 here (env.ts gatewayEnv), as the README tells operators.
 */
export const RSS_COMPONENTS = {
  /**
   * the Postgres classifier's two caches: held together to their byte budget of estimated heap
   * (protocols/postgres classify/index.ts DEFAULT_CACHE_BYTES, weight.ts), an estimate at or over
   * what they hold (the seed statements' kind: 18.3 MiB estimated for 4,096 + 4,096 entries, 17.0
   * on the heap)
   */
  classifierCaches: 32 * MiB,
  /**
   * V8's pages over its live heap after the collection (free space in pages it keeps, code space),
   * and the live heap's other bounded tables: V8's other pages moved −20 to +8 MiB over a 30,000-case
   * run and the live heap +18 with the caches' ~17 in it
   */
  v8Pages: 16 * MiB,
  /**
   * glibc malloc's slack: freed native memory (Buffers' backing stores, libuv's read buffers, zlib)
   * that its arenas keep. With MALLOC_ARENA_MAX=2, +0 to +27 MiB over 30,000 cases (+42 without it)
   */
  allocator: 32 * MiB,
  /**
   * buffers alive between sessions: the recorders' chunk pool (core recording/recorder.ts:
   * POOL_CHUNKS 32 × CHUNK 256 KiB, given back to POOL_IDLE_KEEP 4 only after 10 s idle), msgpackr's
   * buffer (the largest record packed), the HTTP pool's up to 64 keep-alive sockets and the Redis lane
   */
  buffers: 12 * MiB,
} as const

/**
 * The sum of RSS_COMPONENTS: 92 MiB. What it catches: the 1,000,009-case run (before the caches'
 * byte budget, without MALLOC_ARENA_MAX) levelled off at +60 to +69 MiB, so a leak is caught once it
 * adds ~25–30 MiB over a run: in a 150,000-case run (~26,000 connections) ~1 KiB a connection, in a
 * 1,000,000-case run (~170,000) ~170 bytes a connection; a whole session's state left behind (its
 * socket, recorder chunk and parse state, tens of KiB) within ~1,000 sessions — and a session left
 * open is caught one by one anyway (pg_stat_activity, CLIENT LIST, fds).
 */
export const RSS_SLACK_BYTES = Object.values(RSS_COMPONENTS).reduce((a, b) => a + b, 0)

/**
 * What libpg_query's WASM memory may add to the gateway's resident memory over its baseline: the
 * ceiling the Postgres codec's statement bound states (protocols/postgres statement-limit.ts: at
 * the default 32 KiB the worst shape measured holds ~68 MiB, inside the module's initial 128 MiB,
 * so the memory never grows). Reported and bounded apart from RSS_SLACK_BYTES, from the resident
 * pages of the WASM reservation itself (memory.ts), so neither bound hides the other. Measured under
 * the fuzzer: 1 MiB resident at the baseline and after every batch (30,000 cases; in a 550,000-case
 * run's gateway too): the seed statements are small, and their parses reuse the same pages.
 */
export const PARSER_CEILING_BYTES = 128 * 1024 * 1024

/** the HTTP target's undici Pool size (protocols/http upstream.ts default, upstreamConnections) */
const HTTP_POOL_CONNECTIONS = 64

/** how long an ended session gets to release what it held */
const SETTLE_MS = 5000
// Descriptors get longer: an ended session's recording stays open until it is sealed and fsynced,
// one after another on the writer thread; at load 30 a Redis batch ended with ~60 recordings open
// and ~30 client sockets, draining over several seconds (every one then verified intact)
const FD_SETTLE_MS = 15_000

export interface Baseline {
  fds: number
  rss: number
  /** where that RSS is, and the gateway's own figures (memory.ts) */
  memory: MemoryReport
}

export interface MemoryReport {
  rss: RssBreakdown
  /** the gateway's process.memoryUsage() right after the collection */
  usage: NodeJS.MemoryUsage | undefined
}

export function formatMemory(m: MemoryReport): string {
  const u = m.usage
  return formatBreakdown(m.rss) + (u ? `; V8 heap used ${mib(u.heapUsed)} of ${mib(u.heapTotal)} MiB, external ${mib(u.external)} (array buffers ${mib(u.arrayBuffers)})` : '')
}

/** fds not counting the HTTP pool's upstream connections (see afterBatch), and RSS after a full collection */
export async function baseline(w: World): Promise<Baseline> {
  const usage = await w.gateway.collectGarbage()
  return { fds: w.gateway.fds() - w.gateway.socketsTo(Number(new URL(w.http.url).port)), rss: w.gateway.rssBytes(), memory: { rss: w.gateway.rss(), usage } }
}

/** A normal request on each protocol, through the gateway, with a fresh token. */
export async function normalRequests(w: World): Promise<string[]> {
  const problems: string[] = []
  const token = await w.token('robust-health')
  const ports = w.gateway.ports
  // a request that fails still ends its session: left open, the checks below would count it as leaked
  const c = new pg.Client({ host: '127.0.0.1', port: ports.pg, user: 'robust-health', database: 'app', password: token, connectionTimeoutMillis: 10_000 })
  c.on('error', () => {})
  try {
    await c.connect()
    const r = await c.query('SELECT id FROM robust_items WHERE id = $1', [7])
    if (r.rows[0]?.id !== 7) problems.push(`postgres answered ${JSON.stringify(r.rows)}`)
  } catch (err) {
    problems.push(`postgres: ${(err as Error).message}`)
  } finally {
    await c.end().catch(() => {})
  }
  const io = new Redis({ host: '127.0.0.1', port: ports.redis, password: token, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 10_000 })
  io.on('error', () => {})
  try {
    await io.connect()
    await io.set('robust:health', 'ok')
    const v = await io.get('robust:health')
    if (v !== 'ok') problems.push(`redis answered ${v}`)
    await io.quit()
  } catch (err) {
    problems.push(`redis: ${(err as Error).message}`)
    io.disconnect()
  }
  try {
    const res = await fetch(`http://127.0.0.1:${ports.http}/v1/chat/completions`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', connection: 'close' },
      body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'health' }] }),
      signal: AbortSignal.timeout(10_000),
    })
    const text = await res.text()
    if (res.status !== 200 || !text.includes('echo: health')) problems.push(`http answered ${res.status} ${text.slice(0, 200)}`)
  } catch (err) {
    problems.push(`http: ${(err as Error).message}`)
  }
  return problems
}

/** log lines that say the process itself failed (not a client's bad input) */
export function crashLines(log: string): string[] {
  return log.split('\n').filter((l) => /uncaught exception|unhandled rejection|FATAL ERROR|heap out of memory|^\s+at /i.test(l))
}

async function settle(what: () => Promise<boolean> | boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms
  for (;;) {
    if (await what()) return true
    if (Date.now() > end) return false
    await sleep(100)
  }
}

export interface RecordingTally {
  files: number
  status: Record<VerifyResult['status'], number>
  /** problems of the first few non-intact files */
  examples: string[]
}

/** Verifies every recording not yet seen intact (the seal key checks the signature too). */
export async function verifyAll(w: World, seen: Set<string>, allowed: VerifyResult['status'][]): Promise<RecordingTally> {
  const tally: RecordingTally = { files: 0, status: { intact: 0, tampered: 0, truncated: 0, unsealed: 0 }, examples: [] }
  for (const file of await recordingFiles(w.recordingsDir)) {
    if (seen.has(file)) continue
    const v = await verifyRecording(file, { hmacKey: w.sealKey })
    tally.files++
    tally.status[v.status]++
    if (v.status === 'intact' || allowed.includes(v.status)) seen.add(file)
    if (v.status !== 'intact' && tally.examples.length < 3) tally.examples.push(`${file.split('/').pop()}: ${v.status} ${v.problem?.message ?? ''} after ${v.records} records [${await summary(file)}]`)
  }
  return tally
}

/** the record types and the first bytes of each payload: what the session got to do */
async function summary(file: string): Promise<string> {
  const out: string[] = []
  for await (const e of readRecording(file)) out.push(`${e.type} ${JSON.stringify(e.payload).slice(0, 160)}`)
  return out.join(' / ')
}

export interface BatchReport {
  problems: string[]
  fds: number
  /** of those fds, the HTTP pool's upstream connections */
  httpPool: number
  /** after a full collection */
  rss: number
  /** before it */
  rssBefore: number
  memory: MemoryReport
  /** of rss, what libpg_query's WASM memory holds over its baseline (bounded by PARSER_CEILING_BYTES) */
  parserGrowth: number
  pgBackends: number
  redisClients: number
  recordings: RecordingTally
}

/**
 * After a batch: alive and answering on every protocol, nothing crashed in the log, no upstream
 * connection or descriptor left behind, RSS back near the baseline, every recording sealed and intact
 * (the gateway did not crash, so every ended session must have sealed its recording).
 */
export async function afterBatch(w: World, base: Baseline, seen: Set<string>): Promise<BatchReport> {
  const problems: string[] = []
  if (!w.gateway.alive()) problems.push('the gateway process is gone')
  problems.push(...(await normalRequests(w)))
  const crashes = crashLines(w.gateway.log())
  if (crashes.length) problems.push(`the gateway logged ${crashes.length} crash lines, first: ${crashes[0]}`)
  let pgBackends = -1
  let pgAsk = ''
  await settle(async () => {
    try {
      return (pgBackends = await pgGatewayBackends(w.pg)) === 0
    } catch (err) {
      // leaked backends can fill max_connections: then even this question is refused
      pgAsk = (err as { stderr?: string }).stderr?.trim() || (err as Error).message
      return false
    }
  }, SETTLE_MS)
  if (pgBackends !== 0) problems.push(pgBackends < 0 ? `Postgres could not be asked for the gateway's backends: ${pgAsk}` : `${pgBackends} upstream Postgres backends of the gateway still open`)
  // the one target's catalog connection may still be in its idle time; more than one is a leak
  const catalog = await pgCatalogBackends(w.pg).catch(() => -1)
  if (catalog > 1) problems.push(`${catalog} catalog connections open (one per target at most)`)
  let redisClients: string[] = []
  // the shared lane (name=portcullis-lane) is one connection per target by design, not a session's
  await settle(async () => (redisClients = (await redisGatewayClients(w.redis)).filter((l) => !/ name=portcullis-lane /.test(l))).length === 0, SETTLE_MS)
  if (redisClients.length) problems.push(`${redisClients.length} upstream Redis connections of ended sessions still open: ${redisClients.map((l) => l.replace(/^.* name=(\S*) .* cmd=(\S+) .*$/, 'name=$1 last cmd=$2')).join(', ')}`)
  // The HTTP target's undici Pool keeps its upstream connections open (keep-alive, up to its 64,
  // shared by every session) a few seconds after the last request: like the Redis lane, they are the
  // pool's by design, not a session's. They are counted apart, bounded by the pool's size; on a
  // loaded machine ~20 were still open 5 s after a batch of 24 parallel HTTP workers.
  const httpPort = Number(new URL(w.http.url).port)
  let fds = 0
  let pool = 0
  await settle(() => {
    fds = w.gateway.fds()
    pool = w.gateway.socketsTo(httpPort)
    return fds - pool <= base.fds + FD_SLACK
  }, FD_SETTLE_MS)
  if (fds - pool > base.fds + FD_SLACK) problems.push(`the gateway holds ${fds} fds (${w.gateway.fdKinds()}), ${pool} of them the HTTP pool's upstream connections (baseline ${base.fds} + ${FD_SLACK})`)
  if (pool > HTTP_POOL_CONNECTIONS) problems.push(`the HTTP pool holds ${pool} upstream connections (at most ${HTTP_POOL_CONNECTIONS})`)
  const before = w.gateway.rssBytes()
  let rss = before
  let usage: NodeJS.MemoryUsage | undefined
  try {
    usage = await w.gateway.collectGarbage()
    rss = w.gateway.rssBytes()
  } catch (err) {
    problems.push(`the gateway's garbage could not be collected: ${(err as Error).message}`)
  }
  const memory: MemoryReport = { rss: w.gateway.rss(), usage }
  // the parser's pages are bounded by their own ceiling, the rest by the slack
  const parser = Math.max(0, memory.rss.wasm - base.memory.rss.wasm)
  if (rss - parser > base.rss + RSS_SLACK_BYTES)
    problems.push(`the gateway RSS after a full collection is ${rss >> 20} MiB, ${(rss - parser) >> 20} without libpg_query's growth (${before >> 20} before it; baseline ${base.rss >> 20} MiB + ${RSS_SLACK_BYTES >> 20}): ${formatMemory(memory)}`)
  if (parser > PARSER_CEILING_BYTES) problems.push(`libpg_query's WASM memory grew ${parser >> 20} MiB over its baseline (ceiling ${PARSER_CEILING_BYTES >> 20})`)
  // sessions close a moment after their sockets: give the last ones time to seal
  let recordings = await verifyAll(w, seen, [])
  if (recordings.status.unsealed + recordings.status.truncated > 0) {
    await sleep(3000)
    const again = await verifyAll(w, seen, [])
    again.files = recordings.files
    again.status.intact += recordings.status.intact
    again.status.tampered += recordings.status.tampered
    recordings = again
  }
  if (recordings.status.tampered) problems.push(`${recordings.status.tampered} recordings verify as tampered: ${recordings.examples.join('; ')}`)
  if (recordings.status.unsealed + recordings.status.truncated)
    problems.push(`${recordings.status.unsealed + recordings.status.truncated} recordings left open by a live gateway: ${recordings.examples.join('; ')}`)
  return { problems, fds, httpPool: pool, rss, rssBefore: before, memory, parserGrowth: parser, pgBackends, redisClients: redisClients.length, recordings }
}
