// docker/compose.yaml cannot be run here (no Docker engine). It is checked as docker/k8s is: the
// file against the Compose Specification's own JSON schema (the copy the docker-compose npm package
// ships, compiled with ajv), the gateway config both replicas mount through `portcullis
// check-config`, the HAProxy config it mounts through Debian's `haproxy -c`, and the three against
// each other: HAProxy binds every target's port and the admin port, and sends each to that port on
// every replica; the replicas share one control store that is a compose service; only HAProxy
// publishes ports. (bench/check-docker.ts checks the Dockerfile and the single-replica rules.)
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { createRequire } from 'node:module'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Ajv } from 'ajv'
import { parse } from 'yaml'
import { parseConfig } from '@portcullis/core'
import { HAPROXY } from '@portcullis/fixtures/haproxy'
import { portcullis } from './helpers.ts'

const DOCKER = join(dirname(fileURLToPath(import.meta.url)), '../../../docker')
type Obj = Record<string, any>

async function load() {
  const compose = parse(await readFile(join(DOCKER, 'compose.yaml'), 'utf8')) as Obj
  const configText = await readFile(join(DOCKER, 'portcullis.yaml'), 'utf8')
  const config = parseConfig(configText, join(DOCKER, 'portcullis.yaml'))
  const haproxy = await readFile(join(DOCKER, 'haproxy.cfg'), 'utf8')
  return { compose, config, haproxy }
}

/** `frontend NAME` / `backend NAME` sections: their bind ports and server addresses */
function sections(cfg: string) {
  const out: Record<string, { kind: string; binds: string[]; servers: string[] }> = {}
  let current: { kind: string; binds: string[]; servers: string[] } | undefined
  for (const raw of cfg.split('\n')) {
    const line = raw.replace(/#.*$/, '').trim()
    const head = /^(frontend|backend|defaults|global|resolvers)\b\s*(\S*)/.exec(line)
    if (head && !raw.startsWith(' ')) {
      current = { kind: head[1]!, binds: [], servers: [] }
      out[`${head[1]} ${head[2]}`] = current
      continue
    }
    const bind = /^bind\s+(\S+)/.exec(line)
    if (bind && current) current.binds.push(bind[1]!.split(':').pop()!)
    const server = /^server\s+\S+\s+(\S+)/.exec(line)
    if (server && current) current.servers.push(server[1]!)
  }
  return out
}

const replicasOf = (compose: Obj) => Object.entries<Obj>(compose.services).filter(([, s]) => s.image === compose.services.portcullis.image)

t.test("compose.yaml is valid by the Compose Specification's JSON schema", async (t) => {
  const require = createRequire(import.meta.url)
  const schemaFile = join(dirname(require.resolve('docker-compose/package.json')), 'schema/compose-spec.json')
  // draft-07, named by an https URL ajv does not know its draft-07 meta-schema by: compiled as draft-07
  const { $schema: _draft, ...schema } = JSON.parse(await readFile(schemaFile, 'utf8'))
  // formats (durations, ports) are the engine's to read; the structure is what is checked here
  const ajv = new Ajv({ allErrors: true, strict: false, validateFormats: false })
  const validate = ajv.compile(schema)
  const { compose } = await load()
  t.ok(validate(compose), JSON.stringify(validate.errors, null, 2))
  // the validator refuses what the schema refuses
  const bad = structuredClone(compose)
  bad.services.haproxy.ports = [{ target: 'fifteen' }]
  bad.services['portcullis-2'].restart_policy = 'always'
  t.notOk(validate(bad), 'a wrong type and an unknown key are refused')
  t.match(JSON.stringify(validate.errors), /additional properties|must be integer|must NOT have additional/)
})

t.test('the config both replicas mount passes check-config and names a shared control store that compose runs', async (t) => {
  const r = await portcullis(['check-config', join(DOCKER, 'portcullis.yaml')])
  t.equal(r.code, 0, r.stderr)
  t.match(r.stdout, /ok \(3 targets/)
  const { compose, config } = await load()
  const store = config.controlStore.postgres
  t.ok(store, 'a Postgres control store: two replicas cannot share memory')
  t.ok(compose.services[store!.host], `its host ${store!.host} is a compose service`)
  t.equal(compose.services[store!.host].environment.POSTGRES_DB, store!.database)
  t.equal(compose.services[store!.host].environment.POSTGRES_USER, store!.user)
  t.notOk(compose.services[store!.host].ports, 'the control store publishes nothing')
  const replicas = replicasOf(compose)
  t.equal(replicas.length, 2, 'two gateway replicas')
  const secretEnv = Object.values(config.secrets).flatMap((s) => ('env' in s ? [s.env] : []))
  for (const [name, s] of replicas) {
    t.ok(s.volumes.includes('./portcullis.yaml:/etc/portcullis/portcullis.yaml:ro'), `${name} mounts the same config`)
    for (const env of secretEnv) t.ok(env in s.environment, `${name} sets ${env}`)
    t.notOk(s.ports, `${name} publishes no port: HAProxy does`)
    t.ok(s.depends_on[store!.host], `${name} starts after the control store`)
    t.equal(s.read_only, true)
  }
  const recordings = replicas.map(([, s]) => (s.volumes as string[]).find((v) => v.endsWith(`:${config.recording.dir}`))!.split(':')[0])
  t.equal(new Set(recordings).size, 2, 'each replica has a recordings volume of its own')
  for (const v of recordings) t.ok(v! in compose.volumes, `volume ${v} is declared`)
})

t.test("haproxy.cfg passes `haproxy -c` and sends every target's port and the admin port to both replicas", async (t) => {
  const check = spawnSync(HAPROXY, ['-c', '-f', join(DOCKER, 'haproxy.cfg')], { encoding: 'utf8' })
  const out = check.stdout + check.stderr
  t.equal(check.status, 0, out)
  t.match(out, /Configuration file is valid/)
  // outside compose the service names do not resolve; that is the only warning allowed
  const warnings = out.split('\n').filter((l) => l.includes('[WARNING]'))
  t.ok(warnings.every((w) => /could not resolve address/.test(w)), warnings.join('\n'))

  const { compose, config, haproxy } = await load()
  const s = sections(haproxy)
  const replicas = replicasOf(compose).map(([name]) => name)
  const ports = [...config.targets.map((x) => x.listen.split(':').pop()!), config.admin!.listen.split(':').pop()!]
  const published = (compose.services.haproxy.ports as string[]).map((p) => String(p).split(':'))
  for (const port of ports) {
    const front = Object.entries(s).find(([k, v]) => k.startsWith('frontend ') && v.binds.includes(port))
    t.ok(front, `a frontend binds ${port}`)
    const backend = s[`backend ${front![0].slice('frontend '.length)}`]
    t.same(backend?.servers.sort(), replicas.map((r) => `${r}:${port}`).sort(), `port ${port} goes to ${port} on every replica`)
    const pub = published.find((p) => p[p.length - 1] === port)
    t.ok(pub, `compose publishes ${port} on haproxy`)
    if (port === config.admin!.listen.split(':').pop()) t.equal(pub![0], '127.0.0.1', 'the admin API only on loopback')
  }
  t.ok(compose.services.haproxy.volumes.includes('./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro'), 'compose mounts this haproxy.cfg')
})
