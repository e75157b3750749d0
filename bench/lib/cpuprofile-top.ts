// `node --import tsx bench/lib/cpuprofile-top.ts FILE.cpuprofile [N] [--inclusive]`: the N functions
// with the most self time in a V8 CPU profile (from BENCH_CPU_PROF=DIR pnpm bench …), and the share
// of idle time, so a missed target's biggest cost can be named without opening DevTools.
// --inclusive: time with the function anywhere on the stack (idle left out), which names the
// phase (a socket write under flushUpstream, a record under decide) rather than the leaf.
import { readFileSync } from 'node:fs'

interface Node { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; hitCount?: number; children?: number[] }
interface Profile { nodes: Node[]; samples: number[]; timeDeltas: number[] }

const args = process.argv.slice(2)
const inclusive = args.includes('--inclusive')
const [file, n = '25'] = args.filter(a => a !== '--inclusive')
if (!file) {
  process.stderr.write('usage: cpuprofile-top.ts FILE.cpuprofile [N] [--inclusive]\n')
  process.exit(2)
}
const prof = JSON.parse(readFileSync(file, 'utf8')) as Profile
const byId = new Map(prof.nodes.map(node => [node.id, node]))
const parent = new Map<number, number>()
for (const node of prof.nodes) for (const c of node.children ?? []) parent.set(c, node.id)
const keyOf = (node: Node): string => {
  const f = node.callFrame
  const where = f.url ? `${f.url.replace(/^.*\/(node_modules|packages|protocols|fixtures|bench)\//, '$1/')}:${f.lineNumber + 1}` : ''
  return `${f.functionName || '(anonymous)'} ${where}`.trim()
}
const time = new Map<string, number>()
let total = 0
for (let i = 0; i < prof.samples.length; i++) {
  const node = byId.get(prof.samples[i])!
  const dt = prof.timeDeltas[i] ?? 0
  total += dt
  if (!inclusive) {
    const key = keyOf(node)
    time.set(key, (time.get(key) ?? 0) + dt)
    continue
  }
  if (node.callFrame.functionName === '(idle)') continue
  // each function once per sample, however often it recurs on the stack
  const seen = new Set<string>()
  for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
    const key = keyOf(byId.get(id)!)
    if (seen.has(key)) continue
    seen.add(key)
    time.set(key, (time.get(key) ?? 0) + dt)
  }
}
const rows = [...time.entries()].sort((a, b) => b[1] - a[1]).slice(0, Number(n))
process.stdout.write(`total ${(total / 1e6).toFixed(2)} s sampled${inclusive ? ' (inclusive, idle left out)' : ''}\n`)
for (const [key, us] of rows) process.stdout.write(`${((us / total) * 100).toFixed(1).padStart(5)}%  ${(us / 1000).toFixed(0).padStart(7)} ms  ${key}\n`)
