import t from 'tap'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { createCore } from '@portcullis/core'
import { portcullis, testEnv } from './helpers.ts'

t.test('check-config: a valid file passes; errors name file, line and key', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const good = join(env.dir, 'good.yaml')
  await writeFile(good, env.yaml())
  const ok = await portcullis(['check-config', good])
  t.equal(ok.code, 0)
  t.match(ok.stdout, /good\.yaml: ok \(1 targets, 3 rules\)/)
  t.match(ok.stderr, /good\.yaml: warning: target lines: the gateway logs in to its Redis upstream as the 'default' user without a password/, 'a Redis target without a password is worth a warning, not a failure')

  const bad = join(env.dir, 'bad.yaml')
  const text = env.yaml().replace('port: 1 }', 'port: "one" }')
  await writeFile(bad, text)
  const line = text.split('\n').findIndex((l) => l.includes('"one"')) + 1
  const res = await portcullis(['check-config', bad])
  t.equal(res.code, 1)
  t.match(res.stderr, new RegExp(`bad\\.yaml:${line}: targets\\.0\\.upstream\\.port: `))

  const unknown = await portcullis(['frobnicate'])
  t.equal(unknown.code, 2)
  t.match(unknown.stderr, /unknown command "frobnicate"/)
})

t.test('token mints a dev token that the gateway accepts, and says it is for demos only', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const res = await portcullis(['token', '--sub', 'ann', '--groups', 'agents,readers', '--ttl', '10m'], {
    PORTCULLIS_DEV_ISSUER_DIR: env.issuerDir,
  })
  t.equal(res.code, 0, res.stderr)
  t.match(res.stderr, /demos and tests only/)
  const token = res.stdout.trim()
  t.match(token, /^[\w-]+\.[\w-]+\.[\w-]+$/, 'one JWT on stdout')
  const core = await createCore(env.config(), { auditStream: new PassThrough().resume() })
  t.teardown(() => core.close())
  const p = await core.authenticate(token)
  t.equal(p.subject, 'ann')
  t.same(p.groups, ['agents', 'readers'])
  t.ok(p.expiresAt! - Date.now() <= 10 * 60_000 + 1000, 'ttl applied')

})

t.test('dev keys of long-expired tokens leave the key set; live ones stay', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const { mintDevToken } = await import('../src/dev-tokens.ts')
  const { readFile, writeFile: write } = await import('node:fs/promises')
  const first = await mintDevToken({ sub: 'a', ttlSeconds: 600, dir: env.issuerDir })
  const jwks = () => readFile(first.jwksFile, 'utf8').then((s) => JSON.parse(s) as { keys: Array<Record<string, unknown>> })
  // Age the first key as if its token had expired an hour ago.
  const set = await jwks()
  t.ok((set.keys[0]!['x-portcullis-exp'] as number) * 1000 >= first.expiresAt - 1000, 'each key carries its token expiry')
  set.keys[0]!['x-portcullis-exp'] = Math.floor(Date.now() / 1000) - 3600
  await write(first.jwksFile, JSON.stringify(set))
  const second = await mintDevToken({ sub: 'b', ttlSeconds: 600, dir: env.issuerDir })
  t.equal((await jwks()).keys.length, 1, 'the expired token’s key was pruned')
  const core = await createCore(env.config(), { auditStream: new PassThrough().resume() })
  t.teardown(() => core.close())
  t.equal((await core.authenticate(second.token)).subject, 'b', 'the key member we add does not upset verification')
})
