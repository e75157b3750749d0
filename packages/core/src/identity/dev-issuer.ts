// A local token issuer for the demo and tests only: an ES256 key pair and a JWKS file on disk.
// Never use it in front of real data; anyone with the directory can mint tokens.
import { randomBytes } from 'node:crypto'
import { mkdtemp, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { SignJWT, exportJWK, generateKeyPair, type JWK } from 'jose'
import type { IssuerConfig } from '../config/types.ts'

export interface MintOptions {
  sub: string
  groups?: string[]
  ttlSeconds?: number
  jti?: string
  extra?: Record<string, unknown>
}

export interface DevIssuer {
  issuer: string
  audience: string
  jwksFile: string
  privateJwk: JWK
  mint(o: MintOptions): Promise<string>
  issuerConfig(): IssuerConfig
}

export async function createDevIssuer(
  opts: { dir?: string; issuer?: string; audience?: string } = {},
): Promise<DevIssuer> {
  const issuer = opts.issuer ?? 'https://portcullis.dev.local/'
  const audience = opts.audience ?? 'portcullis'
  const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), 'portcullis-dev-issuer-')))
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true })
  const kid = 'dev-' + randomBytes(6).toString('hex')
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' }
  const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: 'ES256' }
  const jwksFile = join(dir, 'jwks.json')
  await writeFile(jwksFile, JSON.stringify({ keys: [publicJwk] }, null, 2), { mode: 0o644 })

  return {
    issuer,
    audience,
    jwksFile,
    privateJwk,
    async mint(o) {
      const nowS = Math.floor(Date.now() / 1000)
      return new SignJWT({ ...o.extra, groups: o.groups ?? [] })
        .setProtectedHeader({ alg: 'ES256', kid, typ: 'JWT' })
        .setIssuer(issuer)
        .setAudience(audience)
        .setSubject(o.sub)
        .setIssuedAt(nowS)
        .setExpirationTime(nowS + (o.ttlSeconds ?? 3600))
        .setJti(o.jti ?? randomBytes(8).toString('hex'))
        .sign(privateKey)
    },
    issuerConfig() {
      return { issuer, audience, jwksFile, algorithms: ['ES256'], groupsClaim: 'groups', clockSkew: 30_000, requireExp: true }
    },
  }
}
