// Dev tokens for the demo and tests only. Each mint makes a fresh ES256 key with core's dev issuer,
// signs one token, appends the PUBLIC key to a shared JWKS file and forgets the private key. So no
// signing key is ever left on disk, `portcullis token` and a running demo agree (core re-reads a
// JWKS file when it changes), and deleting the directory revokes every dev token at once.
import { mkdir, mkdtemp, readFile, rename, rm, writeFile, open } from 'node:fs/promises'
import { homedir } from 'node:os'
import { join } from 'node:path'
import { createDevIssuer } from '@portcullis/core'

export const DEV_ISSUER = 'https://portcullis.dev.local/'
export const DEV_AUDIENCE = 'portcullis'
/** Keys whose tokens have expired are dropped; beyond this many, the oldest go too. */
const MAX_KEYS = 256
/** Each public key carries the expiry of the one token it signed (a private JWK member). */
const EXP_MEMBER = 'x-portcullis-exp'

export function devIssuerDir(): string {
  return process.env.PORTCULLIS_DEV_ISSUER_DIR || join(homedir(), '.portcullis', 'dev-issuer')
}

export interface DevIssuerConfig {
  issuer: string
  audience: string
  jwksFile: string
  algorithms: string[]
  groupsClaim: string
  clockSkew: number
}

/** The issuer entry for config.identity.issuers; creates an empty key set when there is none. */
export async function devIssuerConfig(dir = devIssuerDir()): Promise<DevIssuerConfig> {
  const jwksFile = join(dir, 'jwks.json')
  await mkdir(dir, { recursive: true, mode: 0o700 })
  await writeFile(jwksFile, JSON.stringify({ keys: [] }), { flag: 'wx' }).catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'EEXIST') throw err
  })
  return { issuer: DEV_ISSUER, audience: DEV_AUDIENCE, jwksFile, algorithms: ['ES256'], groupsClaim: 'groups', clockSkew: 30_000 }
}

export interface MintRequest {
  sub: string
  groups?: string[]
  ttlSeconds?: number
  dir?: string
}

export async function mintDevToken(req: MintRequest): Promise<{ token: string; expiresAt: number; jwksFile: string }> {
  const dir = req.dir ?? devIssuerDir()
  const { jwksFile } = await devIssuerConfig(dir)
  const scratch = await mkdtemp(join(dir, 'mint-'))
  try {
    const issuer = await createDevIssuer({ dir: scratch, issuer: DEV_ISSUER, audience: DEV_AUDIENCE })
    const ttlSeconds = req.ttlSeconds ?? 3600
    const token = await issuer.mint({ sub: req.sub, groups: req.groups ?? [], ttlSeconds })
    const expiresAt = Date.now() + ttlSeconds * 1000
    const fresh = JSON.parse(await readFile(issuer.jwksFile, 'utf8')) as { keys: Array<Record<string, unknown>> }
    for (const k of fresh.keys) k[EXP_MEMBER] = Math.ceil(expiresAt / 1000)
    await withLock(join(dir, 'jwks.lock'), async () => {
      let keys: Array<Record<string, unknown>> = []
      try {
        keys = (JSON.parse(await readFile(jwksFile, 'utf8')) as { keys: Array<Record<string, unknown>> }).keys ?? []
      } catch {
        // a missing or corrupt set is replaced
      }
      // A minute past expiry: verifiers allow some clock skew, so a key may matter a little longer.
      const cutoff = Date.now() / 1000 - 60
      const live = keys.filter((k) => typeof k[EXP_MEMBER] !== 'number' || (k[EXP_MEMBER] as number) > cutoff)
      const next = { keys: [...fresh.keys, ...live].slice(0, MAX_KEYS) }
      const tmp = `${jwksFile}.${process.pid}.tmp`
      await writeFile(tmp, JSON.stringify(next, null, 1))
      await rename(tmp, jwksFile)
    })
    return { token, expiresAt, jwksFile }
  } finally {
    await rm(scratch, { recursive: true, force: true })
  }
}

/** A lock file (O_EXCL) so concurrent mints don't drop each other's keys; stale after 5 s. */
async function withLock<T>(file: string, fn: () => Promise<T>): Promise<T> {
  const started = Date.now()
  for (;;) {
    try {
      const h = await open(file, 'wx')
      await h.close()
      break
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      if (Date.now() - started > 5000) {
        await rm(file, { force: true })
        continue
      }
      await new Promise((r) => setTimeout(r, 20))
    }
  }
  try {
    return await fn()
  } finally {
    await rm(file, { force: true })
  }
}
