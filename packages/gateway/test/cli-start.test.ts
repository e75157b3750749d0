import t from 'tap'
import { spawn } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { once } from 'node:events'
import { testEnv, waitFor } from './helpers.ts'

const BIN = new URL('../bin/portcullis.mjs', import.meta.url).pathname

t.test('start --config serves, reloads on SIGHUP, keeps the old config on a bad file, exits 0 on SIGTERM', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const file = join(env.dir, 'portcullis.yaml')
  await writeFile(file, env.yaml())
  const child = spawn(process.execPath, [BIN, 'start', '--config', file], { stdio: ['ignore', 'ignore', 'pipe'] })
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL')
  })
  let log = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => (log += d))
  const exited = once(child, 'exit')

  await waitFor(() => /admin API listening/.test(log), 'the admin API', 90_000)
  const url = JSON.parse(log.split('\n').find((l) => l.includes('admin API listening'))!).url as string
  const health = await fetch(`${url}/healthz`)
  t.equal(health.status, 200)
  t.match(log, /"target":"lines".*"msg":"listening"/, 'the target listens')

  await writeFile(file, env.yaml().replace('rules:', 'rules:\n  - { id: broken, action: maybe }'))
  child.kill('SIGHUP')
  await waitFor(() => /config reload rejected/.test(log), 'the bad file to be rejected', 30_000)
  t.match(log, /"path":"rules\.0\.action"/, 'the log names the key')
  t.equal((await fetch(`${url}/healthz`)).status, 200, 'still serving on the old config')

  const reloadsBefore = log.split('config reloaded').length
  await writeFile(file, env.yaml())
  child.kill('SIGHUP')
  await waitFor(() => log.split('config reloaded').length > reloadsBefore, 'the good file to load', 30_000)

  child.kill('SIGTERM')
  const [code] = (await exited) as [number]
  t.equal(code, 0, 'graceful shutdown exits 0')
  t.match(log, /"signal":"SIGTERM"/)
})
