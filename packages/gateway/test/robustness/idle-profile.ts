// Diagnosis of what 1,000 idle sessions cost the 50 active ones (not a test; README "Idle connections"
// has what it found). The world and the sessions of idle-connections.test.ts, with the gateway's own
// V8 inspector asked for what a timing cannot say:
//   node --experimental-websocket --import tsx packages/gateway/test/robustness/idle-profile.ts [rounds]
// Modes (env):
//   (none)      rounds without / with the idle set (opened and closed between them): per round a CPU
//               profile (PROFILE_DIR keeps them), the GC events (perf_hooks 'gc'), heap and handles;
//               then self time per 1,000 requests of both arms, by function, sorted by difference
//   PERF=1      the same with `perf record -p` of the gateway instead of the V8 profiler (CPU time
//               only, kernel included; give the gateway --perf-basic-prof for JIT names)
//   TIMERS=1    Node's timer lists by duration each round (needs PORTCULLIS_GATEWAY_NODE_ARGS=--expose-internals)
//   CHECKLIKE=1 the old check's sequence (GC, settle round, measured round) with the GC events inside each
//   AFTER=1     the gateway's own CPU per 250 ms, no traffic, after the idle set opens and after it closes
//   TWO=1       two gateways, one holding the idle set, alternating rounds at rest (what the check does now);
//               SETTLE_MS (default 8000) after opening, PAIRS per phase
//   SNAPSHOT=1  heap snapshots without and with the idle set, after a full GC, into PROFILE_DIR
// IDLE_REDIS / IDLE_HTTP / PER_CLIENT change the sizes; PORTCULLIS_GATEWAY_STDOUT=FILE with
// PORTCULLIS_GATEWAY_NODE_ARGS="--trace-gc --trace-gc-nvp" keeps V8's own GC trace.
import { once } from 'node:events'
import { mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs'
import { spawn } from 'node:child_process'
import { startWorld, sleep } from './env.ts'
import { activeClient, openIdle as openIdleSet, type Active, type IdleSet } from './idle-set.ts'
import { resp } from './wire.ts'

const ACTIVE = 50
const IDLE_REDIS = Number(process.env.IDLE_REDIS ?? 600)
const IDLE_HTTP = Number(process.env.IDLE_HTTP ?? 400)
const PER_CLIENT = Number(process.env.PER_CLIENT ?? 200)
const ROUNDS = Number(process.argv[2] ?? 3)
const PROFILE_DIR = process.env.PROFILE_DIR
const PERF = process.env.PERF === '1'

/** per thread of the gateway: its name and utime + stime, ms */
function threadCpu(): Map<number, [string, number]> {
  const out = new Map<number, [string, number]>()
  for (const tid of readdirSync(`/proc/${w.gateway.pid}/task`)) {
    try {
      const s = readFileSync(`/proc/${w.gateway.pid}/task/${tid}/stat`, 'utf8')
      const comm = s.slice(s.indexOf('(') + 1, s.lastIndexOf(')'))
      const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
      out.set(Number(tid), [comm, (Number(f[11]) + Number(f[12])) * 10])
    } catch {}
  }
  return out
}

if (PROFILE_DIR) mkdirSync(PROFILE_DIR, { recursive: true })
const w = await startWorld()
try {
  await main()
} finally {
  await w.cleanup()
}

async function inspector(): Promise<(method: string, params?: object) => Promise<any>> {
  const url = /Debugger listening on (ws:\/\/127\.0\.0\.1:\d+\/\S+)/.exec(w.gateway.log())![1]!
  const ws = new WebSocket(url)
  await new Promise((r, j) => ((ws.onopen = r), (ws.onerror = j)))
  let id = 0
  const waiting = new Map<number, (m: any) => void>()
  ws.onmessage = (m) => {
    const o = JSON.parse(String(m.data))
    if (o.id !== undefined) waiting.get(o.id)?.(o)
  }
  return (method, params = {}) =>
    new Promise((resolve, reject) => {
      const n = ++id
      waiting.set(n, (o) => (waiting.delete(n), o.error ? reject(new Error(JSON.stringify(o.error))) : resolve(o.result)))
      ws.send(JSON.stringify({ id: n, method, params }))
    })
}

async function main() {
  const call = await inspector()
  const evaluate = async (expression: string) => {
    const r = await call('Runtime.evaluate', { expression, includeCommandLineAPI: true, returnByValue: true, awaitPromise: true })
    if (r.exceptionDetails) throw new Error(JSON.stringify(r.exceptionDetails))
    return r.result.value
  }
  await evaluate(`(() => {
    const { PerformanceObserver } = require('node:perf_hooks')
    globalThis.__gc = []
    new PerformanceObserver((l) => { for (const e of l.getEntries()) globalThis.__gc.push([e.detail?.kind ?? e.kind, e.duration]) }).observe({ entryTypes: ['gc'] })
    return true
  })()`)
  // 1 minor, 2 major, 4 incremental marking, 8 weak callbacks
  const gcStats = `(() => { const g = globalThis.__gc; globalThis.__gc = []; const by = {}; for (const [k, d] of g) { const b = (by[k] ??= { n: 0, ms: 0, max: 0 }); b.n++; b.ms += d; b.max = Math.max(b.max, d) } return by })()`
  const heap = `(() => { const v8 = require('node:v8'); const h = v8.getHeapStatistics(); const s = Object.fromEntries(v8.getHeapSpaceStatistics().map(x => [x.space_name, Math.round(x.space_used_size / 1024)])); const res = process.getActiveResourcesInfo(); const counts = {}; for (const r of res) counts[r] = (counts[r] ?? 0) + 1; return { usedKiB: Math.round(h.used_heap_size / 1024), totalKiB: Math.round(h.total_heap_size / 1024), externalKiB: Math.round(h.external_memory / 1024), spaces: s, resources: counts } })()`
  const timers = process.env.TIMERS
    ? `(() => { const { timerListMap } = require('internal/timers'); const out = {}; for (const [ms, list] of Object.entries(timerListMap)) { let n = 0; for (let t = list._idleNext; t && t !== list; t = t._idleNext) n++; out[ms] = n } return out })()`
    : undefined

  const token = await w.token('robust-active')
  const idleToken = await w.token('robust-idle')
  const clients = await Promise.all(Array.from({ length: ACTIVE }, () => activeClient(w.gateway.ports.redis, token)))
  clients[0]!.socket.write(resp('SET', 'robust:idle-test', 'v'))
  await sleep(200)
  await round(clients)
  await round(clients)

  const arms: Record<string, { self: Map<string, number>; requests: number; sampledMs: number; gc: Record<string, { n: number; ms: number; max: number }>; rounds: string[]; cpu: Map<string, number> }> = {}
  const measure = async (arm: string, i: number) => {
    await w.gateway.collectGarbage()
    await round(clients)
    await sleep(300)
    const h = await evaluate(heap)
    const tm = timers ? await evaluate(timers) : undefined
    await evaluate(gcStats)
    const perf = PERF ? spawn('perf', ['record', '-F', '1999', '-g', '-p', String(w.gateway.pid), '-o', `${PROFILE_DIR}/${arm}-${i}.perf.data`], { stdio: 'ignore' }) : undefined
    if (perf) await sleep(500)
    if (!PERF) {
      await call('Profiler.enable')
      await call('Profiler.setSamplingInterval', { interval: 200 })
      await call('Profiler.start')
    }
    const cpu0 = threadCpu()
    const r = await round(clients)
    const cpu1 = threadCpu()
    const { profile } = PERF ? { profile: { nodes: [], samples: [], timeDeltas: [] } } : await call('Profiler.stop')
    if (perf) {
      perf.kill('SIGINT')
      await once(perf, 'exit')
    }
    const gc = await evaluate(gcStats)
    if (PROFILE_DIR) {
      mkdirSync(PROFILE_DIR, { recursive: true })
      writeFileSync(`${PROFILE_DIR}/${arm}-${i}.cpuprofile`, JSON.stringify(profile))
    }
    const a = (arms[arm] ??= { self: new Map(), requests: 0, sampledMs: 0, gc: {}, rounds: [], cpu: new Map() })
    a.requests += r.n
    for (const [tid, [comm, ms]] of cpu1) {
      const before = cpu0.get(tid)?.[1] ?? 0
      const k = tid === w.gateway.pid ? 'main' : comm
      a.cpu.set(k, (a.cpu.get(k) ?? 0) + ms - before)
    }
    const byId = new Map<number, any>(profile.nodes.map((n: any) => [n.id, n]))
    for (let k = 0; k < profile.samples.length; k++) {
      const node = byId.get(profile.samples[k])!
      const f = node.callFrame
      const key = `${f.functionName || '(anonymous)'} ${f.url ? f.url.replace(/^.*\/(node_modules|packages|protocols)\//, '$1/') + ':' + (f.lineNumber + 1) : ''}`.trim()
      const dt = (profile.timeDeltas[k] ?? 0) / 1000
      if (f.functionName !== '(idle)') a.sampledMs += dt
      a.self.set(key, (a.self.get(key) ?? 0) + dt)
    }
    for (const [k, v] of Object.entries(gc as Record<string, { n: number; ms: number; max: number }>)) {
      const b = (a.gc[k] ??= { n: 0, ms: 0, max: 0 })
      b.n += v.n
      b.ms += v.ms
      b.max = Math.max(b.max, v.max)
    }
    const line = `${arm} #${i}: ${r.tput.toFixed(0)}/s p99 ${r.p99.toFixed(2)} ms; heap used ${h.usedKiB} KiB (old ${h.spaces.old_space}, new ${h.spaces.new_space}, external ${h.externalKiB}); resources ${JSON.stringify(h.resources)}${tm ? ` timers ${JSON.stringify(tm)}` : ''}; gc ${JSON.stringify(gc)}`
    a.rounds.push(line)
    console.log(line)
  }
  if (process.env.CHECKLIKE) {
    // the check's own sequence (quiet, full GC, a round not measured, quiet, the measured round), with
    // the gateway's GC events inside each measured round
    const cpuTicks = () => { const f = readFileSync(`/proc/${w.gateway.pid}/stat`, 'utf8').split(') ')[1]!.split(' '); return Number(f[11]) + Number(f[12]) }
    const quiet = async () => { for (let i = 0; i < 25; i++) { const a = cpuTicks(); await sleep(200); if (cpuTicks() - a <= 2) return } }
    const events = `(() => { const g = globalThis.__gc; globalThis.__gc = []; return g.map(([k, d]) => ({ 1: 's', 4: 'MC', 8: 'im', 16: 'wcb' })[k] + ':' + d.toFixed(1)).join(' ') })()`
    const one = async (arm: string) => {
      await quiet()
      await w.gateway.collectGarbage()
      await round(clients)
      await quiet()
      await evaluate(events)
      const r = await round(clients)
      console.log(`${arm.padEnd(7)} ${r.tput.toFixed(0).padStart(6)}/s p99 ${r.p99.toFixed(2).padStart(6)} ms  gc in the round: ${await evaluate(events)}`)
    }
    await one('without')
    for (let k = 0; k < ROUNDS; k++) {
      const idle = await openIdle(idleToken)
      await one('with')
      await closeIdle(idle)
      await one('without')
    }
    return
  }
  if (process.env.AFTER) {
    // what the gateway does on its own after 1,000 sessions opened and after they closed: its CPU per
    // 250 ms with no traffic at all
    const mainNs = () => Number(readFileSync(`/proc/${w.gateway.pid}/task/${w.gateway.pid}/schedstat`, 'utf8').split(' ')[0])
    const allNs = () => readdirSync(`/proc/${w.gateway.pid}/task`).reduce((n, tid) => { try { return n + Number(readFileSync(`/proc/${w.gateway.pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]) } catch { return n } }, 0)
    const watchFor = async (what: string, ms: number) => {
      const t0 = Date.now()
      let line = ''
      while (Date.now() - t0 < ms) {
        const m0 = mainNs(), a0 = allNs()
        await sleep(250)
        line += ` ${((mainNs() - m0) / 1e6).toFixed(0)}/${((allNs() - a0) / 1e6).toFixed(0)}`
      }
      console.log(`${what}: gateway CPU ms per 250 ms, main/all threads:${line}`)
    }
    await watchFor('quiet', 3000)
    for (let k = 0; k < 2; k++) {
      const t0 = Date.now()
      const idle = await openIdle(idleToken)
      console.log(`opened in ${Date.now() - t0} ms`)
      await watchFor('after opening', 12000)
      for (const s of idle.sockets) s.destroy()
      idle.agent.destroy()
      await watchFor('after closing', 12000)
    }
    return
  }
  if (process.env.TWO) {
    // two gateways on the same config and upstreams, one of them holding the idle set, measured in
    // alternating short rounds at steady state (no opening or closing inside the measured stretch);
    // then the idle set moves to the other gateway, so a difference between the processes cancels
    const g2 = await w.startGateway()
    const gws = [w.gateway, g2]
    const sets = await Promise.all(gws.map((g) => Promise.all(Array.from({ length: ACTIVE }, () => activeClient(g.ports.redis, token)))))
    for (const set of sets) for (let j = 0; j < 3; j++) await round(set)
    const mainNs = (pid: number) => Number(readFileSync(`/proc/${pid}/task/${pid}/schedstat`, 'utf8').split(' ')[0])
    const allNs = (pid: number) => readdirSync(`/proc/${pid}/task`).reduce((n, tid) => { try { return n + Number(readFileSync(`/proc/${pid}/task/${tid}/schedstat`, 'utf8').split(' ')[0]) } catch { return n } }, 0)
    const ratios: { tput: number; p99: number; main: number; all: number }[] = []
    for (let phase = 0; phase < 2; phase++) {
      const holder = gws[phase]!
      const idle = await openIdleOn(holder, idleToken)
      await sleep(Number(process.env.SETTLE_MS ?? 8000))
      for (const g of gws) await (g as typeof w.gateway).collectGarbage()
      for (const set of sets) await round(set)
      for (let k = 0; k < Number(process.env.PAIRS ?? 10); k++) {
        const r: Record<number, { tput: number; p99: number; main: number; all: number }> = {}
        const order = k % 2 === 0 ? [0, 1] : [1, 0]
        for (const gi of order) {
          const g = gws[gi]!
          const m0 = mainNs(g.pid), a0 = allNs(g.pid)
          const x = await round(sets[gi]!)
          r[gi] = { tput: x.tput, p99: x.p99, main: (mainNs(g.pid) - m0) / 1e3 / x.n, all: (allNs(g.pid) - a0) / 1e3 / x.n }
        }
        const withI = r[phase]!, without = r[1 - phase]!
        ratios.push({ tput: withI.tput / without.tput, p99: withI.p99 / without.p99, main: withI.main / without.main, all: withI.all / without.all })
        console.log(`phase ${phase} pair ${k}: with ${withI.tput.toFixed(0)}/s p99 ${withI.p99.toFixed(1)} main ${withI.main.toFixed(1)} µs/req all ${withI.all.toFixed(1)} | without ${without.tput.toFixed(0)}/s p99 ${without.p99.toFixed(1)} main ${without.main.toFixed(1)} all ${without.all.toFixed(1)}`)
      }
      for (const s of idle.sockets) s.destroy()
      idle.agent.destroy()
      await sleep(6000)
    }
    const med = (xs: number[]) => { const s = [...xs].sort((a, b) => a - b); return s[Math.floor(s.length / 2)]! }
    console.log(`median ratios with/without: throughput ${med(ratios.map((r) => r.tput)).toFixed(3)} p99 ${med(ratios.map((r) => r.p99)).toFixed(3)} main CPU/req ${med(ratios.map((r) => r.main)).toFixed(3)} all threads CPU/req ${med(ratios.map((r) => r.all)).toFixed(3)}`)
    for (const set of sets) for (const c of set) c.socket.destroy()
    await g2.stop()
    return
  }
  if (process.env.SNAPSHOT) {
    // heap snapshots of the gateway without and with the idle set (each after a full collection)
    await w.gateway.collectGarbage()
    console.log('without', JSON.stringify(await evaluate(heap)))
    await evaluate(`require('node:v8').writeHeapSnapshot('${PROFILE_DIR}/without.heapsnapshot')`)
    const idle = await openIdle(idleToken)
    await sleep(6000) // the handshake timers of the last logins have fired
    await w.gateway.collectGarbage()
    console.log('with', JSON.stringify(await evaluate(heap)))
    await evaluate(`require('node:v8').writeHeapSnapshot('${PROFILE_DIR}/with.heapsnapshot')`)
    for (const s of idle.sockets) s.destroy()
    idle.agent.destroy()
    return
  }
  for (let i = 0; i < ROUNDS; i++) {
    await measure('without', i)
    const idle = await openIdle(idleToken)
    console.log(`opened: fds ${w.gateway.fds()} rss ${(w.gateway.rssBytes() / 2 ** 20).toFixed(0)} MiB`)
    await measure('with', i)
    await closeIdle(idle)
  }
  await measure('without', ROUNDS)

  for (const [arm, a] of Object.entries(arms)) {
    console.log(`\n== ${arm}: CPU ms per 1k requests by thread: ${[...a.cpu].filter(([, v]) => v > 0).map(([k, v]) => `${k} ${((v * 1000) / a.requests).toFixed(1)}`).join(', ')}`)
    console.log(`== ${arm}: ${a.requests} requests, main thread busy ${((a.sampledMs * 1000) / a.requests).toFixed(1)} ms per 1k requests; gc ${Object.entries(a.gc).map(([k, v]) => `kind ${k}: ${v.n} (${((v.n * 1000) / a.requests).toFixed(2)}/1k req), ${v.ms.toFixed(1)} ms total, max ${v.max.toFixed(2)} ms`).join('; ')}`)
  }
  const w0 = arms.without!
  const w1 = arms.with!
  const keys = new Set([...w0.self.keys(), ...w1.self.keys()])
  const rows = [...keys].map((k) => {
    const a = ((w0.self.get(k) ?? 0) * 1000) / w0.requests
    const b = ((w1.self.get(k) ?? 0) * 1000) / w1.requests
    return { k, a, b, d: b - a }
  })
  console.log('\nself ms per 1k requests: without → with (difference), top by |difference|')
  for (const r of rows.sort((x, y) => Math.abs(y.d) - Math.abs(x.d)).slice(0, 30)) console.log(`${r.a.toFixed(2).padStart(8)} → ${r.b.toFixed(2).padStart(8)} (${r.d >= 0 ? '+' : ''}${r.d.toFixed(2)})  ${r.k}`)
  console.log('\ntop self (with)')
  for (const r of rows.sort((x, y) => y.b - x.b).slice(0, 25)) console.log(`${r.a.toFixed(2).padStart(8)} → ${r.b.toFixed(2).padStart(8)}  ${r.k}`)
  for (const c of clients) c.socket.destroy()
}

async function round(clients: Active[]) {
  return roundOf(clients, PER_CLIENT)
}

async function roundOf(clients: Active[], perClient: number) {
  const PER_CLIENT = perClient
  const latencies: number[] = []
  const start = process.hrtime.bigint()
  await Promise.all(
    clients.map(async (c) => {
      for (let i = 0; i < PER_CLIENT; i++) {
        const t0 = process.hrtime.bigint()
        await c.get()
        latencies.push(Number(process.hrtime.bigint() - t0) / 1e6)
      }
    }),
  )
  const wall = Number(process.hrtime.bigint() - start) / 1e9
  latencies.sort((a, b) => a - b)
  return { n: latencies.length, tput: latencies.length / wall, p99: latencies[Math.floor(latencies.length * 0.99)]! }
}

async function openIdle(token: string): Promise<IdleSet> {
  return openIdleOn(w.gateway, token)
}

async function openIdleOn(g: { ports: { redis: number; http: number } }, token: string): Promise<IdleSet> {
  return openIdleSet(g, token, { redis: IDLE_REDIS, http: IDLE_HTTP })
}

async function closeIdle(idle: IdleSet): Promise<void> {
  for (const s of idle.sockets) s.destroy()
  idle.agent.destroy()
  const target = w.gateway.fds() - IDLE_REDIS - IDLE_HTTP
  for (let i = 0; i < 50 && w.gateway.fds() > target + 20; i++) await sleep(100)
  await sleep(500)
}
