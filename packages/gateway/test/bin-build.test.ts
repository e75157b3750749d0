// `portcullis` runs the build (scripts/build.mjs → dist/) when it is current and the TypeScript
// sources through tsx otherwise; a stale build never runs. Each test builds into a temp dir of its
// own (PORTCULLIS_DIST) from the real sources, so the workspace's own dist/ is never touched.
import t, { type Test } from 'tap'
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { connect } from 'node:net'
import { mkdtemp, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { startRedis } from '@portcullis/fixtures/redis'
import { portcullis as runCli, testEnv, waitFor } from './helpers.ts'

const ROOT = new URL('../../../', import.meta.url).pathname
const BUILD = join(ROOT, 'scripts/build.mjs')
const BIN = new URL('../bin/portcullis.mjs', import.meta.url).pathname

interface Manifest {
  entries: Record<string, { inputs: string[]; outputs: string[] }>
  sources: Record<string, [number, number]>
  outputs: Record<string, [number, number]>
}

/** the real CLI as a subprocess; PORTCULLIS_RUN only when given (unset means the default: spawn drops an undefined variable) */
const portcullis = (args: string[], env: Record<string, string>) => runCli(args, { PORTCULLIS_RUN: undefined, ...env })

/** a real build of the current sources into a temp dir; the env that points the bin at it */
async function buildInto(t: Test): Promise<{ dist: string; env: Record<string, string>; manifest(): Promise<Manifest> }> {
  const dist = await mkdtemp(join(tmpdir(), 'portcullis-dist-'))
  t.teardown(() => rm(dist, { recursive: true, force: true }))
  const env: Record<string, string> = { PORTCULLIS_DIST: dist }
  const child = spawn(process.execPath, [BUILD, '--force'], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] })
  let err = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d))
  const [code] = (await once(child, 'close')) as [number]
  if (code !== 0) t.comment(err)
  t.equal(code, 0, 'the build succeeds')
  return { dist, env, manifest: async () => JSON.parse(await readFile(join(dist, 'manifest.json'), 'utf8')) as Manifest }
}

/** puts other code in place of a build's output and records it as built: what runs tells which ran */
async function replaceOutput(dist: string, name: string, code: string): Promise<void> {
  await writeFile(join(dist, name), code)
  const manifest = JSON.parse(await readFile(join(dist, 'manifest.json'), 'utf8')) as Manifest
  const s = await stat(join(dist, name))
  manifest.outputs[name] = [s.mtimeMs, s.size]
  await writeFile(join(dist, 'manifest.json'), JSON.stringify(manifest))
}

t.test('the bin runs the build: its explain answers as the sources do', async (t) => {
  const { env } = await buildInto(t)
  for (const args of [
    ['explain', '--protocol', 'postgres', '--sql', 'SELECT name, email FROM customers WHERE id = 7'],
    ['explain', '--protocol', 'redis', '--command', 'HGETALL session:1'],
  ]) {
    const built = await portcullis(args, { ...env, PORTCULLIS_RUN: 'build' })
    const source = await portcullis(args, { ...env, PORTCULLIS_RUN: 'source' })
    if (built.code !== 0) t.comment(built.stderr)
    t.equal(built.code, 0, `${args[2]}: the build answers`)
    t.equal(built.stdout, source.stdout, `${args[2]}: the same answer from the build and from the sources`)
    t.match(built.stdout, /"class": "read"/)
  }
})

t.test('a current build is what runs without PORTCULLIS_RUN', async (t) => {
  const { dist, env } = await buildInto(t)
  await replaceOutput(dist, 'portcullis.mjs', "process.stdout.write('ran the build\\n')\n")
  const r = await portcullis(['--help'], env)
  t.equal(r.stdout.trim(), 'ran the build')
})

