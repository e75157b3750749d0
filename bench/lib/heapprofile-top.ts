// `node --import tsx bench/lib/heapprofile-top.ts FILE [N] [--per TRANSACTIONS]`: the N functions
// that allocated the most in a sampling heap profile (alloc-sampling.mjs), as a share of all
// sampled bytes, and as bytes per transaction when told how many ran in the window.
import { readFileSync } from 'node:fs'

interface Node { callFrame: { functionName: string; url: string; lineNumber: number }; selfSize: number; children: Node[] }
const args = process.argv.slice(2)
const per = args.includes('--per') ? Number(args[args.indexOf('--per') + 1]) : undefined
const [file, n = '30'] = args.filter((a, i) => a !== '--per' && args[i - 1] !== '--per')
if (!file) {
  process.stderr.write('usage: heapprofile-top.ts FILE [N] [--per TRANSACTIONS]\n')
  process.exit(2)
}
const profile = JSON.parse(readFileSync(file, 'utf8')) as { head: Node }
const bytes = new Map<string, number>()
let total = 0
const walk = (node: Node): void => {
  const f = node.callFrame
  const key = `${f.functionName || '(anonymous)'} ${f.url ? `${f.url.replace(/^.*\/(node_modules|packages|protocols|fixtures|bench|dist)\//, '$1/')}:${f.lineNumber + 1}` : ''}`.trim()
  if (node.selfSize > 0) {
    bytes.set(key, (bytes.get(key) ?? 0) + node.selfSize)
    total += node.selfSize
  }
  for (const c of node.children) walk(c)
}
walk(profile.head)
process.stdout.write(`total ${(total / 1e6).toFixed(1)} MB sampled${per ? `, ${(total / per).toFixed(0)} B per transaction` : ''}\n`)
for (const [key, b] of [...bytes.entries()].sort((a, z) => z[1] - a[1]).slice(0, Number(n))) {
  process.stdout.write(`${((b / total) * 100).toFixed(1).padStart(5)}%  ${per ? `${(b / per).toFixed(0).padStart(6)} B` : ''}  ${key}\n`)
}
