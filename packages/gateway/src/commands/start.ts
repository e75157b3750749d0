// `portcullis start [--config FILE]`: the gateway in the foreground. SIGHUP re-reads the config
// (a bad file is logged and the running config kept); SIGTERM/SIGINT drain sessions up to the
// shutdown deadline, seal recordings and exit 0. Without --config: the embedded demo.
// With `workers` above 1 this process is the node:cluster primary and the gateway runs in its
// workers (cluster.ts); the workers run this same command, and take the worker branch below.
import { parseArgs } from 'node:util'
import { ConfigError, loadConfig } from '@portcullis/core'
import { startGateway } from '../gateway.ts'
import { isClusterWorker, runPrimary, runWorker, workerCount } from '../cluster.ts'
import { createLogger, type LogLevel } from '../log.ts'

/** --shutdown-deadline: how long SIGTERM lets sessions finish before aborting them */
export const DEFAULT_SHUTDOWN_DEADLINE_MS = 10_000

export async function run(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: {
      config: { type: 'string' },
      'log-level': { type: 'string', default: 'info' },
      'shutdown-deadline': { type: 'string', default: String(DEFAULT_SHUTDOWN_DEADLINE_MS) },
    },
  })
  const log = createLogger(process.stderr, values['log-level'] as LogLevel)
  const deadline = Number(values['shutdown-deadline'])
  // A codec bug in an event handler must not take every other session down with it.
  process.on('uncaughtException', (err) => log.error({ err }, 'uncaught exception'))
  process.on('unhandledRejection', (err) => log.error({ err: err instanceof Error ? err : new Error(String(err)) }, 'unhandled rejection'))

  if (values.config && isClusterWorker()) {
    // exits from its signal handlers, or from the primary's 'stop'; a start failure exits here
    runWorker({ configFile: values.config, log, deadlineMs: deadline }).then(
      (code) => {
        if (code !== 0) process.exit(code)
      },
      (err) => {
        log.error({ err }, 'worker failed to start')
        process.exit(1)
      },
    )
    return 0
  }

  let close: () => Promise<void>
  let reload: () => Promise<unknown> = async () => {}
  if (values.config) {
    let config
    try {
      config = await loadConfig(values.config)
    } catch (err) {
      if (err instanceof ConfigError) {
        for (const i of err.issues) process.stderr.write(`${i.file}:${i.line}: ${i.path}: ${i.message}\n`)
        return 1
      }
      throw err
    }
    const workers = workerCount(config)
    if (workers > 1) {
      runPrimary({ config, workers, log, deadlineMs: deadline }).then(
        (code) => process.exit(code),
        (err) => {
          log.error({ err }, 'cluster primary failed')
          process.exit(1)
        },
      )
      return 0
    }
    const gateway = await startGateway(config, { configFile: values.config, log })
    for (const [name, a] of Object.entries(gateway.targets)) log.info({ target: name, listen: `${a.host}:${a.port}` }, 'target ready')
    close = () => gateway.close(deadline)
    reload = () => gateway.reloadFromFile()
  } else {
    // loaded only here: the demo brings PGlite, which a configured gateway never needs
    const { startDemo } = await import('../demo.ts')
    const demo = await startDemo({ log: true })
    close = async () => {
      await demo.close()
      process.stderr.write(`Recordings and audit log kept in ${demo.dir}\n`)
    }
    reload = () => demo.gateway.reloadFromFile()
  }

  process.on('SIGHUP', () => {
    log.info({}, 'SIGHUP: reloading config')
    reload().catch((err) => log.error({ err }, 'reload failed'))
  })
  let stopping = false
  const stop = (signal: string) => {
    if (stopping) return
    stopping = true
    log.info({ signal }, 'shutting down')
    close()
      .then(() => process.exit(0))
      .catch((err) => {
        log.error({ err }, 'shutdown failed')
        process.exit(1)
      })
  }
  process.on('SIGTERM', () => stop('SIGTERM'))
  process.on('SIGINT', () => stop('SIGINT'))
  return 0
}
