import t from 'tap'
import { rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { createSecretStore } from '../src/secrets/store.ts'
import { tempDir } from './helpers.ts'

t.test('env secrets come from the environment, and a missing variable is a clear error', async t => {
  const store = createSecretStore({ pg: { env: 'PG_PASS' }, gone: { env: 'NOT_SET_ANYWHERE' } }, { env: { PG_PASS: 's3cret' } })
  t.teardown(() => store.close())
  t.equal(await store.get({ secret: 'pg' }), 's3cret')
  await t.rejects(store.get({ secret: 'gone' }), { code: 'SECRET_UNAVAILABLE', message: 'secret "gone" unavailable: environment variable NOT_SET_ANYWHERE is not set' })
  await t.rejects(store.get({ secret: 'nope' }), { code: 'SECRET_UNAVAILABLE', message: /not defined/ })
  await t.rejects(store.get({ secret: 'toString' }), { code: 'SECRET_UNAVAILABLE' }, 'no prototype lookups')
})

t.test('file secrets rotate when the file changes, without a restart', async t => {
  const dir = await tempDir(t)
  const file = join(dir, 'pg-password')
  await writeFile(file, 'first-password\n')
  const store = createSecretStore({ pg: { file } })
  t.teardown(() => store.close())
  t.equal(await store.get({ secret: 'pg' }), 'first-password', 'one trailing newline is dropped')
  await writeFile(file, 'second-password-longer\n')
  t.equal(await store.get({ secret: 'pg' }), 'second-password-longer')
  // the way Kubernetes and editors rotate: write a new file and move it over the old one
  await writeFile(join(dir, 'next'), 'third\n')
  await rename(join(dir, 'next'), file)
  t.equal(await store.get({ secret: 'pg' }), 'third')
  // same length, written twice in a row: the watcher notices even when mtime and size look alike
  await writeFile(file, 'fourth\n')
  t.equal(await store.get({ secret: 'pg' }), 'fourth')
  await writeFile(file, 'fifth!\n')
  await new Promise(r => setTimeout(r, 50))
  t.equal(await store.get({ secret: 'pg' }), 'fifth!')
  const store2 = createSecretStore({ x: { file: join(dir, 'absent') } })
  t.teardown(() => store2.close())
  await t.rejects(store2.get({ secret: 'x' }), { code: 'SECRET_UNAVAILABLE', message: /cannot read file \(ENOENT\)/ })
})

t.test('exec secrets run the command once per TTL', async t => {
  const dir = await tempDir(t)
  const counter = join(dir, 'count')
  await writeFile(counter, '')
  let clock = 1_000_000
  // each run appends a line and prints how many runs there have been
  const script = `echo x >> "${counter}"; printf 'token-%s\\n' "$(wc -l < "${counter}" | tr -d ' ')"`
  const store = createSecretStore({ api: { exec: ['sh', '-c', script], ttl: 60_000 } }, { now: () => clock })
  t.teardown(() => store.close())
  const [a, b] = await Promise.all([store.get({ secret: 'api' }), store.get({ secret: 'api' })])
  t.equal(a, 'token-1')
  t.equal(b, 'token-1', 'concurrent callers share one run')
  clock += 30_000
  t.equal(await store.get({ secret: 'api' }), 'token-1', 'cached within the TTL')
  clock += 31_000
  t.equal(await store.get({ secret: 'api' }), 'token-2', 'run again after the TTL')
})

t.test('a failing exec command is an error that does not echo its output', async t => {
  const store = createSecretStore({ bad: { exec: ['sh', '-c', 'echo leaked-value >&2; exit 3'], ttl: 1000 } })
  t.teardown(() => store.close())
  const err = (await store.get({ secret: 'bad' }).catch((e: Error) => e)) as Error
  t.match(err, { code: 'SECRET_UNAVAILABLE', message: /command failed/ })
  t.notOk(err.message.includes('leaked-value'))
})

t.test('a changed definition on reload drops the cached value', async t => {
  let clock = 0
  const store = createSecretStore({ api: { exec: ['echo', 'one'], ttl: 60_000 } }, { now: () => clock })
  t.teardown(() => store.close())
  t.equal(await store.get({ secret: 'api' }), 'one')
  store.update({ api: { exec: ['echo', 'two'], ttl: 60_000 } })
  t.equal(await store.get({ secret: 'api' }), 'two')
})
