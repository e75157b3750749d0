// What CI can check of docker/ without a Docker engine: the demo config passes
// `portcullis check-config`, and the compose file, the Dockerfile and that config agree with each
// other (mounts, ports, secrets' environment, upstream hosts, a non-root multi-stage image). With
// a load balancer in front (compose's haproxy service, two gateway replicas) the ports are its to
// publish, and every replica is checked; packages/gateway/test/compose.test.ts checks the rest.
// Run: node --import tsx bench/check-docker.ts   (exit 0 when consistent, 1 with one line per problem)
import { readdirSync, readFileSync } from 'node:fs'
import { spawnSync } from 'node:child_process'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'
import { parse } from 'yaml'

const root = join(dirname(fileURLToPath(import.meta.url)), '..')
const dockerDir = join(root, 'docker')
const problems: string[] = []
const problem = (where: string, msg: string) => problems.push(`${where}: ${msg}`)

// 1. the config passes the CLI's own check (the contract users run)
const configFile = join(dockerDir, 'portcullis.yaml')
const check = spawnSync(process.execPath, [join(root, 'packages/gateway/bin/portcullis.mjs'), 'check-config', configFile], { encoding: 'utf8' })
if (check.status !== 0) problem('docker/portcullis.yaml', `portcullis check-config failed:\n${(check.stderr || check.stdout).trim()}`)

const config = parse(readFileSync(configFile, 'utf8')) as any
const compose = parse(readFileSync(join(dockerDir, 'compose.yaml'), 'utf8')) as any
const dockerfile = readFileSync(join(dockerDir, 'Dockerfile'), 'utf8')

// 2. the Dockerfile: multi-stage, non-root runtime, the agreed entrypoint and command
const stages = dockerfile.split('\n').filter(l => /^FROM\s/i.test(l))
if (stages.length < 2) problem('docker/Dockerfile', 'expected a multi-stage build')
if (!stages.every(s => /node:20-bookworm-slim/.test(s))) problem('docker/Dockerfile', 'stages should build on node:20-bookworm-slim')
const runtime = dockerfile.slice(dockerfile.lastIndexOf('\nFROM '))
const user = /^USER\s+(\S+)/m.exec(runtime)?.[1]
if (!user || user === 'root' || user === '0') problem('docker/Dockerfile', 'the runtime stage must run as a non-root USER')
const json = (directive: string): string[] | undefined => {
  const m = new RegExp(`^${directive}\\s+(\\[.*\\])\\s*$`, 'm').exec(runtime)
  return m ? (JSON.parse(m[1]) as string[]) : undefined
}
const entrypoint = json('ENTRYPOINT')
const cmd = json('CMD') ?? []
if (JSON.stringify(entrypoint) !== JSON.stringify(['node', 'packages/gateway/bin/portcullis.mjs'])) problem('docker/Dockerfile', 'ENTRYPOINT must be ["node", "packages/gateway/bin/portcullis.mjs"]')
const configPath = cmd[cmd.indexOf('--config') + 1]
if (cmd[0] !== 'start' || !configPath) problem('docker/Dockerfile', 'CMD must be ["start", "--config", FILE]')

// the build stage copies every workspace package the gateway depends on (its manifest before the
// install, its sources after): one it leaves out breaks the frozen install or the bundle
const workspace = new Map<string, string>()
for (const dir of ['packages', 'protocols', 'fixtures', 'bench'].flatMap(d => (d === 'fixtures' || d === 'bench' ? [d] : readdirSync(join(root, d)).map(n => `${d}/${n}`)))) {
  try {
    workspace.set((JSON.parse(readFileSync(join(root, dir, 'package.json'), 'utf8')) as { name: string }).name, dir)
  } catch {
    // not a package
  }
}
const gatewayDeps = Object.keys((JSON.parse(readFileSync(join(root, 'packages/gateway/package.json'), 'utf8')) as { dependencies?: Record<string, string> }).dependencies ?? {})
for (const name of gatewayDeps) {
  const dir = workspace.get(name)
  if (!dir) continue
  if (!new RegExp(`^COPY ${dir}/package\\.json ${dir}/`, 'm').test(dockerfile)) problem('docker/Dockerfile', `the build stage must COPY ${dir}/package.json before the install (${name} is a dependency of the gateway)`)
  if (!new RegExp(`^COPY ${dir}/src ${dir}/src`, 'm').test(dockerfile)) problem('docker/Dockerfile', `the build stage must COPY ${dir}/src (${name} is a dependency of the gateway)`)
}

