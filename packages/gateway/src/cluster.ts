// `workers: N` (N > 1, or 'auto'): a node:cluster primary and N workers on one host.
//
// The primary opens no listener of its own and serves no session. It forks the workers (each runs
// startGateway on the same config: node:cluster shares every listen address, data targets and the
// admin API alike, handing connections round-robin), restarts one that dies (with backoff), fans
// SIGHUP out, drains them all on SIGTERM/SIGINT, holds the memory control store for them (the IPC
// store, core/control/ipc.ts; a Postgres or Redis store is reached by each worker itself), sums
// their /metrics, and writes their stdout and stderr out whole line by whole line, so that audit
// lines of two workers never interleave on a shared pipe.
//
// Only the first worker scans the recording spool for a previous run's leftovers, and the others
// start after it is ready: a scan running beside a live worker would take its open recordings for
// leftovers. A worker restarted after a crash does not scan (the live workers' recordings are
// open); what the crashed one left is queued at the next start of the host.
import cluster, { type Worker } from 'node:cluster'
import { availableParallelism } from 'node:os'
import type { Readable, Writable } from 'node:stream'
import { ConfigError, ControlStoreHost, IpcControlStore, loadConfig, MemoryControlStore, type Config } from '@portcullis/core'
import { SHUTDOWN_GRACE_MS, startGateway } from './gateway.ts'
import { sumMetrics } from './cluster-metrics.ts'
import type { Logger } from './log.ts'

/** env of a worker: its slot (1…N) and whether it scans the spool */
const WORKER_ENV = 'PORTCULLIS_WORKER'
const RESUME_ENV = 'PORTCULLIS_WORKER_RESUME'
/** restart backoff: doubles per death of a worker that lived less than STABLE_MS, up to MAX */
const RESTART_MIN_MS = 100
const RESTART_MAX_MS = 10_000
const STABLE_MS = 30_000
/** how long /metrics waits for the other workers' figures */
const METRICS_WAIT_MS = 2_000
/** a line of worker output longer than this is written out in pieces (the relay's buffer bound) */
const MAX_LINE = 1024 * 1024

export function workerCount(config: Pick<Config, 'workers'>): number {
  return config.workers === 'auto' ? availableParallelism() : config.workers
}

export function isClusterWorker(): boolean {
  return cluster.isWorker && process.env[WORKER_ENV] !== undefined
}

interface Slot {
  index: number
  worker?: Worker
  ready: boolean
  started: number
  failures: number
  timer?: NodeJS.Timeout
}

type Msg = { portcullis?: string; id?: number; ask?: string; text?: string; targets?: Record<string, { host: string; port: number }>; admin?: string }

export interface PrimaryOptions {
  config: Config
  workers: number
  log: Logger
  deadlineMs: number
  /** once every worker is ready at start, with the first one's listening addresses (the bench waits on it) */
  onReady?: (targets: Record<string, { host: string; port: number }>) => void
}

