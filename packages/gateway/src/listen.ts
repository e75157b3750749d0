// `listen` addresses are 'host:port' (IPv6 as '[::1]:port'); port 0 asks for an ephemeral port.
export interface HostPort {
  host: string
  port: number
}

export function parseHostPort(text: string): HostPort {
  const m = /^\[([^\]]+)\]:(\d+)$/.exec(text) ?? /^([^:]+):(\d+)$/.exec(text)
  if (!m) throw new Error(`listen address must be host:port, got ${JSON.stringify(text)}`)
  const port = Number(m[2])
  if (port > 65535) throw new Error(`port out of range in ${JSON.stringify(text)}`)
  return { host: m[1]!, port }
}

export function formatHostPort({ host, port }: HostPort): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
}

export function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.')
}
