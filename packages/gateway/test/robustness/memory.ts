// Where a process's resident memory is, read from /proc/<pid>/smaps: what an RSS figure alone cannot
// say. Linux only (the robustness suite's checks are /proc-based throughout).
//
// The kinds, by how the mappings look:
// - wasm: V8 reserves 8 GiB of address space for a 32-bit WebAssembly memory (the memory plus its
//   guard region), anonymous, contiguous; the part the module may use is read-write, the rest
//   PROT_NONE. Its resident pages are libpg_query's linear memory (the only WASM module the gateway
//   loads) that some parse has touched: emscripten's malloc never gives pages back to the OS.
// - malloc: glibc's arenas (each thread's, a 64 MiB reservation aligned to 64 MiB) and the brk heap
//   ([heap]): native allocations (OpenSSL, libuv, Buffers' backing stores, zlib).
// - files: the node binary and shared libraries, mapped from files.
// - other: every other anonymous mapping, which is mostly V8's own heap (the JS heap's pages, code
//   space) and thread stacks.
import { readFileSync } from 'node:fs'

export interface RssBreakdown {
  total: number
  wasm: number
  malloc: number
  files: number
  other: number
}

const GiB = 2 ** 30
const WASM_RESERVATION = 8 * GiB
const ARENA = 64 * 2 ** 20

interface Mapping {
  start: number
  end: number
  perms: string
  path: string
  rss: number
}

function mappings(pid: number): Mapping[] {
  const out: Mapping[] = []
  let cur: Mapping | undefined
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'latin1').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line)
    if (m) {
      // addresses fit a double exactly (user space is below 2^47)
      out.push((cur = { start: parseInt(m[1]!, 16), end: parseInt(m[2]!, 16), perms: m[3]!, path: m[4]!, rss: 0 }))
    } else if (cur && line.startsWith('Rss:')) cur.rss = Number(/(\d+)/.exec(line)![1]) * 1024
  }
  return out
}

export function rssBreakdown(pid: number): RssBreakdown {
  const maps = mappings(pid)
  const b: RssBreakdown = { total: 0, wasm: 0, malloc: 0, files: 0, other: 0 }
  for (let i = 0; i < maps.length; ) {
    const m = maps[i]!
    b.total += m.rss
    if (m.path !== '' && m.path !== '[heap]' && !m.path.startsWith('[anon')) {
      b[m.path.startsWith('/') ? 'files' : 'other'] += m.rss
      i++
      continue
    }
    if (m.path === '[heap]') {
      b.malloc += m.rss
      i++
      continue
    }
    // the WASM reservation: its read-write part (one mapping; growing the memory extends it) right
    // before its PROT_NONE rest, the two 8 GiB together. The kernel merges the read-write part with
    // an adjacent read-write mapping before it (then it starts earlier, and that neighbour's pages
    // count as the parser's: an overcount, never an undercount)
    const next = maps[i + 1]
    if (m.perms.startsWith('rw') && next && next.start === m.end && next.path === '' && next.perms.startsWith('---') && next.end - WASM_RESERVATION >= m.start && next.end - WASM_RESERVATION < m.end) {
      b.wasm += m.rss
      i++
      continue
    }
    // a malloc arena: 64 MiB-aligned, its used part read-write and the rest PROT_NONE
    let j = i + 1
    if (m.start % ARENA === 0) while (j < maps.length && maps[j]!.start === maps[j - 1]!.end && maps[j]!.path === '' && maps[j]!.end - m.start <= ARENA) j++
    const run = maps.slice(i, j)
    const rss = run.reduce((n, r) => n + r.rss, 0)
    b.total += rss - m.rss
    if (run[run.length - 1]!.end - m.start === ARENA && m.start % ARENA === 0) b.malloc += rss
    else b.other += rss
    i = j
  }
  return b
}

export const mib = (n: number): string => `${(n / 2 ** 20).toFixed(0)}`

export function formatBreakdown(b: RssBreakdown): string {
  return `RSS ${mib(b.total)} MiB = WASM ${mib(b.wasm)} + malloc ${mib(b.malloc)} + files ${mib(b.files)} + V8 and other ${mib(b.other)}`
}

/**
 * CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat (clock ticks of
 * 1/100 s); with `children`, also its children that have exited and were waited for (Postgres's
 * backends, counted in the postmaster once they end; psql and redis-cli runs of the test process)
 */
export function cpuSeconds(pid: number | 'self', children = false): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'latin1')
  // the fields after the command name, which is in parentheses and may hold spaces
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(f[11]) + Number(f[12]) + (children ? Number(f[13]) + Number(f[14]) : 0)) / 100
}
