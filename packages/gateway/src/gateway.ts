// The gateway process: one listener per target, a session per connection, limits, hot reload and
// graceful shutdown. Protocol work belongs to the codecs; policy, identity and recording to core.
import { createServer, type Server, type Socket } from 'node:net'
import { createServer as createTlsServer } from 'node:tls'
import { readFileSync, watch, type FSWatcher } from 'node:fs'
import { once } from 'node:events'
import { basename, dirname, resolve } from 'node:path'
import { createCore, loadConfig, type Config, type Core, type CoreOptions, type ProtocolCodec, type Session, type TargetConfig } from '@portcullis/core'
import { parseHostPort, type HostPort } from './listen.ts'
import { loadCodec, PROTOCOLS } from './codecs.ts'
import { sniffCodec } from './sniff.ts'
import { gatewayPeers } from './peers.ts'
import { startAdmin, type AdminServer } from './admin.ts'
import type { ConsoleSessionStore } from './console/session-store.ts'
import { startSlackApprovals, type SlackApprovals } from './slack/index.ts'
import { createLogger, type Logger } from './log.ts'

export interface GatewayOptions {
  /** where core writes audit events (default: config.audit.destination) */
  auditStream?: NodeJS.WritableStream
  /** the file the config came from: watched, and re-read on change */
  configFile?: string
  log?: Logger
  /** codecs to use instead of the protocol packages (tests, embedding) */
  codecs?: ProtocolCodec[]
  /** debounce for config file changes, ms (default 200) */
  watchDebounceMs?: number
  /** where web console sign-ins live (default: this process's memory; see console/session-store.ts) */
  consoleSessions?: ConsoleSessionStore
  /** the control store when the config names no shared one (a cluster worker's IPC store) */
  controlStore?: CoreOptions['controlStore']
  /** see CoreOptions.resumeSpool (a cluster worker: only the first scans the spool) */
  resumeSpool?: boolean
  /** the admin API's /metrics text (a cluster worker: the whole host's) */
  metrics?: () => string | Promise<string>
}

export interface Gateway {
  core: Core
  /** actual listening address per target name (ephemeral ports resolved) */
  targets: Record<string, HostPort>
  admin?: { url: string }
  /** applies a new config: core gets the new generation; listeners follow added/removed/moved targets */
  reload(config: Config): Promise<void>
  /** re-reads opts.configFile; a bad file is logged and the old config kept (returns false) */
  reloadFromFile(): Promise<boolean>
  /** stop accepting, let sessions finish until the deadline, abort the rest, seal recordings */
  close(deadlineMs?: number): Promise<void>
}

interface Listener {
  name: string
  listen: string
  /** options that need a new server when they change */
  key: string
  server: Server
  address: HostPort
  connections: Set<Socket>
}

interface LiveSession {
  session: Session
  socket: Socket
}

/** After a session's signal aborts (kill, revocation, shutdown) the codec gets this long to say so. */
const ABORT_GRACE_MS = 1000
/** A codec that doesn't settle after its socket closed still gets its session closed. */
const CLOSE_GRACE_MS = 5000
/** what shutdown may take past its drain deadline before the core closes (sessions aborted, then closed) */
export const SHUTDOWN_GRACE_MS = ABORT_GRACE_MS + CLOSE_GRACE_MS

