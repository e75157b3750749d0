export { startGateway, type Gateway, type GatewayOptions } from './gateway.ts'
import type { Demo, DemoOptions } from './demo.ts'
export type { Demo, DemoOptions }

/** the embedded demo, loaded on first use: it brings PGlite, which a configured gateway never needs */
export async function startDemo(opts: DemoOptions = {}): Promise<Demo> {
  return (await import('./demo.ts')).startDemo(opts)
}
export { startAdmin, type AdminServer, type AdminOptions } from './admin.ts'
export { mintDevToken, devIssuerConfig, devIssuerDir, DEV_ISSUER, DEV_AUDIENCE } from './dev-tokens.ts'
export { createLogger, silentLogger, type Logger } from './log.ts'
export { parseHostPort } from './listen.ts'
export { MemoryConsoleSessionStore, type ConsoleSession, type ConsoleSessionStore, type PendingLogin } from './console/session-store.ts'
export { runPrimary, runWorker, isClusterWorker, workerCount, type PrimaryOptions, type WorkerOptions } from './cluster.ts'
