// Gateway CPU per Redis command, builds and modes side by side, interleaved: the `redis-getset`
// scenario's load (redis-benchmark, 50 clients, GET then SET, -r 10000 keys) against one
// redis-server, one gateway per mode and build, all started at once and idle but for the run being
// measured; each round runs every gateway once, in an order that turns each round, so that the
// machine's load falls on every cell alike. Prints per cell the median ops/s and the median gateway
// CPU µs per command (/proc user + system of all its threads over the run), and per build
// mask ÷ inspect of both.
//   node --import tsx bench/redis-ab.ts [rounds=5] [requests=100000] [pipeline=16] [name=dir/bench-gateway-child.mjs …]
// Without builds named: the current build (dist/, `node scripts/build.mjs`) or the sources.
import { mkdtempSync, rmSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { GatewayProcess, MODES, type GatewayHandle, type GatewayMode } from './lib/gateway.ts'
import { cpuMicros } from './lib/proc.ts'
import { redisBenchmark } from './lib/redis-benchmark.ts'
import { startRedis } from './lib/redis.ts'
import { redisTarget } from './scenarios/redis-getset.ts'

const [roundsArg, requestsArg, pipelineArg, ...buildArgs] = process.argv.slice(2)
const rounds = Number(roundsArg ?? 5)
const requests = Number(requestsArg ?? 100_000)
const pipeline = Number(pipelineArg ?? 16)
const builds: [string, string | undefined][] = buildArgs.length === 0 ? [['current', undefined]] : buildArgs.map(a => a.split('=') as [string, string])

const tmp = mkdtempSync(join(tmpdir(), 'portcullis-redis-ab-'))
const redis = await startRedis(tmp)
const cells: { build: string; mode: GatewayMode; p: GatewayProcess; gw: GatewayHandle; ops: number[]; cpu: number[] }[] = []
const load0 = loadavg()[0]
try {
  for (const [build, file] of builds) {
    for (const mode of MODES) {
      // as redis-getset.ts: inspect's key rule matches no benchmark key, mask's every one
      const spec = {
        targets: [await redisTarget('bench-redis', redis)],
        masking: [{ id: `bench-${mode}`, when: { targets: ['bench-redis'] }, keys: [mode === 'mask' ? 'key:*' : 'nomatch:*'], method: 'redact' }],
      }
      const { process: p, handle: gw } = await GatewayProcess.start(tmp, spec, true, 1, file)
      cells.push({ build, mode, p, gw, ops: [], cpu: [] })
    }
  }
  const run = (c: (typeof cells)[number], n: number) =>
    redisBenchmark({ ...c.gw.targets['bench-redis'], password: c.gw.token, clients: 50, requests: n, pipeline, tests: ['set', 'get'], label: `${c.build} ${c.mode}` })
  // a warm-up run each (and the keys set), not counted
  for (const c of cells) await run(c, Math.min(requests, 20_000))
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < cells.length; i++) {
      const c = cells[(i + r) % cells.length]
      const before = cpuMicros(c.gw.pid)!
      const res = await run(c, requests)
      c.cpu.push((cpuMicros(c.gw.pid)! - before) / (2 * requests))
      c.ops.push(((res.GET?.rps ?? 0) + (res.SET?.rps ?? 0)) / 2)
    }
  }
} finally {
  await Promise.all(cells.map(c => c.p.stop()))
  await redis.stop()
  rmSync(tmp, { recursive: true, force: true })
}
const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1]
console.log(`redis-benchmark -c 50 -P ${pipeline} -n ${requests} GET+SET, rounds ${rounds}, load ${load0.toFixed(1)} → ${loadavg()[0].toFixed(1)}`)
for (const c of cells) {
  console.log(`${c.build.padEnd(8)} ${c.mode.padEnd(8)} ${Math.round(median(c.ops)).toLocaleString('en').padStart(9)} ops/s  ${median(c.cpu).toFixed(2)} CPU µs/command (${c.cpu.map(x => x.toFixed(1)).join(' ')})`)
}
for (const [build] of builds) {
  const [i, m] = MODES.map(mode => cells.find(c => c.build === build && c.mode === mode)!)
  console.log(`${build}: mask ÷ inspect ops/s ${(median(m.ops) / median(i.ops)).toFixed(2)}×; CPU per command ${(median(i.cpu) / median(m.cpu)).toFixed(2)}×`)
}
