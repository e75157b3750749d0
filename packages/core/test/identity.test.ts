import t from 'tap'
import { createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { SignJWT, exportJWK, generateKeyPair, importJWK, type JWK } from 'jose'
import { createDevIssuer } from '../src/identity/dev-issuer.ts'
import { createIdentity } from '../src/identity/verify.ts'
import { createSecretStore } from '../src/secrets/store.ts'
import type { IssuerConfig } from '../src/config/types.ts'
import { parseConfig } from '../src/config/parse.ts'
import { tempDir } from './helpers.ts'

const b64 = (o: unknown) => Buffer.from(JSON.stringify(o)).toString('base64url')
const nowS = () => Math.floor(Date.now() / 1000)

async function devIdentity(t: { teardown(fn: () => unknown): void }, over: Partial<IssuerConfig> = {}) {
  const dir = await tempDir(t)
  const issuer = await createDevIssuer({ dir })
  const config = { ...issuer.issuerConfig(), ...over }
  const identity = createIdentity({ issuers: [config], revocations: [] })
  const privateKey = await importJWK(issuer.privateJwk, 'ES256')
  const kid = issuer.privateJwk.kid!
  /** signs with the issuer's own key but lets a test choose every claim */
  const sign = (claims: Record<string, unknown>, header: Record<string, unknown> = {}) =>
    new SignJWT({ sub: 'agent-1', iss: issuer.issuer, aud: issuer.audience, exp: nowS() + 300, ...claims })
      .setProtectedHeader({ alg: 'ES256', kid, ...header })
      .sign(privateKey)
  return { dir, issuer, identity, sign, config }
}

const reasonOf = async (p: Promise<unknown>) => {
  try {
    await p
    return 'accepted'
  } catch (err) {
    return (err as { code: string; details: { reason: string } }).code + ':' + (err as { details: { reason: string } }).details.reason
  }
}

t.test('a token from a configured issuer becomes a principal', async t => {
  const { identity, issuer } = await devIdentity(t)
  const p = await identity.verify(await issuer.mint({ sub: 'agent-1', groups: ['agents', 'rag'], jti: 'j-1', ttlSeconds: 120 }))
  t.equal(p.subject, 'agent-1')
  t.same(p.groups, ['agents', 'rag'])
  t.equal(p.issuer, issuer.issuer)
  t.equal(p.tokenId, 'j-1')
  t.ok(p.expiresAt! > Date.now() + 100_000 && p.expiresAt! <= Date.now() + 120_000)
})

t.test('groups come from a dotted claim path', async t => {
  const { identity, sign } = await devIdentity(t, { groupsClaim: 'realm_access.roles' })
  const p = await identity.verify(await sign({ realm_access: { roles: ['dba', 7, 'ops'] } }))
  t.same(p.groups, ['dba', 'ops'])
  const q = await identity.verify(await sign({}))
  t.same(q.groups, [])
})

t.test('each kind of bad token is refused with its own reason', async t => {
  const { identity, issuer, sign } = await devIdentity(t)
  const good = await issuer.mint({ sub: 'agent-1' })
  const [h, p] = good.split('.')

  t.equal(await reasonOf(identity.verify(`${b64({ alg: 'none', typ: 'JWT' })}.${p}.`)), 'AUTH_FAILED:alg-none')
  t.equal(await reasonOf(identity.verify(`${b64({ alg: 'NONE' })}.${p}.`)), 'AUTH_FAILED:alg-none')
  t.equal(await reasonOf(identity.verify('not.a.jwt')), 'AUTH_FAILED:malformed')
  t.equal(await reasonOf(identity.verify('')), 'AUTH_FAILED:missing')
  t.equal(await reasonOf(identity.verify(`${h}.${'A'.repeat(20_000)}.x`)), 'AUTH_FAILED:malformed')

  // alg confusion: an HS256 token whose "secret" is the issuer's public key
  const publicJwk: JWK = { ...issuer.privateJwk }
  delete publicJwk.d
  const hs = await new SignJWT({ sub: 'mallory', iss: issuer.issuer, aud: issuer.audience, exp: nowS() + 60 })
    .setProtectedHeader({ alg: 'HS256', kid: issuer.privateJwk.kid })
    .sign(new TextEncoder().encode(JSON.stringify(publicJwk)))
  t.equal(await reasonOf(identity.verify(hs)), 'AUTH_FAILED:algorithm')

  // RS256 is a fine algorithm, but this issuer is configured for ES256 only
  const rsa = await generateKeyPair('RS256')
  const rs = await new SignJWT({ sub: 'x', iss: issuer.issuer, aud: issuer.audience, exp: nowS() + 60 })
    .setProtectedHeader({ alg: 'RS256', kid: issuer.privateJwk.kid })
    .sign(rsa.privateKey)
  t.equal(await reasonOf(identity.verify(rs)), 'AUTH_FAILED:algorithm')

  t.equal(await reasonOf(sign({ exp: nowS() - 120 }).then(x => identity.verify(x))), 'AUTH_FAILED:expired')
  t.equal(await reasonOf(sign({ exp: nowS() - 10 }).then(x => identity.verify(x))), 'accepted', 'within the clock skew')
  t.equal(await reasonOf(sign({ nbf: nowS() + 600 }).then(x => identity.verify(x))), 'AUTH_FAILED:not-yet-valid')
  t.equal(await reasonOf(sign({ iss: 'https://evil.example/' }).then(x => identity.verify(x))), 'AUTH_FAILED:issuer')
  t.equal(await reasonOf(sign({ aud: 'someone-else' }).then(x => identity.verify(x))), 'AUTH_FAILED:audience')
  t.equal(await reasonOf(sign({ sub: undefined }).then(x => identity.verify(x))), 'AUTH_FAILED:subject')

  const stranger = await generateKeyPair('ES256')
  const unknownKid = await new SignJWT({ sub: 'x', iss: issuer.issuer, aud: issuer.audience, exp: nowS() + 60 })
    .setProtectedHeader({ alg: 'ES256', kid: 'not-in-jwks' })
    .sign(stranger.privateKey)
  t.equal(await reasonOf(identity.verify(unknownKid)), 'AUTH_FAILED:unknown-key')

  // same kid as the real key, signed by someone else
  const forged = await new SignJWT({ sub: 'x', iss: issuer.issuer, aud: issuer.audience, exp: nowS() + 60 })
    .setProtectedHeader({ alg: 'ES256', kid: issuer.privateJwk.kid })
    .sign(stranger.privateKey)
  t.equal(await reasonOf(identity.verify(forged)), 'AUTH_FAILED:signature')
  const otherPayload = b64({ sub: 'admin', iss: issuer.issuer, aud: issuer.audience, exp: nowS() + 60 })
  t.equal(await reasonOf(identity.verify(`${h}.${otherPayload}.${good.split('.')[2]}`)), 'AUTH_FAILED:signature')
})

t.test('refusal messages never contain the token', async t => {
  const { identity, sign } = await devIdentity(t)
  const token = await sign({ exp: nowS() - 3600 })
  const err = await identity.verify(token).catch((e: Error) => e)
  t.equal((err as Error).message, 'token expired')
  t.notOk(JSON.stringify(err).includes(token.split('.')[2]))
})

t.test('HS256 is accepted only from an issuer configured with a shared secret', async t => {
  process.env.PORTCULLIS_TEST_HS = 'a-long-shared-secret-for-hs256-tests'
  t.teardown(() => delete process.env.PORTCULLIS_TEST_HS)
  const secrets = createSecretStore({ hs: { env: 'PORTCULLIS_TEST_HS' } })
  const identity = createIdentity(
    {
      issuers: [{ issuer: 'hs-issuer', audience: 'portcullis', algorithms: ['HS256'], groupsClaim: 'groups', clockSkew: 0, secret: { secret: 'hs' } }],
      revocations: [],
    },
    { secrets },
  )
  const key = new TextEncoder().encode(process.env.PORTCULLIS_TEST_HS)
  const token = await new SignJWT({ sub: 'svc', iss: 'hs-issuer', aud: 'portcullis', exp: nowS() + 60 }).setProtectedHeader({ alg: 'HS256' }).sign(key)
  t.equal((await identity.verify(token)).subject, 'svc')
  const wrong = await new SignJWT({ sub: 'svc', iss: 'hs-issuer', aud: 'portcullis', exp: nowS() + 60 })
    .setProtectedHeader({ alg: 'HS256' })
    .sign(new TextEncoder().encode('another-secret-of-some-length-000'))
  t.equal(await reasonOf(identity.verify(wrong)), 'AUTH_FAILED:signature')
  const es = await generateKeyPair('ES256')
  const asym = await new SignJWT({ sub: 'svc', iss: 'hs-issuer', aud: 'portcullis', exp: nowS() + 60 }).setProtectedHeader({ alg: 'ES256' }).sign(es.privateKey)
  t.equal(await reasonOf(identity.verify(asym)), 'AUTH_FAILED:algorithm')
})

t.test('revoked subjects and token ids are refused', async t => {
  const { identity, issuer } = await devIdentity(t)
  identity.update({ issuers: [issuer.issuerConfig()], revocations: [{ subject: 'gone' }] })
  identity.revocations.add({ jti: 'stolen' })
  t.equal(await reasonOf(identity.verify(await issuer.mint({ sub: 'gone' }))), 'AUTH_FAILED:revoked')
  t.equal(await reasonOf(identity.verify(await issuer.mint({ sub: 'agent', jti: 'stolen' }))), 'AUTH_FAILED:revoked')
  t.equal(await reasonOf(identity.verify(await issuer.mint({ sub: 'agent', jti: 'fine' }))), 'accepted')
  // a reload drops configured revocations but keeps those made at runtime
  identity.update({ issuers: [issuer.issuerConfig()], revocations: [] })
  t.equal(await reasonOf(identity.verify(await issuer.mint({ sub: 'gone' }))), 'accepted')
  t.equal(await reasonOf(identity.verify(await issuer.mint({ sub: 'agent', jti: 'stolen' }))), 'AUTH_FAILED:revoked')
})

async function es256Key(kid: string) {
  const { privateKey, publicKey } = await generateKeyPair('ES256', { extractable: true })
  return { privateKey, kid, jwk: { ...(await exportJWK(publicKey)), kid, alg: 'ES256', use: 'sig' } }
}

t.test('a rewritten JWKS file rotates keys without a restart', async t => {
  const dir = await tempDir(t)
  const file = join(dir, 'jwks.json')
  const old = await es256Key('old')
  const fresh = await es256Key('new')
  await writeFile(file, JSON.stringify({ keys: [old.jwk] }))
  let clock = Date.now()
  const identity = createIdentity(
    { issuers: [{ issuer: 'rot', audience: 'portcullis', jwksFile: file, algorithms: ['ES256'], groupsClaim: 'groups', clockSkew: 30_000 }], revocations: [] },
    { now: () => clock },
  )
  const mint = (k: { privateKey: CryptoKey; kid: string }) =>
    new SignJWT({ sub: 'agent', iss: 'rot', aud: 'portcullis', exp: nowS() + 300 }).setProtectedHeader({ alg: 'ES256', kid: k.kid }).sign(k.privateKey)
  t.equal(await reasonOf(identity.verify(await mint(old))), 'accepted')
  t.equal(await reasonOf(identity.verify(await mint(fresh))), 'AUTH_FAILED:unknown-key')
  await writeFile(file, JSON.stringify({ keys: [old.jwk, fresh.jwk] }))
  t.equal(await reasonOf(identity.verify(await mint(fresh))), 'accepted', 'a new kid makes the file be read again')
  await writeFile(file, JSON.stringify({ keys: [fresh.jwk] }))
  clock += 2000
  t.equal(await reasonOf(identity.verify(await mint(old))), 'AUTH_FAILED:unknown-key', 'a removed key stops working')
  t.equal(await reasonOf(identity.verify(await mint(fresh))), 'accepted')
})

t.test('a JWKS URL is cached, refetched for a new kid, and refetches are rate limited', async t => {
  const old = await es256Key('url-old')
  const fresh = await es256Key('url-new')
  let keys = [old.jwk]
  let fetches = 0
  const server = createServer((req, res) => {
    fetches++
    res.setHeader('content-type', 'application/json')
    res.end(JSON.stringify({ keys }))
  })
  await new Promise<void>(r => server.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise(r => server.close(r)))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`
  const issuers: IssuerConfig[] = [{ issuer: 'url', audience: 'portcullis', jwks: url, algorithms: ['ES256'], groupsClaim: 'groups', clockSkew: 30_000 }]
  const mint = (k: { privateKey: CryptoKey; kid: string }) =>
    new SignJWT({ sub: 'agent', iss: 'url', aud: 'portcullis', exp: nowS() + 300 }).setProtectedHeader({ alg: 'ES256', kid: k.kid }).sign(k.privateKey)

  const limited = createIdentity({ issuers, revocations: [] })
  t.equal(await reasonOf(limited.verify(await mint(old))), 'accepted')
  t.equal(await reasonOf(limited.verify(await mint(old))), 'accepted')
  t.equal(fetches, 1, 'keys are cached')
  const stranger = await es256Key('nobody')
  for (let i = 0; i < 5; i++) t.equal(await reasonOf(limited.verify(await mint(stranger))), 'AUTH_FAILED:unknown-key')
  t.equal(fetches, 1, 'unknown kids inside the cooldown do not hammer the issuer')

  const rotating = createIdentity({ issuers, revocations: [] }, { jwksCooldownMs: 0 })
  t.equal(await reasonOf(rotating.verify(await mint(old))), 'accepted')
  keys = [old.jwk, fresh.jwk]
  t.equal(await reasonOf(rotating.verify(await mint(fresh))), 'accepted', 'a new kid triggers a refetch')
})

t.test('an unreachable or broken JWKS endpoint refuses tokens and says so', async t => {
  const server = createServer((req, res) => res.end('not json'))
  await new Promise<void>(r => server.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise(r => server.close(r)))
  const broken = `http://127.0.0.1:${(server.address() as AddressInfo).port}/jwks.json`
  const k = await es256Key('k')
  for (const [url, reason] of [
    ['http://127.0.0.1:1/jwks.json', 'AUTH_FAILED:jwks'],
    [broken, 'AUTH_FAILED:invalid'],
  ]) {
    const identity = createIdentity({
      issuers: [{ issuer: 'down', audience: 'portcullis', jwks: url, algorithms: ['ES256'], groupsClaim: 'groups', clockSkew: 0 }],
      revocations: [],
    })
    const token = await new SignJWT({ sub: 'a', iss: 'down', aud: 'portcullis', exp: nowS() + 60 }).setProtectedHeader({ alg: 'ES256', kid: 'k' }).sign(k.privateKey)
    t.equal(await reasonOf(identity.verify(token)), reason, url)
  }
})

t.test('the dev issuer publishes only public key material and mints verifiable ES256 tokens', async t => {
  const dir = await tempDir(t)
  const issuer = await createDevIssuer({ dir, issuer: 'https://dev.test/', audience: 'aud-x' })
  const jwks = JSON.parse(await readFile(issuer.jwksFile, 'utf8')) as { keys: JWK[] }
  t.equal(jwks.keys.length, 1)
  t.notOk('d' in jwks.keys[0], 'no private part in the JWKS file')
  t.equal(jwks.keys[0].kid, issuer.privateJwk.kid)
  t.same(issuer.issuerConfig(), { issuer: 'https://dev.test/', audience: 'aud-x', jwksFile: join(dir, 'jwks.json'), algorithms: ['ES256'], groupsClaim: 'groups', clockSkew: 30_000, requireExp: true })
  const token = await issuer.mint({ sub: 'demo', groups: ['agents'], ttlSeconds: 60, extra: { tenant: 't1' } })
  const claims = JSON.parse(Buffer.from(token.split('.')[1], 'base64url').toString()) as Record<string, unknown>
  t.match(claims, { sub: 'demo', groups: ['agents'], tenant: 't1', iss: 'https://dev.test/', aud: 'aud-x' })
  t.equal((claims.exp as number) - (claims.iat as number), 60)
  t.match(claims.jti, /^[0-9a-f]{16}$/)
  const identity = createIdentity({ issuers: [issuer.issuerConfig()], revocations: [] })
  t.same((await identity.verify(token)).groups, ['agents'])
})

t.test('a token without exp is refused unless its issuer says requireExp: false', async t => {
  const strict = await devIdentity(t)
  // jose's sign() sets only the claims given: this token has no exp at all
  const forever = await strict.sign({ exp: undefined, iat: nowS() })
  t.notOk('exp' in JSON.parse(Buffer.from(forever.split('.')[1], 'base64url').toString()), 'the token really has no exp')
  t.equal(await reasonOf(strict.identity.verify(forever)), 'AUTH_FAILED:no-expiry')
  await t.rejects(strict.identity.verify(forever), { message: /no expiry \(exp\)/ })
  t.equal(await reasonOf(strict.sign({ exp: 'tomorrow' }).then(x => strict.identity.verify(x))), 'AUTH_FAILED:claims', 'an exp that is not a number')
  t.equal(await reasonOf(strict.sign({}).then(x => strict.identity.verify(x))), 'accepted', 'with exp: accepted')

  const lax = await devIdentity(t, { requireExp: false })
  const token = await lax.sign({ exp: undefined })
  const p = await lax.identity.verify(token)
  t.equal(p.subject, 'agent-1', 'requireExp: false accepts it')
  t.equal(p.expiresAt, undefined, 'and the principal has no expiry')
  t.equal(await reasonOf(lax.sign({ exp: nowS() - 120 }).then(x => lax.identity.verify(x))), 'AUTH_FAILED:expired', 'an exp that is there is still enforced')
})

t.test('requireExp is read from the config and defaults to true', async t => {
  const base = (extra: string) => `
identity:
  issuers:
    - { issuer: a, audience: p, jwksFile: ./jwks.json${extra} }
recording: { dir: ./r }
targets: []
rules: []
`
  t.equal(parseConfig(base(''), 'x.yaml').identity.issuers[0].requireExp, true)
  t.equal(parseConfig(base(', requireExp: false'), 'x.yaml').identity.issuers[0].requireExp, false)
  t.throws(() => parseConfig(base(', requireExp: maybe'), 'x.yaml'), /requireExp/)
})

t.test('a token issued in the future (iat beyond the clock skew) is refused', async t => {
  const { identity, sign } = await devIdentity(t, { clockSkew: 30_000 })
  t.equal(await reasonOf(sign({ iat: nowS() + 3600, exp: nowS() + 7200 }).then(x => identity.verify(x))), 'AUTH_FAILED:not-yet-valid')
  await t.rejects(sign({ iat: nowS() + 120 }).then(x => identity.verify(x)), { message: 'token issued in the future (iat)' })
  t.equal(await reasonOf(sign({ iat: nowS() + 10 }).then(x => identity.verify(x))), 'accepted', 'within the clock skew')
  t.equal(await reasonOf(sign({ iat: nowS() - 60 }).then(x => identity.verify(x))), 'accepted', 'issued in the past')
  t.equal(await reasonOf(sign({ iat: 'now' }).then(x => identity.verify(x))), 'AUTH_FAILED:claims', 'an iat that is not a number')
  const noSkew = await devIdentity(t, { clockSkew: 0 })
  t.equal(await reasonOf(noSkew.sign({ iat: nowS() + 5 }).then(x => noSkew.identity.verify(x))), 'AUTH_FAILED:not-yet-valid', 'clockSkew 0: five seconds ahead is refused')
})