// 3. compose: the images, the config mount the CMD reads, the recordings volume, ports, secrets
const services = compose?.services ?? {}
if (!String(services.postgres?.image ?? '').startsWith('pgvector/pgvector:')) problem('docker/compose.yaml', 'postgres should run pgvector/pgvector')
if (!/^redis:8/.test(String(services.redis?.image ?? ''))) problem('docker/compose.yaml', 'redis should run redis:8')
const gw = services.portcullis
if (!gw) problem('docker/compose.yaml', 'no portcullis service')
else {
  if (gw.build?.dockerfile !== 'docker/Dockerfile') problem('docker/compose.yaml', 'portcullis should build docker/Dockerfile')
}
// every gateway replica: the services that run the image the first one builds
const replicas = Object.entries<any>(services).filter(([, s]) => s === gw || (gw && s.image === gw.image))
for (const [name, gw] of replicas) {
  const where = `docker/compose.yaml (${name})`
  const mounts: string[] = (gw.volumes ?? []).map(String)
  const mountOf = (target: string) => mounts.find(v => v.split(':')[1] === target)
  const cfgMount = mountOf(configPath)
  if (!cfgMount || !cfgMount.startsWith('./portcullis.yaml:')) problem(where, `mount ./portcullis.yaml at ${configPath} (the image's CMD reads it)`)
  const recDir = config?.recording?.dir
  const recMount = recDir && mountOf(recDir)
  if (!recMount) problem(where, `recording.dir ${recDir} is not a volume`)
  else if (!(recMount.split(':')[0] in (compose.volumes ?? {}))) problem(where, `recordings volume ${recMount.split(':')[0]} is not declared under volumes`)
  // behind HAProxy the replicas publish nothing; the balancer publishes every target's port
  const front = services.haproxy ?? gw
  if (services.haproxy && gw.ports) problem(where, 'a replica behind haproxy publishes no port of its own')
  const published = new Set((front.ports ?? []).map((p: unknown) => String(p).split(':').pop()))
  for (const t of config?.targets ?? []) {
    const port = String(t.listen).split(':').pop()
    if (!published.has(port)) problem(where, `target ${t.name} listens on ${port}, which ${services.haproxy ? 'haproxy' : 'portcullis'} does not publish`)
    const host = t.upstream?.host
    if (host && !(host in services)) problem('docker/portcullis.yaml', `target ${t.name} upstream host ${host} is not a compose service`)
  }
  const adminPort = String(config?.admin?.listen ?? '').split(':').pop()
  const adminPublish = (front.ports ?? []).map(String).find((p: string) => p.split(':').pop() === adminPort)
  if (adminPublish && !adminPublish.startsWith('127.0.0.1:')) problem('docker/compose.yaml', 'publish the admin API on 127.0.0.1 only')
  const env = gw.environment ?? {}
  const names = Array.isArray(env) ? env.map((e: string) => e.split('=')[0]) : Object.keys(env)
  for (const [name, source] of Object.entries<any>(config?.secrets ?? {})) {
    if (source.env && !names.includes(source.env)) problem(where, `secret ${name} reads $${source.env}, which the portcullis service does not set`)
  }
}
const storeHost = config?.controlStore?.postgres?.host ?? config?.controlStore?.redis?.host
if (storeHost && !(storeHost in services)) problem('docker/portcullis.yaml', `controlStore host ${storeHost} is not a compose service`)
{
  for (const name of ['postgres', 'redis', 'control-db']) {
    if (services[name]?.ports) problem('docker/compose.yaml', `${name} publishes ports: clients must go through the gateway`)
  }
}

if (problems.length) {
  for (const p of problems) process.stderr.write(`${p}\n`)
  process.stderr.write(`check-docker: ${problems.length} problem(s)\n`)
  process.exit(1)
}
process.stdout.write(`check-docker: ok (${check.stdout.trim()}; compose, Dockerfile and config agree)\n`)