/** runs until SIGTERM/SIGINT; resolves with the exit code once every worker has left */
export async function runPrimary(opts: PrimaryOptions): Promise<number> {
  const { config, log, workers } = opts
  cluster.setupPrimary({ serialization: 'advanced', silent: true })
  const shared = config.controlStore.postgres !== undefined || config.controlStore.redis !== undefined
  const store = shared ? undefined : new MemoryControlStore()
  const host = store ? new ControlStoreHost(store, { log: (msg, fields) => log.warn(fields ?? {}, msg) }) : undefined
  const slots: Slot[] = Array.from({ length: workers }, (_, i) => ({ index: i + 1, ready: false, started: 0, failures: 0 }))
  let stopping = false
  let starting = true
  let allExited!: () => void
  const exited = new Promise<void>((r) => (allExited = r))
  let result!: (code: number) => void
  const finished = new Promise<number>((r) => (result = r))
  const metricsAsks = new Map<string, { parts: string[]; waiting: Set<number>; reply(text: string): void; timer: NodeJS.Timeout }>()
  const summed = (parts: string[]) =>
    sumMetrics(parts) + `# HELP portcullis_workers Workers whose figures this reply sums.\n# TYPE portcullis_workers gauge\nportcullis_workers ${parts.length}\n`
  let firstReady: ((ok: boolean) => void) | undefined
  let targets: Record<string, { host: string; port: number }> = {}

  const live = () => slots.filter((s) => s.worker && !s.worker.isDead())

  function fork(slot: Slot, resume: boolean) {
    slot.ready = false
    slot.started = Date.now()
    const w = cluster.fork({ [WORKER_ENV]: String(slot.index), [RESUME_ENV]: resume ? '1' : '0' })
    slot.worker = w
    const key = String(w.id)
    host?.attach(key, (m) => w.send(m as never))
    relayLines(w.process.stdout, process.stdout)
    relayLines(w.process.stderr, process.stderr)
    w.on('message', (m: Msg) => {
      if (host?.handle(key, m)) return
      if (m?.portcullis === 'ready') {
        slot.ready = true
        log.info({ worker: slot.index, pid: w.process.pid }, 'worker ready')
        if (firstReady) {
          targets = m.targets ?? {}
          for (const [name, a] of Object.entries(targets)) log.info({ target: name, listen: `${a.host}:${a.port}` }, 'target ready')
          if (m.admin) log.info({ url: m.admin }, 'admin API ready')
          const f = firstReady
          firstReady = undefined
          f(true)
        }
        if (starting && slots.every((s) => s.ready)) {
          starting = false
          log.info({ workers }, 'workers ready')
          opts.onReady?.(targets)
        }
      } else if (m?.portcullis === 'metrics' && typeof m.id === 'number') {
        collectMetrics(w, m.id)
      } else if (m?.portcullis === 'metrics-part' && typeof m.ask === 'string') {
        const ask = metricsAsks.get(m.ask)
        if (ask?.waiting.delete(w.id)) {
          ask.parts.push(m.text ?? '')
          if (ask.waiting.size === 0) ask.reply(summed(ask.parts))
        }
      }
    })
    w.on('exit', (code, signal) => {
      void host?.detach(key)
      for (const ask of [...metricsAsks.values()]) if (ask.waiting.delete(w.id) && ask.waiting.size === 0) ask.reply(summed(ask.parts))
      if (slot.worker === w) slot.worker = undefined
      if (stopping) {
        if (live().length === 0) allExited()
        return
      }
      if (!slot.ready && starting) {
        // a worker that cannot start (port taken, bad secret) will not start on a retry either
        log.error({ worker: slot.index, code, signal }, 'worker failed to start; stopping')
        firstReady?.(false)
        firstReady = undefined
        void stop('worker start failure', 1)
        return
      }
      slot.failures = Date.now() - slot.started > STABLE_MS ? 0 : slot.failures + 1
      const delay = Math.min(RESTART_MIN_MS * 2 ** Math.max(0, slot.failures - 1), RESTART_MAX_MS)
      log.warn({ worker: slot.index, pid: w.process.pid, code, signal, restartInMs: delay }, 'worker exited; restarting')
      slot.timer = setTimeout(() => {
        slot.timer = undefined
        if (!stopping) fork(slot, false)
      }, delay)
    })
  }

  /** /metrics on any worker: every live worker's text, summed; a worker that does not answer in time is left out */
  function collectMetrics(asker: Worker, id: number) {
    const key = `${asker.id}:${id}`
    const ready = live().filter((s) => s.ready)
    const ask = {
      parts: [] as string[],
      waiting: new Set(ready.map((s) => s.worker!.id)),
      timer: setTimeout(() => ask.reply(summed(ask.parts)), METRICS_WAIT_MS),
      reply(text: string) {
        clearTimeout(ask.timer)
        if (!metricsAsks.delete(key)) return
        if (!asker.isDead()) asker.send({ portcullis: 'metrics-reply', id, text } as never)
      },
    }
    metricsAsks.set(key, ask)
    for (const s of ready) s.worker!.send({ portcullis: 'metrics-collect', ask: key } as never)
    if (ask.waiting.size === 0) ask.reply(summed([]))
  }

  async function stop(reason: string, code = 0): Promise<void> {
    if (stopping) return
    stopping = true
    log.info({ reason, workers: live().length }, 'stopping workers')
    for (const s of slots) if (s.timer) clearTimeout(s.timer)
    // a signal, not only a message: a worker still loading has no message handler yet, and one
    // that has not started listening may as well end at once (SIGTERM's default)
    for (const s of live()) {
      s.worker!.send({ portcullis: 'stop' } as never)
      s.worker!.process.kill('SIGTERM')
    }
    if (live().length === 0) allExited()
    // a worker that hangs past its own deadline and grace is ended
    const hard = setTimeout(() => {
      for (const s of live()) {
        log.warn({ worker: s.index }, 'worker did not stop in time; killing it')
        s.worker!.process.kill('SIGKILL')
      }
    }, opts.deadlineMs + SHUTDOWN_GRACE_MS + 5_000)
    hard.unref()
    await exited
    clearTimeout(hard)
    await store?.close()
    log.info({ code }, 'every worker stopped')
    result(code)
  }

  process.on('SIGHUP', () => {
    log.info({ workers: live().length }, 'SIGHUP: reloading config in every worker')
    for (const s of live()) s.worker!.send({ portcullis: 'reload' } as never)
  })
  process.on('SIGTERM', () => void stop('SIGTERM'))
  process.on('SIGINT', () => void stop('SIGINT'))

  log.info({ workers, controlStore: shared ? (config.controlStore.postgres ? 'postgres' : 'redis') : 'memory (in the primary)' }, 'cluster primary starting workers')
  const first = new Promise<boolean>((r) => (firstReady = r))
  fork(slots[0]!, true)
  if (await first) for (const s of slots.slice(1)) fork(s, false)
  return finished
}

