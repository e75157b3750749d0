// The gateway's own operational log (not the audit trail, which core writes). Pino-shaped so a pino
// logger can be passed in; the default writes one JSON line per event to stderr, leaving stdout to
// audit events. Nothing secret is ever passed here: callers log codes and reasons, never tokens.
export interface Logger {
  debug(obj: object, msg?: string): void
  info(obj: object, msg?: string): void
  warn(obj: object, msg?: string): void
  error(obj: object, msg?: string): void
}

const LEVELS = { debug: 20, info: 30, warn: 40, error: 50 } as const
export type LogLevel = keyof typeof LEVELS

export function createLogger(stream: NodeJS.WritableStream = process.stderr, level: LogLevel = 'info'): Logger {
  const min = LEVELS[level]
  const write = (lvl: LogLevel) => (obj: object, msg?: string) => {
    if (LEVELS[lvl] < min) return
    const line: Record<string, unknown> = { level: lvl, time: new Date().toISOString(), ...errorFields(obj) }
    if (msg !== undefined) line.msg = msg
    stream.write(JSON.stringify(line) + '\n')
  }
  return { debug: write('debug'), info: write('info'), warn: write('warn'), error: write('error') }
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} }

/** Errors don't survive JSON.stringify; keep message and code (never the stack's locals). */
function errorFields(obj: object): object {
  const err = (obj as { err?: unknown }).err
  if (!(err instanceof Error)) return obj
  const code = (err as { code?: unknown }).code
  return { ...obj, err: { message: err.message, ...(code !== undefined ? { code } : {}) } }
}
