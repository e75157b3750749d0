// Codecs are loaded lazily by protocol name so that a missing or broken codec package only affects
// the targets that use it (and the CLI's `explain` for that protocol), never the whole process.
// Each import is written out (not built from the name) so that the build (scripts/build.mjs) splits
// every codec into a chunk of its own: a config without a postgres target never loads libpg_query.
import type { Protocol, ProtocolCodec } from '@portcullis/core'

const PACKAGES: Record<Protocol, { pkg: string; name: string; load: () => Promise<unknown> }> = {
  postgres: { pkg: '@portcullis/postgres', name: 'postgresCodec', load: () => import('@portcullis/postgres') },
  redis: { pkg: '@portcullis/redis', name: 'redisCodec', load: () => import('@portcullis/redis') },
  http: { pkg: '@portcullis/http', name: 'httpCodec', load: () => import('@portcullis/http') },
  mcp: { pkg: '@portcullis/mcp', name: 'mcpCodec', load: () => import('@portcullis/mcp') },
}

/** the protocols a sniffing listener tries; MCP speaks HTTP, so only a target of its own serves it */
export const PROTOCOLS: readonly Protocol[] = ['postgres', 'redis', 'http']

const cache = new Map<Protocol, Promise<ProtocolCodec>>()

/** Imports a codec's package and returns its export; rejects with a message that names both. */
export function loadCodec(protocol: Protocol): Promise<ProtocolCodec> {
  let p = cache.get(protocol)
  if (!p) {
    p = importExport<ProtocolCodec>(protocol, PACKAGES[protocol].name).then((codec) => {
      if (typeof codec.serve !== 'function' || typeof codec.sniff !== 'function') {
        throw new Error(`${PACKAGES[protocol].pkg} exports ${PACKAGES[protocol].name} but it is not a codec`)
      }
      return codec
    })
    // A failed import is not cached: the package may land while a long-running process waits.
    p.catch(() => cache.delete(protocol))
    cache.set(protocol, p)
  }
  return p
}

/** One named export of a protocol package, or an error that says which one is missing. */
export async function importExport<T>(protocol: Protocol, name: string): Promise<T> {
  const { pkg, load } = PACKAGES[protocol]
  let mod: Record<string, unknown>
  try {
    mod = (await load()) as Record<string, unknown>
  } catch (err) {
    throw new Error(`cannot load ${pkg}: ${(err as Error).message}`)
  }
  const value = mod[name]
  if (value === undefined) throw new Error(`${pkg} does not export ${name}: is the package installed and current?`)
  return value as T
}