/** Copies a worker's output to ours in whole lines only, so that two workers' lines never mix. */
function relayLines(from: Readable | null | undefined, to: Writable) {
  if (!from) return
  let rest = ''
  from.setEncoding('utf8')
  from.on('data', (chunk: string) => {
    const text = rest + chunk
    const end = text.lastIndexOf('\n')
    if (end < 0) {
      rest = text
      if (rest.length > MAX_LINE) {
        to.write(rest)
        rest = ''
      }
      return
    }
    rest = text.slice(end + 1)
    to.write(text.slice(0, end + 1))
  })
  from.on('end', () => {
    if (rest) to.write(rest + '\n')
    rest = ''
  })
}

export interface WorkerOptions {
  configFile: string
  log: Logger
  deadlineMs: number
}

/** one worker: the gateway as a single process runs it, with the primary as its control store */
export async function runWorker(opts: WorkerOptions): Promise<number> {
  const index = Number(process.env[WORKER_ENV])
  const log = withFields(opts.log, { worker: index })
  let config: Config
  try {
    config = await loadConfig(opts.configFile)
  } catch (err) {
    if (err instanceof ConfigError) for (const i of err.issues) process.stderr.write(`${i.file}:${i.line}: ${i.path}: ${i.message}\n`)
    else log.error({ err }, 'config unreadable')
    return 1
  }
  const send = (m: unknown) => {
    if (process.connected) process.send!(m)
  }
  const channel = {
    send,
    on: (event: 'message' | 'disconnect', fn: (m?: unknown) => void) => process.on(event as 'message', fn),
    get connected() {
      return process.connected
    },
  }
  const metricsWaiting = new Map<number, (text: string) => void>()
  let nextMetrics = 1
  let gateway: Awaited<ReturnType<typeof startGateway>> | undefined
  process.on('message', (m: Msg) => {
    if (m?.portcullis === 'metrics-reply' && typeof m.id === 'number') metricsWaiting.get(m.id)?.(m.text ?? '')
    else if (m?.portcullis === 'metrics-collect') send({ portcullis: 'metrics-part', ask: m.ask, text: gateway?.core.metrics.render() ?? '' })
    else if (m?.portcullis === 'reload') gateway?.reloadFromFile().catch((err) => log.error({ err }, 'reload failed'))
    else if (m?.portcullis === 'stop') stop('primary')
  })
  // the primary fans SIGHUP out; a terminal's hangup reaching the whole group must not end a worker
  process.on('SIGHUP', () => {})
  const hostMetrics = () =>
    new Promise<string>((resolve) => {
      const id = nextMetrics++
      const timer = setTimeout(() => {
        metricsWaiting.delete(id)
        resolve(gateway?.core.metrics.render() ?? '')
      }, METRICS_WAIT_MS + 1_000)
      metricsWaiting.set(id, (text) => {
        clearTimeout(timer)
        metricsWaiting.delete(id)
        resolve(text)
      })
      send({ portcullis: 'metrics', id })
    })
  const shared = config.controlStore.postgres !== undefined || config.controlStore.redis !== undefined
  gateway = await startGateway(config, {
    configFile: opts.configFile,
    log,
    ...(shared ? {} : { controlStore: new IpcControlStore(channel) }),
    resumeSpool: process.env[RESUME_ENV] === '1',
    metrics: hostMetrics,
  })
  let stopping = false
  function stop(signal: string) {
    if (stopping) return
    stopping = true
    log.info({ signal }, 'worker draining')
    gateway!
      .close(opts.deadlineMs)
      .then(() => process.exit(0))
      .catch((err) => {
        log.error({ err }, 'worker shutdown failed')
        process.exit(1)
      })
  }
  // Ctrl-C reaches every process of the group: a worker drains as on the primary's word
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
  send({ portcullis: 'ready', targets: gateway.targets, admin: gateway.admin?.url })
  return 0
}

function withFields(log: Logger, fields: Record<string, unknown>): Logger {
  const wrap = (fn: Logger['info']) => (obj: object, msg?: string) => fn({ ...fields, ...obj }, msg)
  return { debug: wrap(log.debug), info: wrap(log.info), warn: wrap(log.warn), error: wrap(log.error) }
}
