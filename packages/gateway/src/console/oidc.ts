// Sign-in with the configured OpenID Connect issuer: authorization code flow with PKCE (S256),
// state and nonce, by openid-client. The ID token's groups become the principal's groups, as a
// bearer token's would (same claim path as the matching identity issuer, unless the console says).
import * as client from 'openid-client'
import { claimGroups, type Config, type ConsoleConfig, type Core, type Principal } from '@portcullis/core'
import { isLoopback } from '../listen.ts'
import type { PendingLogin } from './session-store.ts'

export interface OidcLogin {
  /** where to send the browser, and what the callback needs again */
  start(returnTo: string): Promise<{ url: URL; login: PendingLogin }>
  /** the callback's URL as the browser requested it → the signed-in principal */
  finish(callbackUrl: URL, login: PendingLogin): Promise<Principal>
}

/** how long a sign-in may take between leaving for the issuer and coming back */
export const LOGIN_TTL_MS = 10 * 60_000

export function oidcLogin(core: Core, consoleConfig: ConsoleConfig, redirectUri: () => string): OidcLogin {
  let discovered: Promise<client.Configuration> | undefined
  const configuration = (): Promise<client.Configuration> => {
    if (!discovered) {
      const issuer = new URL(consoleConfig.issuer)
      discovered = (async () => {
        const secret = consoleConfig.clientSecret ? await core.secrets.get(consoleConfig.clientSecret) : undefined
        const auth = secret !== undefined ? client.ClientSecretPost(secret) : client.None()
        // plain http only to an issuer on this host (tests, a local IdP); anything else must be https
        const insecure = issuer.protocol === 'http:' && isLoopback(issuer.hostname.replace(/^\[|\]$/g, ''))
        return client.discovery(issuer, consoleConfig.clientId, undefined, auth, insecure ? { execute: [client.allowInsecureRequests] } : undefined)
      })()
      // a failed discovery (issuer down) is tried again at the next sign-in
      discovered.catch(() => (discovered = undefined))
    }
    return discovered
  }

  const groupsClaim = (config: Config): string =>
    consoleConfig.groupsClaim ??
    config.identity.issuers.find((i) => sameIssuer(i.issuer, consoleConfig.issuer))?.groupsClaim ??
    'groups'

  return {
    async start(returnTo) {
      const config = await configuration()
      const login: PendingLogin = {
        state: client.randomState(),
        nonce: client.randomNonce(),
        codeVerifier: client.randomPKCECodeVerifier(),
        returnTo,
        expires: Date.now() + LOGIN_TTL_MS,
      }
      const url = client.buildAuthorizationUrl(config, {
        redirect_uri: redirectUri(),
        scope: 'openid groups',
        code_challenge: await client.calculatePKCECodeChallenge(login.codeVerifier),
        code_challenge_method: 'S256',
        state: login.state,
        nonce: login.nonce,
      })
      return { url, login }
    },
    async finish(callbackUrl, login) {
      const config = await configuration()
      const tokens = await client.authorizationCodeGrant(config, callbackUrl, {
        pkceCodeVerifier: login.codeVerifier,
        expectedState: login.state,
        expectedNonce: login.nonce,
        idTokenExpected: true,
      })
      const claims = tokens.claims()
      if (!claims) throw new Error('the issuer returned no ID token')
      const principal: Principal = {
        subject: claims.sub,
        groups: claimGroups(claims, groupsClaim(core.config)),
        issuer: claims.iss,
        expiresAt: claims.exp * 1000,
      }
      return principal
    },
  }
}

function sameIssuer(a: string, b: string): boolean {
  return a.replace(/\/+$/, '') === b.replace(/\/+$/, '')
}
