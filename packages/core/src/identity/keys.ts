// Key sets per issuer. URLs go through jose's remote set (cached; an unknown kid triggers a refetch,
// limited by its cooldown). Files are re-read when they change, so rotating keys needs no restart.
import { stat, readFile } from 'node:fs/promises'
import { createLocalJWKSet, createRemoteJWKSet, type JSONWebKeySet, type JWTVerifyGetKey } from 'jose'

export interface KeySource {
  getKey: JWTVerifyGetKey
  /** forces a re-read before the next lookup (file sets); remote sets refresh themselves */
  refresh(): Promise<boolean>
}

const remoteSets = new Map<string, JWTVerifyGetKey>()

/** cooldownMs: after a fetch, unknown kids do not trigger another one for this long (rate limit) */
export function remoteKeySource(url: string, opts: { cooldownMs?: number; timeoutMs?: number } = {}): KeySource {
  const cooldownDuration = opts.cooldownMs ?? 30_000
  const timeoutDuration = opts.timeoutMs ?? 5_000
  const key = `${cooldownDuration} ${timeoutDuration} ${url}`
  let getKey = remoteSets.get(key)
  if (!getKey) {
    getKey = createRemoteJWKSet(new URL(url), { cooldownDuration, cacheMaxAge: 600_000, timeoutDuration })
    remoteSets.set(key, getKey)
  }
  return { getKey, refresh: async () => false }
}

export function fileKeySource(path: string, opts: { recheckMs?: number; now?: () => number } = {}): KeySource {
  const recheckMs = opts.recheckMs ?? 1000
  const now = opts.now ?? Date.now
  let local: JWTVerifyGetKey | undefined
  let mtimeMs = -1
  let size = -1
  let checkedAt = -Infinity

  async function load(force: boolean): Promise<boolean> {
    const t = now()
    if (!force && local && t - checkedAt < recheckMs) return false
    checkedAt = t
    const st = await stat(path)
    if (local && st.mtimeMs === mtimeMs && st.size === size) return false
    const jwks = JSON.parse(await readFile(path, 'utf8')) as JSONWebKeySet
    local = createLocalJWKSet(jwks)
    mtimeMs = st.mtimeMs
    size = st.size
    return true
  }

  const getKey: JWTVerifyGetKey = async (header, token) => {
    await load(false)
    return local!(header, token)
  }
  return { getKey, refresh: () => load(true) }
}
