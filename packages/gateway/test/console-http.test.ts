// The web console's HTTP surface without a browser: cookie attributes, the sign-in's one-time state,
// what an unauthenticated or cross-site request gets, bundled assets, and an identity provider that
// is down. (The whole sign-in, in a browser, is console-browser.test.ts.)
import t, { type Test } from 'tap'
import { join } from 'node:path'
import { parseConfig } from '@portcullis/core'
import { startOidcProvider } from '@portcullis/fixtures/oidc'
import { startGateway } from '../src/index.ts'
import { silentLogger } from '../src/log.ts'
import { lineCodec, testEnv } from './helpers.ts'

async function gateway(t: Test, issuer: string, extra = '') {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const yaml = env.yaml({ admin: false }) + `\nadmin:\n  listen: 127.0.0.1:0\n  console: { issuer: ${JSON.stringify(issuer)}, clientId: pc${extra} }\n`
  const gw = await startGateway(parseConfig(yaml, join(env.dir, 'portcullis.yaml')), { log: silentLogger, codecs: [lineCodec()] })
  t.teardown(() => gw.close(100))
  return gw.admin!.url
}

const noFollow = { redirect: 'manual' as const }

t.test('the console over plain HTTP', async (t) => {
  const oidc = await startOidcProvider({ accounts: {} })
  t.teardown(() => oidc.stop())
  const admin = await gateway(t, oidc.issuer)
  oidc.addClient({ clientId: 'pc', redirectUri: `${admin}/console/callback` })

  await t.test('/ sends people to the console; a page without a session starts the sign-in with PKCE', async (t) => {
    const root = await fetch(admin + '/', noFollow)
    t.same([root.status, root.headers.get('location')], [303, '/console/'])
    const start = await fetch(admin + '/console/approvals', noFollow)
    t.equal(start.status, 303)
    const to = new URL(start.headers.get('location')!)
    t.equal(to.origin, oidc.issuer)
    t.equal(to.searchParams.get('code_challenge_method'), 'S256')
    t.match(to.searchParams.get('code_challenge'), /^[\w-]{43}$/)
    t.equal(to.searchParams.get('redirect_uri'), `${admin}/console/callback`)
    t.ok(to.searchParams.get('state') && to.searchParams.get('nonce'))
    const cookie = start.headers.get('set-cookie')!
    t.match(cookie, /^portcullis_login=[\w-]{43}; Path=\/; HttpOnly; SameSite=Lax; Max-Age=600$/, 'HttpOnly, Lax, not Secure on loopback')
  })

  await t.test('a callback is refused without its login cookie, with a stale one, and twice', async (t) => {
    const bare = await fetch(admin + '/console/callback?code=x&state=y', noFollow)
    t.equal(bare.status, 400)
    t.match(await bare.text(), /unknown or too old/)
    const start = await fetch(admin + '/console/', noFollow)
    const login = start.headers.get('set-cookie')!.split(';')[0]!
    const state = new URL(start.headers.get('location')!).searchParams.get('state')
    const forged = await fetch(admin + `/console/callback?code=forged&state=${state}&iss=${encodeURIComponent(oidc.issuer)}`, { ...noFollow, headers: { cookie: login } })
    t.equal(forged.status, 400, 'a code the issuer never gave')
    t.match(await forged.text(), /sign-in failed/)
    const again = await fetch(admin + `/console/callback?code=forged&state=${state}`, { ...noFollow, headers: { cookie: login } })
    t.match(await again.text(), /unknown or too old/, 'the login state is one-time')
    t.notMatch(forged.headers.get('set-cookie') ?? '', /portcullis_console=/, 'no session cookie')
  })

  await t.test('state-changing requests without a session are refused, and nothing renders', async (t) => {
    for (const path of ['/console/approvals/apr_x/decide', '/console/sessions/end-subject', '/console/logout', '/console/policy']) {
      const res = await fetch(admin + path, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded', origin: 'http://evil.example' }, body: 'subject=ann&decision=approve' })
      t.equal(res.status, 401, path)
    }
    const hx = await fetch(admin + '/console/approvals/list', { headers: { 'hx-request': 'true' } })
    t.equal(hx.status, 401, 'an htmx poll without a session gets no page and no redirect')
    t.equal(hx.headers.get('content-security-policy')?.includes("script-src 'self'"), true)
    t.equal(hx.headers.get('x-frame-options'), 'DENY')
  })

  await t.test('htmx is served from the bundle under a content hash, cacheable for good', async (t) => {
    const page = await (await fetch(admin + '/console/signed-out')).text()
    const src = /<script src="(\/console\/assets\/htmx-[0-9a-f]{16}\.js)"/.exec(page)
    const css = /<link rel="stylesheet" href="(\/console\/assets\/console-[0-9a-f]{16}\.css)"/.exec(page)
    t.ok(src && css, 'the page names hashed local assets, no CDN')
    t.notMatch(page, /https?:\/\/(?!127\.0\.0\.1)/)
    const js = await fetch(admin + src![1]!)
    t.equal(js.status, 200)
    t.equal(js.headers.get('cache-control'), 'public, max-age=31536000, immutable')
    t.match(await js.text(), /htmx/)
    t.equal((await fetch(admin + '/console/assets/htmx-0000000000000000.js', noFollow)).status, 303, 'an unknown asset is just a page behind sign-in')
  })
})

t.test('a console on https gets __Host- cookies marked Secure; an issuer that is down is a 503 page', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const oidc = await startOidcProvider({ accounts: {} })
  t.teardown(() => oidc.stop())
  const yaml = env.yaml({ admin: false }) + `\nadmin:\n  listen: 127.0.0.1:0\n  console: { issuer: ${JSON.stringify(oidc.issuer)}, clientId: pc, url: 'https://console.example.com' }\n`
  const gw = await startGateway(parseConfig(yaml, join(env.dir, 'portcullis.yaml')), { log: silentLogger, codecs: [lineCodec()] })
  t.teardown(() => gw.close(100))
  oidc.addClient({ clientId: 'pc', redirectUri: 'https://console.example.com/console/callback' })
  const start = await fetch(gw.admin!.url + '/console/', noFollow)
  t.equal(start.status, 303)
  t.match(start.headers.get('set-cookie'), /^__Host-portcullis_login=[\w-]+; Path=\/; HttpOnly; SameSite=Lax; Max-Age=600; Secure$/)
  t.equal(new URL(start.headers.get('location')!).searchParams.get('redirect_uri'), 'https://console.example.com/console/callback')

  const down = await gateway(t, 'http://127.0.0.1:1', '-down')
  const res = await fetch(down + '/console/', noFollow)
  t.equal(res.status, 503)
  t.match(await res.text(), /identity provider cannot be reached/)
})
