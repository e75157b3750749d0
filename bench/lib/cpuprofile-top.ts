// `node --import tsx bench/lib/cpuprofile-top.ts FILE.cpuprofile [N]`: the N functions with the most
// self time in a V8 CPU profile (from BENCH_CPU_PROF=DIR pnpm bench …), and the share of idle time,
// so a missed target's biggest cost can be named without opening DevTools.
import { readFileSync } from 'node:fs'

interface Node { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number; children?: number[] }
interface Profile { nodes: Node[]; samples: number[]; timeDeltas: number[] }

const [file, n = '25'] = process.argv.slice(2)
if (!file) {
  process.stderr.write('usage: cpuprofile-top.ts FILE.cpuprofile [N]\n')
  process.exit(2)
}
const prof = JSON.parse(readFileSync(file, 'utf8')) as Profile
const byId = new Map(prof.nodes.map(node => [node.id, node]))
const self = new Map<string, number>()
let total = 0
for (let i = 0; i < prof.samples.length; i++) {
  const node = byId.get(prof.samples[i])!
  const dt = prof.timeDeltas[i] ?? 0
  total += dt
  const f = node.callFrame
  const where = f.url ? `${f.url.replace(/^.*\/(node_modules|packages|protocols|fixtures|bench)\//, '$1/')}:${f.lineNumber + 1}` : ''
  const key = `${f.functionName || '(anonymous)'} ${where}`.trim()
  self.set(key, (self.get(key) ?? 0) + dt)
}
const rows = [...self.entries()].sort((a, b) => b[1] - a[1]).slice(0, Number(n))
process.stdout.write(`total ${(total / 1e6).toFixed(2)} s sampled\n`)
for (const [key, us] of rows) process.stdout.write(`${((us / total) * 100).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(7)} ms  ${key}\n`)