export async function startGateway(config: Config, opts: GatewayOptions = {}): Promise<Gateway> {
  const log = opts.log ?? createLogger()
  const core = await createCore(config, {
    ...(opts.auditStream ? { auditStream: opts.auditStream } : {}),
    ...(opts.controlStore ? { controlStore: opts.controlStore } : {}),
    ...(await controlStoreFor(config)),
    registryMs: config.controlStore.heartbeatMs,
    ...(opts.resumeSpool !== undefined ? { resumeSpool: opts.resumeSpool } : {}),
  })
  const listeners = new Map<string, Listener>()
  const live = new Map<string, LiveSession>()
  const targets: Record<string, HostPort> = {}
  let current = config
  let closing = false
  let admin: AdminServer | undefined
  let slack: SlackApprovals | undefined
  const peers = gatewayPeers(core, () => current, (name) => targets[name])

  const codecFor = async (protocol: TargetConfig['protocol']): Promise<ProtocolCodec> => {
    const given = opts.codecs?.find((c) => c.protocol === protocol)
    return given ?? loadCodec(protocol)
  }
  const sniffing = (t: TargetConfig) => (t.protocol as string) === 'auto' || t.options.sniff === true
  let sniffable: Promise<ProtocolCodec[]> | undefined
  const allCodecs = (): Promise<ProtocolCodec[]> =>
    (sniffable ??= (async () => {
      const found: ProtocolCodec[] = []
      for (const p of PROTOCOLS) {
        try {
          found.push(await codecFor(p))
        } catch (err) {
          log.warn({ protocol: p, err }, 'codec unavailable for sniffing')
        }
      }
      return found
    })())

  async function handle(listener: Listener, socket: Socket): Promise<void> {
    // request/response protocols: Nagle would hold a small reply until the client's delayed ACK
    socket.setNoDelay(true)
    socket.on('error', (err) => log.debug({ target: listener.name, err }, 'client socket error'))
    const target = current.targets.find((t) => t.name === listener.name)
    if (!target || closing) return void socket.destroy()
    const { limits } = target
    if (listener.connections.size >= limits.maxConnections) {
      // Closed before any byte is read: the codec isn't involved yet, so no protocol error to send.
      log.warn({ target: target.name, limit: limits.maxConnections }, 'connection refused: maxConnections reached')
      return void socket.destroy()
    }
    listener.connections.add(socket)
    socket.once('close', () => listener.connections.delete(socket))
    if (limits.idleTimeoutMs > 0) {
      socket.setTimeout(limits.idleTimeoutMs, () => {
        log.info({ target: target.name }, 'idle timeout')
        socket.destroy()
      })
    }

    const remote = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? 0}`
    let session: ReturnType<Core['openSession']>
    try {
      session = core.openSession(target, remote)
    } catch (err) {
      // core refuses new sessions while it shuts down
      log.info({ target: target.name, err }, 'connection refused: no session')
      return void socket.destroy()
    }
    live.set(session.id, { session, socket })
    if (target.protocol === 'mcp') session.peers = peers
    // The handshake timer ends at the login: a logged-in session that sits idle holds no timer of its
    // own (only its socket's entry in Node's shared idle-timeout list) and nothing fires for it later.
    // Left to run, 1,000 logins armed 1,000 timers that all fired ~5 s later, in one burst of the
    // event loop while the active clients waited (issue 11, idle connections).
    let handshake =
      limits.handshakeTimeoutMs > 0
        ? setTimeout(() => {
            handshake = undefined
            if (session.principal === undefined) {
              log.info({ target: target.name, session: session.id }, 'handshake timeout')
              socket.destroy()
            }
          }, limits.handshakeTimeoutMs)
        : undefined
    if (handshake) {
      session.onAuthenticated = () => {
        clearTimeout(handshake)
        handshake = undefined
      }
    }
    const onAbort = () => {
      setTimeout(() => socket.destroy(), ABORT_GRACE_MS).unref()
    }
    session.signal.addEventListener('abort', onAbort, { once: true })

    let settled = false
    let closeGrace: NodeJS.Timeout | undefined
    const finish = async () => {
      if (handshake) clearTimeout(handshake)
      handshake = undefined
      // a codec that finished needs no watch: the grace timer would only hold the session 5 s more
      if (closeGrace) clearTimeout(closeGrace)
      closeGrace = undefined
      session.signal.removeEventListener('abort', onAbort)
      live.delete(session.id)
      socket.destroy()
      try {
        await session.close()
      } catch (err) {
        log.error({ target: target.name, session: session.id, err }, 'session close failed')
      }
    }
    socket.once('close', () => {
      if (settled) return
      closeGrace = setTimeout(() => {
        closeGrace = undefined
        if (!settled) {
          settled = true
          log.warn({ target: target.name, session: session.id }, 'codec did not finish after the client left')
          void finish()
        }
      }, CLOSE_GRACE_MS).unref()
    })

    try {
      let codec: ProtocolCodec | undefined
      if (sniffing(target)) {
        codec = await sniffCodec(socket, await allCodecs())
        if (!codec) log.info({ target: target.name, session: session.id }, 'no codec recognised the first bytes')
      } else {
        codec = await codecFor(target.protocol)
      }
      if (codec) await codec.serve(socket, session)
    } catch (err) {
      log.error({ target: target.name, session: session.id, err }, 'session failed')
    } finally {
      if (!settled) {
        settled = true
        await finish()
      }
    }
  }

  function listenerKey(t: TargetConfig): string {
    const tls = t.tls && t.protocol !== 'postgres' ? `${t.tls.cert}|${t.tls.key}` : ''
    return `${t.listen}|${t.protocol}|${tls}`
  }

  async function openListener(t: TargetConfig): Promise<Listener> {
    const { host, port } = parseHostPort(t.listen)
    // Load the codec before accepting: a first client must not spend its handshake timeout waiting
    // for a package (and its parser) to load, and a missing codec is a start-up error, not a
    // failure on every connection.
    if (sniffing(t)) {
      if ((await allCodecs()).length === 0) throw new Error(`target ${t.name}: no protocol codec could be loaded`)
    } else {
      await codecFor(t.protocol)
    }
    // Postgres negotiates TLS inside its protocol (SSLRequest), so its codec owns it; the other
    // protocols speak TLS from the first byte, so the listener terminates it.
    const tls = t.tls !== undefined && t.protocol !== 'postgres' && !sniffing(t)
    // Redis clients may half-close after their last command (redis-cli reading a pipe) and still
    // expect every reply, as Redis gives them: the Redis codec ends the socket itself once they are
    // written. Without this Node ends the socket at the client's FIN and the replies are lost.
    const allowHalfOpen = t.protocol === 'redis' && !sniffing(t)
    const server =
      tls && t.tls
        ? createTlsServer({ cert: readFileSync(t.tls.cert), key: readFileSync(t.tls.key), allowHalfOpen })
        : createServer({ allowHalfOpen })
    const listener: Listener = {
      name: t.name,
      listen: t.listen,
      key: listenerKey(t),
      server,
      address: { host, port },
      connections: new Set(),
    }
    server.on(tls ? 'secureConnection' : 'connection', (s: Socket) => {
      handle(listener, s).catch((err) => log.error({ target: t.name, err }, 'connection handler failed'))
    })
    server.on('error', (err) => log.error({ target: t.name, err }, 'listener error'))
    server.listen(port, host)
    await Promise.race([once(server, 'listening'), once(server, 'error').then(([e]) => Promise.reject(e))])
    const addr = server.address()
    if (addr && typeof addr === 'object') listener.address = { host, port: addr.port }
    log.info({ target: t.name, protocol: t.protocol, listen: `${host}:${listener.address.port}` }, 'listening')
    return listener
  }

  /** Stops accepting at once; the promise settles when its last connection has ended. */
  function closeListener(l: Listener): Promise<void> {
    return new Promise((resolve) => l.server.close(() => resolve()))
  }

  async function syncListeners(config: Config): Promise<void> {
    const wanted = new Map(config.targets.map((t) => [t.name, t]))
    for (const [name, l] of listeners) {
      const t = wanted.get(name)
      if (!t || listenerKey(t) !== l.key) {
        listeners.delete(name)
        delete targets[name]
        // Live sessions on a removed listener keep running; only new connections stop.
        void closeListener(l)
        log.info({ target: name }, 'listener closed')
      }
    }
    const failures: Error[] = []
    for (const t of config.targets) {
      if (listeners.has(t.name)) continue
      try {
        const l = await openListener(t)
        listeners.set(t.name, l)
        targets[t.name] = l.address
      } catch (err) {
        // One target that cannot listen (port taken, codec missing) doesn't keep the others down.
        log.error({ target: t.name, err }, 'target not listening')
        failures.push(err as Error)
      }
    }
    if (failures.length > 0) throw failures[0]
  }

  try {
    await syncListeners(config)
    if (config.admin) {
      // Slack's buttons call the admin listener; its messages follow the requests from the start
      if (config.approvals.slack) slack = startSlackApprovals({ core, config: config.approvals.slack, log })
      admin = await startAdmin({
        core,
        listen: config.admin.listen,
        admin: config.admin,
        log,
        ...(opts.consoleSessions ? { consoleSessions: opts.consoleSessions } : {}),
        ...(opts.metrics ? { metrics: opts.metrics } : {}),
        ...(slack ? { slack } : {}),
      })
    }
  } catch (err) {
    for (const l of listeners.values()) await closeListener(l)
    await core.close()
    throw err
  }

  async function applyReload(next: Config): Promise<void> {
    core.reload(next)
    if (JSON.stringify(next.controlStore) !== JSON.stringify(current.controlStore)) {
      log.warn({ controlStore: next.controlStore.postgres ? 'postgres' : next.controlStore.redis ? 'redis' : 'memory' }, 'controlStore changes take effect after a restart')
    }
    if (next.admin?.listen !== current.admin?.listen) {
      log.warn({ admin: next.admin?.listen ?? null }, 'admin listener changes take effect after a restart')
    }
    current = next
    try {
      await syncListeners(next)
    } catch (err) {
      log.error({ err }, 'reload: listeners not updated')
    }
    log.info({ targets: next.targets.map((t) => t.name) }, 'config reloaded')
  }

  let reloading: Promise<void> = Promise.resolve()
  let closed: Promise<void> | undefined
  let watcher: FSWatcher | undefined
  let debounce: NodeJS.Timeout | undefined
  const gateway: Gateway = {
    core,
    targets,
    admin: admin ? { url: admin.url } : undefined,
    reload(next: Config) {
      // Serialized: a file change and a SIGHUP arriving together must not open a listener twice.
      const run = reloading.then(() => applyReload(next))
      reloading = run.catch(() => {})
      return run
    },
    async reloadFromFile() {
      if (!opts.configFile) return false
      let next: Config
      try {
        next = await loadConfig(opts.configFile)
      } catch (err) {
        const issues = (err as { issues?: unknown }).issues
        log.error({ file: opts.configFile, issues, err }, 'config reload rejected; keeping the running config')
        return false
      }
      await gateway.reload(next)
      return true
    },
    close(deadlineMs = 10_000) {
      // A second call (SIGTERM after SIGINT, a test teardown) waits for the same shutdown.
      closed ??= shutdown(deadlineMs)
      return closed
    },
  }

  async function shutdown(deadlineMs: number): Promise<void> {
    closing = true
    watcher?.close()
    if (debounce) clearTimeout(debounce)
    const stopped = Promise.all([...listeners.values()].map(closeListener))
    const drained = waitUntil(() => live.size === 0, deadlineMs)
    if (!(await drained)) {
      log.warn({ sessions: live.size }, 'shutdown deadline passed; aborting sessions')
      for (const id of [...live.keys()]) core.kill(id, 'gateway shutting down')
      await waitUntil(() => live.size === 0, ABORT_GRACE_MS + CLOSE_GRACE_MS)
    }
    for (const l of listeners.values()) for (const s of l.connections) s.destroy()
    await stopped
    slack?.close()
    await admin?.close()
    await core.close()
  }

  if (opts.configFile) {
    try {
      // Watch the directory: editors replace files by rename, which ends a watch on the file itself.
      const file = resolve(opts.configFile)
      watcher = watch(dirname(file), (_event, name) => {
        if (name !== null && name !== basename(file)) return
        if (debounce) clearTimeout(debounce)
        debounce = setTimeout(() => void gateway.reloadFromFile(), opts.watchDebounceMs ?? 200)
      })
      watcher.on('error', (err) => log.warn({ err }, 'config watch failed; reload with SIGHUP'))
    } catch (err) {
      log.warn({ err }, 'config watch failed; reload with SIGHUP')
    }
  }
  return gateway
}

/** The shared control store the config names, loaded only then (it brings a driver and sockets). */
async function controlStoreFor(config: Config): Promise<Pick<CoreOptions, 'controlStore'>> {
  const { postgres, redis, leaseMs, heartbeatMs, pollMs } = config.controlStore
  // reconnect no slower than a heartbeat: an instance back from an outage renews its lease in time
  const backoff = { minMs: Math.min(100, heartbeatMs), maxMs: Math.max(heartbeatMs, 200) }
  if (redis) {
    const { RedisControlStore } = await import('@portcullis/store')
    return {
      controlStore: ({ secrets, log }) => {
        const password = redis.password
        return new RedisControlStore({
          host: redis.host,
          port: redis.port,
          ...(redis.user ? { username: redis.user } : {}),
          ...(password ? { password: () => secrets.get(password) } : {}),
          ...(redis.db !== undefined ? { db: redis.db } : {}),
          ...(redis.tls ? { tls: redis.tls } : {}),
          prefix: redis.prefix,
          leaseMs,
          heartbeatMs,
          pollMs,
          backoff,
          log,
        })
      },
    }
  }
  if (!postgres) return {}
  const { PostgresControlStore } = await import('@portcullis/store')
  return {
    controlStore: ({ secrets, log }) => {
      const password = postgres.password
      return new PostgresControlStore({
        host: postgres.host,
        port: postgres.port,
        database: postgres.database,
        user: postgres.user,
        ...(password ? { password: () => secrets.get(password) } : {}),
        ...(postgres.tls ? { tls: postgres.tls } : {}),
        schema: postgres.schema,
        leaseMs,
        heartbeatMs,
        pollMs,
        backoff,
        log,
      })
    },
  }
}

async function waitUntil(cond: () => boolean, ms: number): Promise<boolean> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() >= end) return false
    await new Promise((r) => setTimeout(r, 25))
  }
  return true
}
