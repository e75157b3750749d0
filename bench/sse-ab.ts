// Masked ÷ inspected SSE events/s in one sitting, interleaved: the `http SSE` scenario's upstream
// stand-in and client (bench/lib/upstream-child.ts, sse-client.ts: every delta carries an email
// address), one gateway per mode and build, all started at once and idle but for the stream being
// read; each round reads one stream through every gateway, in an order that turns each round, so
// that the machine's load falls on every cell alike. Prints per cell the median events/s and the
// gateway's CPU µs per event (over all its streams), and per build mask ÷ inspect of both.
//   node --import tsx bench/sse-ab.ts [rounds=7] [events=20000] [name=dir/bench-gateway-child.mjs …]
// Without builds named: the current build (dist/, `node scripts/build.mjs`) or the sources.
import { mkdtempSync, rmSync } from 'node:fs'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { GatewayProcess, MODES, type GatewayHandle, type GatewayMode } from './lib/gateway.ts'
import { cpuMicros } from './lib/proc.ts'
import { readSse } from './lib/sse-client.ts'
import { startUpstream } from './lib/upstream.ts'
import { httpMasking, httpTarget } from './scenarios/http-json.ts'

const [roundsArg, eventsArg, ...buildArgs] = process.argv.slice(2)
const rounds = Number(roundsArg ?? 7)
const events = Number(eventsArg ?? 20000)
const builds: [string, string | undefined][] = buildArgs.length === 0 ? [['current', undefined]] : buildArgs.map(a => a.split('=') as [string, string])

const tmp = mkdtempSync(join(tmpdir(), 'portcullis-sse-ab-'))
const upstream = await startUpstream(events)
const cells: { build: string; mode: GatewayMode; p: GatewayProcess; gw: GatewayHandle; eps: number[]; cpu: number; n: number }[] = []
const load0 = loadavg()[0]
try {
  for (const [build, file] of builds) {
    for (const mode of MODES) {
      const spec = { targets: [await httpTarget('bench-http', upstream)], masking: httpMasking(mode, 'bench-http') }
      const { process: p, handle: gw } = await GatewayProcess.start(tmp, spec, true, 1, file)
      cells.push({ build, mode, p, gw, eps: [], cpu: 0, n: 0 })
    }
  }
  // a warm-up stream each, not counted
  for (const c of cells) await readSse({ ...c.gw.targets['bench-http'], token: c.gw.token, label: `${c.build} ${c.mode}` })
  for (let r = 0; r < rounds; r++) {
    for (let i = 0; i < cells.length; i++) {
      const c = cells[(i + r) % cells.length]
      const before = cpuMicros(c.gw.pid)!
      const res = await readSse({ ...c.gw.targets['bench-http'], token: c.gw.token, label: `${c.build} ${c.mode}` })
      c.cpu += cpuMicros(c.gw.pid)! - before
      c.n += res.events
      if (res.events < events) throw new Error(`${c.build} ${c.mode}: ${res.events} of ${events} events`)
      if (c.mode === 'mask' && res.leaked) throw new Error(`${c.build} mask: an address reached the client`)
      c.eps.push(res.eventsPerSec)
    }
  }
} finally {
  await Promise.all(cells.map(c => c.p.stop()))
  await upstream.stop()
  rmSync(tmp, { recursive: true, force: true })
}
const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1]
console.log(`events ${events}, rounds ${rounds}, load ${load0.toFixed(1)} → ${loadavg()[0].toFixed(1)}`)
for (const c of cells) {
  const e = c.eps.map(x => Math.round(x / 1000))
  console.log(`${c.build.padEnd(8)} ${c.mode.padEnd(8)} ${Math.round(median(c.eps)).toLocaleString('en').padStart(9)} events/s (k: ${e.join(' ')})  ${(c.cpu / c.n).toFixed(2)} CPU µs/event`)
}
for (const [build] of builds) {
  const [i, m] = MODES.map(mode => cells.find(c => c.build === build && c.mode === mode)!)
  const perRound = m.eps.map((x, k) => x / i.eps[k])
  console.log(`${build}: mask ÷ inspect events/s ${(median(m.eps) / median(i.eps)).toFixed(2)}× of the medians, ${median(perRound).toFixed(2)}× the median round (per round: ${perRound.map(x => x.toFixed(2)).join(' ')}); CPU per event ${((i.cpu / i.n) / (m.cpu / m.n)).toFixed(2)}×`)
}