t.test('a source changed since the build: the sources run, and PORTCULLIS_RUN=build refuses', async (t) => {
  const { dist, env, manifest } = await buildInto(t)
  await replaceOutput(dist, 'portcullis.mjs', "process.stdout.write('ran the build\\n')\n")
  // what the build saw of cli.ts no longer matches the file: as after an edit or a checkout
  const m = await manifest()
  const cli = 'packages/gateway/src/cli.ts'
  t.ok(m.entries['portcullis.mjs'].inputs.includes(cli), 'the build records cli.ts as an input')
  m.sources[cli] = [m.sources[cli][0] - 1000, m.sources[cli][1]]
  await writeFile(join(dist, 'manifest.json'), JSON.stringify(m))

  const auto = await portcullis(['--help'], env)
  t.equal(auto.code, 0)
  t.match(auto.stdout, /^usage: portcullis <command>/, 'the sources ran (usage), not the stale build')

  const strict = await portcullis(['--help'], { ...env, PORTCULLIS_RUN: 'build' })
  t.equal(strict.code, 2)
  t.equal(strict.stdout, '', 'nothing of the stale build ran')
  t.match(strict.stderr, /packages\/gateway\/src\/cli\.ts changed since the build/)
})

t.test('a chunk of the build gone: the sources run, and PORTCULLIS_RUN=build says which', async (t) => {
  const { dist, env, manifest } = await buildInto(t)
  const chunk = (await manifest()).entries['portcullis.mjs'].outputs.find((o) => o.startsWith('chunks/') && o.endsWith('.mjs'))!
  await replaceOutput(dist, 'portcullis.mjs', "process.stdout.write('ran the build\\n')\n")
  await unlink(join(dist, chunk))
  const auto = await portcullis(['--help'], env)
  t.equal(auto.code, 0, auto.stderr)
  t.match(auto.stdout, /^usage: portcullis <command>/, 'the sources ran (usage), not the incomplete build')
  const strict = await portcullis(['--help'], { ...env, PORTCULLIS_RUN: 'build' })
  t.equal(strict.code, 2)
  t.match(strict.stderr, `${chunk} changed or is gone`)
})

t.test('start --config from the build proxies Redis and exits 0 on SIGTERM', async (t) => {
  const { env: buildEnv } = await buildInto(t)
  const env = await testEnv()
  t.teardown(env.cleanup)
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const file = join(env.dir, 'portcullis.yaml')
  await writeFile(file, env.yaml({
    targets: `\n  - { name: cache, protocol: redis, listen: 127.0.0.1:0, upstream: { host: ${redis.host}, port: ${redis.port} }, options: { commandInfo: builtin } }`,
  }))
  const child = spawn(process.execPath, [BIN, 'start', '--config', file], {
    env: { ...process.env, ...buildEnv, PORTCULLIS_RUN: 'build' },
    stdio: ['ignore', 'ignore', 'pipe'],
  })
  t.teardown(() => {
    if (child.exitCode === null) child.kill('SIGKILL')
  })
  let log = ''
  child.stderr.setEncoding('utf8').on('data', (d: string) => (log += d))
  const exited = once(child, 'exit')
  await waitFor(() => /"target":"cache".*"listen":"127\.0\.0\.1:\d+".*target ready/.test(log) || child.exitCode !== null, 'the target', 60_000)
  const listen = /"target":"cache","listen":"127\.0\.0\.1:(\d+)"/.exec(log)
  if (!listen) t.comment(log)
  t.ok(listen, 'the target listens')

  const token = await env.token('agent', ['agents'])
  const replies = await resp(Number(listen![1]), [['AUTH', token], ['PING'], ['GET', 'missing']])
  t.same(replies, ['+OK', '+PONG', '$-1'], 'AUTH with a token, PING and GET through the built gateway')

  child.kill('SIGTERM')
  const [code] = (await exited) as [number]
  t.equal(code, 0)
})

/** sends RESP commands one after another and returns the first line of each reply */
async function resp(port: number, commands: string[][]): Promise<string[]> {
  const socket = connect(port, '127.0.0.1')
  await once(socket, 'connect')
  socket.setEncoding('latin1')
  let buffered = ''
  socket.on('data', (d: string) => (buffered += d))
  const out: string[] = []
  try {
    for (const c of commands) {
      socket.write(`*${c.length}\r\n` + c.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join(''))
      await waitFor(() => buffered.includes('\r\n') || socket.destroyed, 'a reply', 20_000)
      const end = buffered.indexOf('\r\n')
      out.push(buffered.slice(0, end))
      buffered = buffered.slice(end + 2)
    }
  } finally {
    socket.destroy()
  }
  return out
}
