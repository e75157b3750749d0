// Token → Principal. Each rejection has its own reason so an operator can tell an expired token from
// a misconfigured audience; reasons never include the token itself.
import { decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose'
import { PortcullisError } from '../errors.ts'
import type { Principal } from '../types.ts'
import type { IdentityConfig, IssuerConfig } from '../config/types.ts'
import type { SecretStore } from '../secrets/store.ts'
import { fileKeySource, remoteKeySource, type KeySource } from './keys.ts'
import { Revocations } from './revocations.ts'
import { attachClaims } from './templates.ts'

export interface Identity {
  verify(token: string): Promise<Principal>
  readonly revocations: Revocations
  update(config: IdentityConfig): void
}

export const MAX_TOKEN_LENGTH = 16 * 1024

function refuse(reason: string, why: string): PortcullisError {
  return new PortcullisError('AUTH_FAILED', why, { reason })
}

/** Reads a dotted claim path (`realm_access.roles`); a string becomes a one-element list. */
export function claimGroups(payload: JWTPayload, path: string): string[] {
  let v: unknown = payload
  for (const seg of path.split('.')) {
    if (v === null || typeof v !== 'object') return []
    v = (v as Record<string, unknown>)[seg]
  }
  if (typeof v === 'string') return v.split(/[\s,]+/).filter(Boolean)
  if (Array.isArray(v)) return v.filter((g): g is string => typeof g === 'string')
  return []
}

interface IssuerState {
  config: IssuerConfig
  keys?: KeySource
}

export function createIdentity(
  config: IdentityConfig,
  opts: { secrets?: SecretStore; now?: () => number; jwksCooldownMs?: number } = {},
): Identity {
  const now = opts.now ?? Date.now
  const revocations = new Revocations(config.revocations)
  let issuers = new Map<string, IssuerState>()
  const fileSources = new Map<string, KeySource>()

  function build(cfg: IdentityConfig) {
    const next = new Map<string, IssuerState>()
    for (const ic of cfg.issuers) {
      let keys: KeySource | undefined
      if (ic.jwksFile) {
        keys = fileSources.get(ic.jwksFile)
        if (!keys) {
          keys = fileKeySource(ic.jwksFile, { now })
          fileSources.set(ic.jwksFile, keys)
        }
      } else if (ic.jwks)
        keys = remoteKeySource(ic.jwks, {
          ...(opts.jwksCooldownMs !== undefined ? { cooldownMs: opts.jwksCooldownMs } : {}),
          ...(ic.jwksTimeout !== undefined ? { timeoutMs: ic.jwksTimeout } : {}),
        })
      next.set(ic.issuer, { config: ic, keys })
    }
    issuers = next
  }
  build(config)

  async function keyFor(state: IssuerState): Promise<JWTVerifyGetKey | Uint8Array> {
    if (state.config.secret) {
      if (!opts.secrets) throw refuse('misconfigured', 'issuer secret unavailable')
      return new TextEncoder().encode(await opts.secrets.get(state.config.secret))
    }
    return state.keys!.getKey
  }

  async function verifyWith(state: IssuerState, token: string): Promise<JWTPayload> {
    const ic = state.config
    // An issuer without a shared secret never accepts HS*: a public key used as an HMAC secret is
    // the classic algorithm-confusion attack.
    const algorithms = ic.secret ? ic.algorithms.filter(a => a.startsWith('HS')) : ic.algorithms.filter(a => !a.startsWith('HS'))
    const key = await keyFor(state)
    const options = {
      issuer: ic.issuer,
      audience: ic.audience,
      algorithms,
      clockTolerance: Math.round(ic.clockSkew / 1000),
      currentDate: new Date(now()),
      // jose checks exp only when it is there; a token without one would never expire
      requiredClaims: ic.requireExp === false ? [] : ['exp'],
    }
    try {
      const { payload } =
        key instanceof Uint8Array ? await jwtVerify(token, key, options) : await jwtVerify(token, key, options)
      return payload
    } catch (err) {
      // A file set may have rotated since it was read: look again once before calling the key unknown.
      if (err instanceof joseErrors.JWKSNoMatchingKey && state.keys && (await state.keys.refresh().catch(() => false))) {
        const { payload } = await jwtVerify(token, state.keys.getKey, options)
        return payload
      }
      throw err
    }
  }

  return {
    revocations,
    update(next) {
      // build first: a bad issuer leaves the current ones (and revocations) as they were
      build(next)
      revocations.setConfigured(next.revocations)
    },
    async verify(token) {
      if (typeof token !== 'string' || token.length === 0) throw refuse('missing', 'no token presented')
      // real tokens are a few KB; anything far larger is not worth decoding
      if (token.length > MAX_TOKEN_LENGTH) throw refuse('malformed', `token longer than ${MAX_TOKEN_LENGTH} characters`)
      let header
      let claims
      try {
        header = decodeProtectedHeader(token)
        claims = decodeJwt(token)
      } catch {
        throw refuse('malformed', 'token is not a well-formed JWT')
      }
      if (typeof header.alg !== 'string' || header.alg.toLowerCase() === 'none')
        throw refuse('alg-none', 'unsigned tokens (alg none) are not accepted')
      const state = typeof claims.iss === 'string' ? issuers.get(claims.iss) : undefined
      if (!state) throw refuse('issuer', `wrong issuer: ${JSON.stringify(String(claims.iss ?? ''))} is not a configured issuer`)
      let payload: JWTPayload
      try {
        payload = await verifyWith(state, token)
      } catch (err) {
        throw mapJoseError(err, header.alg, state.config)
      }
      // jose reads iat only to enforce maxTokenAge: a token "issued" in the future is a clock or
      // issuer fault at best, a token minted to outlive its exp at worst
      if (payload.iat !== undefined) {
        if (typeof payload.iat !== 'number' || !Number.isFinite(payload.iat)) throw refuse('claims', 'token claim iat is invalid')
        if (payload.iat * 1000 > now() + state.config.clockSkew) throw refuse('not-yet-valid', 'token issued in the future (iat)')
      }
      if (typeof payload.sub !== 'string' || payload.sub === '') throw refuse('subject', 'token has no subject (sub)')
      const principal: Principal = {
        subject: payload.sub,
        groups: claimGroups(payload, state.config.groupsClaim),
        issuer: state.config.issuer,
      }
      if (typeof payload.exp === 'number') principal.expiresAt = payload.exp * 1000
      if (typeof payload.jti === 'string') principal.tokenId = payload.jti
      if (revocations.isRevoked(principal)) throw refuse('revoked', 'token revoked')
      attachClaims(principal, payload as Record<string, unknown>)
      return principal
    },
  }
}

function mapJoseError(err: unknown, alg: string, ic: IssuerConfig): PortcullisError {
  if (err instanceof PortcullisError) return err
  if (err instanceof joseErrors.JWTExpired) return refuse('expired', 'token expired')
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    switch (err.claim) {
      case 'nbf':
        return refuse('not-yet-valid', 'token not yet valid (nbf)')
      case 'iat':
        return err.reason === 'invalid' ? refuse('claims', 'token claim iat is invalid') : refuse('not-yet-valid', 'token issued in the future (iat)')
      case 'exp':
        // present but not a number is 'invalid'; absent is refused unless the issuer has requireExp: false
        return err.reason === 'missing'
          ? refuse('no-expiry', `token has no expiry (exp); issuer ${ic.issuer} requires one (requireExp)`)
          : refuse('claims', 'token claim exp is invalid')
      case 'iss':
        return refuse('issuer', 'wrong issuer')
      case 'aud':
        return refuse('audience', `wrong audience: expected ${ic.audience}`)
      default:
        return refuse('claims', `token claim ${err.claim} is invalid`)
    }
  }
  if (err instanceof joseErrors.JOSEAlgNotAllowed || err instanceof joseErrors.JOSENotSupported)
    return refuse('algorithm', `algorithm ${alg} is not accepted for issuer ${ic.issuer}`)
  if (err instanceof joseErrors.JWKSNoMatchingKey) return refuse('unknown-key', 'unknown signing key (kid)')
  if (err instanceof joseErrors.JWKSMultipleMatchingKeys) return refuse('unknown-key', 'ambiguous signing key (kid)')
  if (err instanceof joseErrors.JWSSignatureVerificationFailed) return refuse('signature', 'bad signature')
  if (err instanceof joseErrors.JWKSTimeout) return refuse('jwks', 'issuer keys unavailable (timeout)')
  if (err instanceof joseErrors.JWKSInvalid || err instanceof joseErrors.JOSEError)
    return refuse('invalid', `token rejected (${(err as joseErrors.JOSEError).code})`)
  return refuse('jwks', 'issuer keys unavailable')
}
