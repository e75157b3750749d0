// The console's small parts on their own: the escaping template and the bounded session store.
import t from 'tap'
import { html, raw } from '../src/console/html.ts'
import { MemoryConsoleSessionStore, newId } from '../src/console/session-store.ts'

t.test('every interpolated value is escaped unless it is already Html', async (t) => {
  const evil = `<script>alert(1)</script>" onmouseover='x' &`
  t.equal(String(html`<p title="${evil}">${evil}</p>`), '<p title="&lt;script&gt;alert(1)&lt;/script&gt;&quot; onmouseover=&#39;x&#39; &amp;">&lt;script&gt;alert(1)&lt;/script&gt;&quot; onmouseover=&#39;x&#39; &amp;</p>')
  t.equal(String(html`<ul>${['<a>', html`<li>ok</li>`]}</ul>`), '<ul>&lt;a&gt;<li>ok</li></ul>', 'arrays: strings escaped, Html kept')
  t.equal(String(html`${undefined}${null}${false}${0}`), '0')
  t.equal(String(raw('<b>')), '<b>')
})

t.test('the memory store: expiry, one-time logins, a bound', async (t) => {
  let now = 1_000
  const store = new MemoryConsoleSessionStore(3, 2, () => now)
  const principal = { subject: 'ann', groups: ['admins'], issuer: 'x' }
  const ids = [newId(), newId(), newId(), newId()]
  t.match(ids[0], /^[\w-]{43}$/, '256 random bits')
  for (const [i, id] of ids.entries()) await store.put(id, { principal, csrf: 'c', created: now, expires: now + 100 + i })
  t.equal(await store.get(ids[0]!), undefined, 'past the bound the oldest goes')
  t.equal((await store.get(ids[3]!))?.principal.subject, 'ann')
  now += 200
  t.equal(await store.get(ids[3]!), undefined, 'an expired session is gone')
  await store.putLogin('l1', { state: 's', nonce: 'n', codeVerifier: 'v', returnTo: '/console/', expires: now + 10 })
  t.equal((await store.takeLogin('l1'))?.state, 's')
  t.equal(await store.takeLogin('l1'), undefined, 'a login is taken once')
  await store.putLogin('l2', { state: 's', nonce: 'n', codeVerifier: 'v', returnTo: '/console/', expires: now + 10 })
  now += 20
  t.equal(await store.takeLogin('l2'), undefined, 'an old login is refused')
})
