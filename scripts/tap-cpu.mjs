#!/usr/bin/env node
// `node scripts/tap-cpu.mjs [tap args...]`: runs tap as given and says, per test file, the CPU seconds
// of everything the file ran: the test process with its children (the spawned gateway, redis-server,
// psql, redis-cli) and the Postgres cluster it started (the postmaster and its exited backends, which
// pg_ctl leaves as orphans of init). On a shared machine wall time says how loaded it was; CPU seconds
// say what the files cost.
//
// How: every 250 ms, /proc/<pid>/stat of every process that carries this run's marker in its
// environment (CPU_PER_FILE_RUN, inherited by everything the files start, the postmaster included; not
// TAP_*, which env.ts takes out of the gateway's environment). A
// process tree's CPU is its root's own and reaped children's time plus each live child's tree; a test
// process is a root (the file is in its _TAPJS_PROCESSINFO_EXTERNAL_ID_), and so is an orphaned
// postmaster (the file found by its TAP_CHILD_ID). The last reading before a root exits is what it is
// counted at: up to 250 ms of its CPU can be missed.
import { spawn } from 'node:child_process'
import { readFileSync, readdirSync } from 'node:fs'

const TICK = 100 // USER_HZ (clock ticks in /proc/<pid>/stat): 100 on Linux
const run = `${process.pid}-${Date.now()}`
const started = Date.now()
const child = spawn('pnpm', ['exec', 'tap', ...process.argv.slice(2)], { stdio: 'inherit', env: { ...process.env, CPU_PER_FILE_RUN: run } })

/** file -> { roots: Map<pid, seconds> } */
const files = new Map()
/** TAP_CHILD_ID -> file */
const childIds = new Map()

function stat(pid) {
  const s = readFileSync(`/proc/${pid}/stat`, 'latin1')
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ')
  // fields 4 (ppid), 14-17 (utime, stime, cutime, cstime), counted from 1 with pid and comm first
  return { ppid: Number(f[1]), own: (Number(f[11]) + Number(f[12])) / TICK, reaped: (Number(f[13]) + Number(f[14])) / TICK }
}

function envOf(pid) {
  const env = {}
  for (const kv of readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0')) {
    const i = kv.indexOf('=')
    if (i > 0) env[kv.slice(0, i)] = kv.slice(i + 1)
  }
  return env
}

const envCache = new Map()
function sample() {
  const procs = new Map()
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    const pid = Number(name)
    try {
      let env = envCache.get(pid)
      if (env === undefined) {
        const e = envOf(pid)
        env = e.CPU_PER_FILE_RUN === run ? { file: e._TAPJS_PROCESSINFO_EXTERNAL_ID_, childId: e.TAP_CHILD_ID } : null
        envCache.set(pid, env)
      }
      if (env === null) continue
      procs.set(pid, { ...stat(pid), ...env })
    } catch {}
  }
  for (const pid of envCache.keys()) if (!procs.has(pid) && !existsPid(pid)) envCache.delete(pid)
  const kids = new Map()
  for (const [pid, p] of procs) {
    if (!kids.has(p.ppid)) kids.set(p.ppid, [])
    kids.get(p.ppid).push(pid)
  }
  const tree = (pid) => procs.get(pid).own + procs.get(pid).reaped + (kids.get(pid) ?? []).reduce((n, c) => n + tree(c), 0)
  for (const [pid, p] of procs) {
    const parent = procs.get(p.ppid)
    if (p.file && !parent?.file) {
      // a test process (its parent, tap's runner, is not a file's)
      if (p.childId) childIds.set(p.childId, p.file)
      record(p.file, pid, tree(pid))
    } else if (!parent && p.childId && childIds.has(p.childId) && !p.file) {
      // an orphan of a file: the postmaster
      record(childIds.get(p.childId), pid, tree(pid))
    }
  }
}

function existsPid(pid) {
  try {
    readFileSync(`/proc/${pid}/stat`)
    return true
  } catch {
    return false
  }
}

function record(file, pid, seconds) {
  if (!files.has(file)) files.set(file, { roots: new Map(), first: Date.now(), last: Date.now() })
  const f = files.get(file)
  f.roots.set(pid, Math.max(f.roots.get(pid) ?? 0, seconds))
  f.last = Date.now()
}

const load = () => readFileSync('/proc/loadavg', 'latin1').split(' ').slice(0, 3).join(' ')
const loadAtStart = load()
const timer = setInterval(sample, 250)
child.on('close', (code) => {
  clearInterval(timer)
  const rows = [...files].map(([file, f]) => ({ file, cpu: [...f.roots.values()].reduce((a, b) => a + b, 0), seen: (f.last - f.first) / 1000 }))
  rows.sort((a, b) => b.cpu - a.cpu)
  console.log(`\ntap-cpu: ${((Date.now() - started) / 1000).toFixed(0)} s wall; load ${loadAtStart} at the start, ${load()} at the end`)
  for (const r of rows) console.log(`tap-cpu: ${r.cpu.toFixed(1).padStart(7)} s CPU  ${r.seen.toFixed(0).padStart(5)} s seen  ${r.file}`)
  console.log(`tap-cpu: ${rows.reduce((n, r) => n + r.cpu, 0).toFixed(1).padStart(7)} s CPU in all`)
  process.exit(code ?? 1)
})
