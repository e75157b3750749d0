// `node --import tsx bench/lib/parser-memory.ts KIB SHAPE`: what one statement of KIB KiB costs the
// Postgres classifier (classifySql: libpg_query's parse, fingerprint, normalize, scan) — CPU time,
// and the resident pages of libpg_query's WASM memory before and after, read from /proc/self/smaps.
// One statement per process: the WASM memory keeps the pages its largest parse touched, so a second
// statement would measure only what the first did not. The figures behind the statement bound
// (protocols/postgres statement-limit.ts, README "Statement length"). Linux only.
// SHAPE: selectlist | inlist | plus | parens | strlit | stmts | values | and | case | array
import { classifySql, loadClassifier } from '@portcullis/postgres'
import { rssBreakdown } from '../../packages/gateway/test/robustness/memory.ts'

const [kib = '32', shape = 'selectlist'] = process.argv.slice(2)
const n = Number(kib) * 1024
const fill = (unit: string, head: string, tail: string) => head + unit.repeat(Math.max(0, Math.floor((n - head.length - tail.length) / unit.length))) + tail
const shapes: Record<string, () => string> = {
  selectlist: () => fill('a,', 'SELECT ', 'a FROM t'),
  inlist: () => fill('1,', 'SELECT * FROM t WHERE a IN (', '1)'),
  plus: () => fill('1+', 'SELECT ', '1'),
  parens: () => {
    const d = Math.floor((n - 8) / 2)
    return 'SELECT ' + '('.repeat(d) + '1' + ')'.repeat(d)
  },
  strlit: () => fill('x', "SELECT '", "'"),
  stmts: () => fill('SELECT 1;', '', ''),
  values: () => fill('(1,2),', 'INSERT INTO t VALUES ', '(1,2)'),
  and: () => fill('a=1 AND ', 'SELECT * FROM t WHERE ', 'a=1'),
  case: () => fill('WHEN a=1 THEN 2 ', 'SELECT CASE ', 'END'),
  array: () => fill('1,', 'SELECT ARRAY[', '1]'),
}
const make = shapes[shape]
if (!make) {
  process.stderr.write(`unknown shape ${shape}: ${Object.keys(shapes).join(' | ')}\n`)
  process.exit(2)
}
await loadClassifier()
const sql = make()
const mib = (b: number) => (b / 2 ** 20).toFixed(1)
const before = rssBreakdown(process.pid)
const cpu = process.cpuUsage()
let outcome: string
try {
  const op = classifySql(sql)
  outcome = `class ${op.class}${op.error ? ` (${op.error.slice(0, 60)})` : ''}, ${op.statements.length} statements`
} catch (err) {
  outcome = `threw ${String(err).slice(0, 80)}`
}
const used = process.cpuUsage(cpu)
const after = rssBreakdown(process.pid)
process.stdout.write(
  `${shape} ${kib} KiB (${Buffer.byteLength(sql)} bytes): ${((used.user + used.system) / 1000).toFixed(0)} ms CPU, ${outcome}; ` +
    `WASM resident ${mib(before.wasm)} -> ${mib(after.wasm)} MiB, RSS ${mib(before.total)} -> ${mib(after.total)} MiB, external ${mib(process.memoryUsage().external)} MiB\n`,
)
