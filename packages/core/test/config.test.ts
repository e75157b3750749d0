import t from 'tap'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ConfigError, loadConfig, parseConfig } from '../src/config/parse.ts'
import { parseDuration } from '../src/config/duration.ts'
import { tempDir } from './helpers.ts'

// The example from DESIGN.md, verbatim.
const DESIGN_EXAMPLE = `admin: { listen: 127.0.0.1:9090 }
identity:
  issuers:
    - { issuer: https://idp.example.com/, audience: portcullis, jwks: https://idp.example.com/jwks.json, groupsClaim: groups }
secrets:
  pg: { env: PG_PASSWORD }                 # also: { file: PATH } (re-read on change), { exec: [cmd, args], ttl: 5m }
recording: { dir: ./recordings, onFailure: block }
audit: { destination: stdout }
targets:
  - { name: docs-db, protocol: postgres, listen: 127.0.0.1:15432,
      upstream: { host: 127.0.0.1, port: 5432, database: app, user: app, password: { secret: pg } } }
rules:
  - { id: agents-read, when: { groups: [agents], class: [read] }, action: allow }
  - { id: agents-write, when: { groups: [agents], class: [write, delete] }, action: approve, approvers: [dba] }
  - { id: no-bulk, when: { class: [bulk-delete, schema-change, admin] }, action: block }
masking:
  - { id: pii, when: { targets: [docs-db] }, columns: ["customers.email"], detectors: [email, api-key], method: redact }
`

function issuesOf(t: Tap, text: string, file = 'docs.yaml') {
  try {
    parseConfig(text, file)
  } catch (err) {
    t.type(err, ConfigError)
    return (err as ConfigError).issues
  }
  t.fail('expected a ConfigError')
  return []
}
type Tap = { type(a: unknown, b: string | Function): unknown; fail(m: string): unknown }

t.test('the DESIGN.md example parses, with defaults filled in', async t => {
  const c = parseConfig(DESIGN_EXAMPLE, 'design.yaml')
  t.equal(c.file, 'design.yaml')
  t.same(c.admin, { listen: '127.0.0.1:9090' })
  t.same(c.identity.issuers[0], {
    issuer: 'https://idp.example.com/',
    audience: 'portcullis',
    jwks: 'https://idp.example.com/jwks.json',
    groupsClaim: 'groups',
    algorithms: ['RS256', 'ES256', 'EdDSA'],
    clockSkew: 30_000,
    requireExp: true,
  })
  t.same(c.secrets.pg, { env: 'PG_PASSWORD' })
  t.same(c.recording, { dir: './recordings', onFailure: 'block' })
  t.same(c.approvals, { timeoutMs: 300_000 })
  const target = c.targets[0]
  t.same(target.limits, { maxConnections: 1000, maxMessageBytes: 64 * 1024 * 1024, idleTimeoutMs: 3_600_000, handshakeTimeoutMs: 10_000 })
  t.same(target.upstream.password, { secret: 'pg' })
  t.same(target.options, {})
  t.same(c.rules.map(r => [r.id, r.action]), [['agents-read', 'allow'], ['agents-write', 'approve'], ['no-bulk', 'block']])
  t.same(c.masking[0].columns, ['customers.email'])
})

t.test('durations accept 30s, 5m, 1h and milliseconds', async t => {
  t.equal(parseDuration('30s'), 30_000)
  t.equal(parseDuration('5m'), 300_000)
  t.equal(parseDuration('1h'), 3_600_000)
  t.equal(parseDuration('250ms'), 250)
  t.equal(parseDuration(1500), 1500)
  t.throws(() => parseDuration('soon'))
  const c = parseConfig(`approvals: { timeout: 90s, webhook: { url: "http://127.0.0.1:1/hook", format: slack } }
targets:
  - { name: a, protocol: redis, listen: "127.0.0.1:1", upstream: { host: h, port: 1 }, limits: { idleTimeout: 5m, handshakeTimeout: 2500 } }
rules:
  - { id: w, when: {}, action: approve, approvers: [dba], window: 10m, timeout: 1h }`)
  t.equal(c.approvals.timeoutMs, 90_000)
  t.same(c.approvals.webhook, { url: 'http://127.0.0.1:1/hook', format: 'slack' })
  t.equal(c.targets[0].limits.idleTimeoutMs, 300_000)
  t.equal(c.targets[0].limits.handshakeTimeoutMs, 2500)
  t.equal(c.rules[0].window, 600_000)
  t.equal(c.rules[0].timeout, 3_600_000)
})

const BASE = `secrets:
  pg: { env: PG }
targets:
  - name: docs-db
    protocol: postgres
    listen: 127.0.0.1:15432
    upstream:
      host: 127.0.0.1
      port: 5432
      password: { secret: pg }
`

t.test('a wrong type names file, line and key path', async t => {
  const issues = issuesOf(t, BASE.replace('port: 5432', 'port: "5432"'))
  t.same(issues, [{ file: 'docs.yaml', line: 9, path: 'targets.0.upstream.port', message: 'must be integer' }])
})

t.test('an unknown key is an error on its own line', async t => {
  const issues = issuesOf(t, BASE.replace('    listen: 127.0.0.1:15432\n', '    listen: 127.0.0.1:15432\n    colour: red\n'))
  t.same(issues, [{ file: 'docs.yaml', line: 7, path: 'targets.0.colour', message: 'unknown key' }])
})

t.test('a missing required key points at the object that lacks it', async t => {
  const issues = issuesOf(t, BASE.replace('    protocol: postgres\n', ''))
  t.same(issues, [{ file: 'docs.yaml', line: 4, path: 'targets.0.protocol', message: 'is required' }])
})

t.test('an inline secret is refused and says how to reference one', async t => {
  const issues = issuesOf(t, BASE.replace('password: { secret: pg }', 'password: hunter2'))
  t.equal(issues.length, 1)
  t.match(issues[0], { line: 10, path: 'targets.0.upstream.password', message: /secrets are referenced, never inline/ })
  t.notOk(JSON.stringify(issues).includes('hunter2'), 'the error does not repeat the secret')
})

t.test('a bad duration names the key and the accepted forms', async t => {
  const issues = issuesOf(t, BASE + 'approvals:\n  timeout: soon\n')
  t.same(issues, [{ file: 'docs.yaml', line: 12, path: 'approvals.timeout', message: 'must be a duration such as 30s, 5m, 1h or a number of milliseconds' }])
})

t.test('the error message lists each issue as file:line: key: message', async t => {
  const text = BASE.replace('port: 5432', 'port: x').replace('protocol: postgres', 'protocol: mysql')
  try {
    parseConfig(text, 'docs.yaml')
    t.fail('expected an error')
  } catch (err) {
    const e = err as ConfigError
    t.equal(e.code, 'CONFIG_INVALID')
    t.match(e.message, /^docs\.yaml:5: targets\.0\.protocol: must be one of postgres, redis, http, mcp$/m)
    t.match(e.message, /^docs\.yaml:9: targets\.0\.upstream\.port: must be integer$/m)
  }
})

t.test('references and rules are checked beyond their shape', async t => {
  const issues = issuesOf(
    t,
    BASE.replace('{ secret: pg }', '{ secret: pgx }') +
      `rules:
  - { id: r1, when: { targets: [docs-dbb] }, action: allow }
  - { id: r1, when: { statement: "(unclosed" }, action: block }
  - { id: r3, when: {}, action: approve }
masking:
  - { id: m, detectors: [emial], method: redact }
`,
  )
  const byPath = Object.fromEntries(issues.map(i => [i.path, i]))
  t.match(byPath['targets.0.upstream.password.secret'], { line: 10, message: 'unknown secret "pgx" (define it under secrets)' })
  t.match(byPath['rules.0.when.targets'], { line: 12, message: 'unknown target "docs-dbb"' })
  t.match(byPath['rules.1.id'], { line: 13, message: /duplicate rule id/ })
  t.match(byPath['rules.1.when.statement'], { line: 13, message: /bad pattern/ })
  t.match(byPath['rules.2.approvers'], { line: 14, message: /needs approvers/ })
  t.match(byPath['masking.0.detectors.0'], { line: 16 })
})

t.test('identity issuers: HS algorithms need a secret and alg none is refused', async t => {
  const issues = issuesOf(
    t,
    `identity:
  issuers:
    - { issuer: a, audience: b, jwksFile: /k.json, algorithms: [HS256] }
    - { issuer: c, audience: d, jwksFile: /k.json, algorithms: [none] }
    - { issuer: e, audience: f }
`,
  )
  t.same(
    issues.map(i => [i.line, i.path]),
    [
      [3, 'identity.issuers.0.algorithms'],
      [4, 'identity.issuers.1.algorithms'],
      [5, 'identity.issuers.2'],
    ],
  )
})

t.test('YAML syntax errors carry a line too', async t => {
  const issues = issuesOf(t, 'targets:\n  - { name: a\n  protocol: [\n')
  t.ok(issues.length > 0)
  t.ok(issues.every(i => i.file === 'docs.yaml' && i.line >= 2))
})

t.test('loadConfig reads a file and names it in errors', async t => {
  const dir = await tempDir(t)
  const good = join(dir, 'good.yaml')
  const bad = join(dir, 'bad.yaml')
  await writeFile(good, DESIGN_EXAMPLE)
  await writeFile(bad, BASE.replace('port: 5432', 'port: -1'))
  const loaded = await loadConfig(good)
  t.equal(loaded.file, good)
  t.equal(loaded.recording.dir, join(dir, 'recordings'), 'relative paths are relative to the config file')
  const err = (await loadConfig(bad).catch((e: unknown) => e)) as ConfigError
  t.match(err.issues, [{ file: bad, line: 9, path: 'targets.0.upstream.port' }])
  await t.rejects(loadConfig(join(dir, 'missing.yaml')), { code: 'CONFIG_INVALID' })
})

t.test('credentials around the edges are references too: webhook URL, signing keys', async t => {
  const c = parseConfig(`admin: { listen: "127.0.0.1:9090", groups: [ops], metricsAuth: true }
secrets:
  slack: { env: SLACK_HOOK }
  seal: { file: /run/secrets/seal }
approvals: { webhook: { url: { secret: slack }, format: slack } }
recording: { dir: /tmp/r, sign: { hmacKey: { secret: seal }, ed25519Key: { secret: seal } } }
`)
  t.same(c.approvals.webhook, { url: { secret: 'slack' }, format: 'slack' })
  t.same(c.recording.sign, { hmacKey: { secret: 'seal' }, ed25519Key: { secret: 'seal' } })
  t.same(c.admin, { listen: '127.0.0.1:9090', groups: ['ops'], metricsAuth: true })
  const issues = issuesOf(t, `approvals: { webhook: { url: { secret: nope } } }\n`)
  t.same(issues.map(i => [i.line, i.path]), [[1, 'approvals.webhook.url.secret']])
})

t.test('two targets cannot share a name or a listen address', async t => {
  const issues = issuesOf(
    t,
    BASE +
      `  - { name: docs-db, protocol: redis, listen: "127.0.0.1:15432", upstream: { host: h, port: 1 } }
`,
  )
  t.same(
    issues.map(i => [i.line, i.path]),
    [
      [11, 'targets.1.name'],
      [11, 'targets.1.listen'],
    ],
  )
})

t.test('targets may all listen on port 0: each gets its own ephemeral port', async t => {
  const c = parseConfig(`targets:
  - { name: a, protocol: redis, listen: "127.0.0.1:0", upstream: { host: h, port: 1 } }
  - { name: b, protocol: redis, listen: "127.0.0.1:0", upstream: { host: h, port: 2 } }
`)
  t.same(c.targets.map(x => x.listen), ['127.0.0.1:0', '127.0.0.1:0'])
})

t.test('a value that fits none of its allowed shapes gets one sentence, not every branch', async t => {
  const issues = issuesOf(
    t,
    `secrets:
  a: { env: A, file: /x }
  b: { vault: x }
rules:
  - id: r
    when:
      facts: { topK: { gt: "x" } }
    action: allow
`,
  )
  t.same(issues, [
    { file: 'docs.yaml', line: 2, path: 'secrets.a', message: 'must be one of { env: VAR }, { file: PATH } or { exec: [cmd, args…], ttl: 5m }' },
    { file: 'docs.yaml', line: 3, path: 'secrets.b', message: 'must be one of { env: VAR }, { file: PATH } or { exec: [cmd, args…], ttl: 5m }' },
    { file: 'docs.yaml', line: 7, path: 'rules.0.when.facts.topK', message: 'must be a value (text, number, true/false) or a comparison { gt, gte, lt, lte, eq } with numbers' },
  ])
})

t.test('an http target names the header that carries its upstream credential', async t => {
  const c = parseConfig(`secrets:
  openai: { env: OPENAI_API_KEY }
targets:
  - { name: llm, protocol: http, listen: "127.0.0.1:18080", upstream: { url: "https://api.openai.com", auth: { header: authorization, secret: { secret: openai } } } }
  - { name: vec, protocol: http, listen: "127.0.0.1:18081", upstream: { url: "https://x.pinecone.io", auth: { header: Api-Key, secret: { secret: openai } } } }
  - { name: az, protocol: http, listen: "127.0.0.1:18082", upstream: { url: "https://az", auth: { header: authorization, value: "Token {secret}", secret: { secret: openai } } } }
`)
  t.same(c.targets.map(x => x.upstream.auth?.value), ['Bearer {secret}', '{secret}', 'Token {secret}'])
  const issues = issuesOf(t, `secrets:
  k: { env: K }
targets:
  - { name: llm, protocol: http, listen: "127.0.0.1:1", upstream: { url: "http://u", auth: { header: x, value: "static", secret: { secret: k } } } }
  - { name: pg, protocol: postgres, listen: "127.0.0.1:2", upstream: { url: "http://u" } }
`)
  t.same(issues.map(i => [i.line, i.path, i.message]), [
    [4, 'targets.0.upstream.auth.value', 'must contain {secret} where the credential goes'],
    [5, 'targets.1.upstream', 'postgres targets need upstream.host and upstream.port'],
  ])
})

const UPLOAD = `secrets:
  s3key: { env: S3_KEY }
  s3secret: { file: /run/secrets/s3 }
recording:
  dir: ./recordings
  onFailure: block
  upload:
    s3: { endpoint: "http://minio:9000", bucket: pcr-archive, prefix: gw, accessKeyId: { secret: s3key }, secretAccessKey: { secret: s3secret } }
`

t.test('recording.upload parses with its defaults: region, path style with an endpoint, prefix as a folder, 1 GiB spool', async t => {
  const c = parseConfig(UPLOAD, 'up.yaml')
  t.same(c.recording.upload, {
    s3: {
      endpoint: 'http://minio:9000',
      bucket: 'pcr-archive',
      prefix: 'gw/',
      region: 'us-east-1',
      accessKeyId: { secret: 's3key' },
      secretAccessKey: { secret: 's3secret' },
      forcePathStyle: true,
    },
    maxSpoolBytes: 1024 ** 3,
    maxRetryDelayMs: 60_000,
  })
  const sized = parseConfig(UPLOAD.replace('secretAccessKey: { secret: s3secret } }', 'secretAccessKey: { secret: s3secret } }\n    maxSpool: 512MiB\n    maxRetryDelay: 10s'), 'up.yaml')
  t.equal(sized.recording.upload!.maxSpoolBytes, 512 * 1024 ** 2)
  t.equal(sized.recording.upload!.maxRetryDelayMs, 10_000)
  // without keys: the AWS SDK's default chain (IRSA, instance role, env)
  const aws = parseConfig('recording:\n  upload:\n    s3: { bucket: pcr-archive, region: eu-west-1 }\n', 'aws.yaml')
  t.same(aws.recording.upload!.s3, { bucket: 'pcr-archive', prefix: '', region: 'eu-west-1', forcePathStyle: false })
})

t.test('recording.upload mistakes name file, line and key', async t => {
  const inline = issuesOf(t, UPLOAD.replace('accessKeyId: { secret: s3key }', 'accessKeyId: AKIAEXAMPLE'), 'up.yaml')
  t.match(inline, [{ file: 'up.yaml', line: 8, path: 'recording.upload.s3.accessKeyId', message: /never inline/ }])
  const unknown = issuesOf(t, UPLOAD.replace('{ secret: s3secret }', '{ secret: nope }'), 'up.yaml')
  t.match(unknown, [{ line: 8, path: 'recording.upload.s3.secretAccessKey.secret', message: /unknown secret "nope"/ }])
  const half = issuesOf(t, UPLOAD.replace(', secretAccessKey: { secret: s3secret }', ''), 'up.yaml')
  t.match(half, [{ line: 8, path: 'recording.upload.s3', message: /go together/ }])
  const typo = issuesOf(t, UPLOAD.replace('prefix: gw', 'perfix: gw'), 'up.yaml')
  t.match(typo, [{ line: 8, path: 'recording.upload.s3.perfix', message: 'unknown key' }])
  const size = issuesOf(t, UPLOAD + '    maxSpool: 1GB\n', 'up.yaml')
  t.match(size, [{ line: 9, path: 'recording.upload.maxSpool', message: /size such as 512MiB/ }])
  const bucket = issuesOf(t, UPLOAD.replace('pcr-archive', 'PCR_Archive'), 'up.yaml')
  t.match(bucket, [{ line: 8, path: 'recording.upload.s3.bucket', message: /bucket name/ }])
})

t.test("the README's configuration reference parses, recording.upload included", async t => {
  const { readFile } = await import('node:fs/promises')
  const md = await readFile(new URL('../../../README.md', import.meta.url), 'utf8')
  const from = md.indexOf('```yaml', md.indexOf('## Configuration reference')) + '```yaml'.length
  const c = parseConfig(md.slice(from, md.indexOf('```', from)), 'README.md')
  t.equal(c.recording.upload?.s3.bucket, 'pcr-archive')
  t.equal(c.recording.upload?.maxSpoolBytes, 1024 ** 3)
})

t.test('controlStore: postgres with a secret password, lease, heartbeat and poll; defaults without it', async t => {
  const none = parseConfig(BASE, 'docs.yaml')
  t.same(none.controlStore, { leaseMs: 15_000, heartbeatMs: 5_000, pollMs: 2_000 }, 'memory by default')
  const config = parseConfig(
    BASE.replace('  pg: { env: PG }\n', '  pg: { env: PG }\n  ctl: { env: CTL }\n') +
      'controlStore:\n  postgres: { host: db.internal, database: portcullis, user: gateway, password: { secret: ctl }, tls: { enabled: true } }\n  lease: 3s\n  heartbeat: 1s\n  poll: 500ms\n',
    'docs.yaml',
  )
  t.same(config.controlStore, {
    leaseMs: 3000,
    heartbeatMs: 1000,
    pollMs: 500,
    postgres: { host: 'db.internal', port: 5432, database: 'portcullis', user: 'gateway', password: { secret: 'ctl' }, tls: { enabled: true }, schema: 'portcullis_control' },
  })
})

t.test("workers: 1 by default, 'auto' or a whole number; anything else names its line", async t => {
  t.equal(parseConfig(BASE, 'docs.yaml').workers, 1, 'one process, no cluster, by default')
  t.equal(parseConfig(BASE + 'workers: auto\n', 'docs.yaml').workers, 'auto')
  t.equal(parseConfig(BASE + 'workers: 4\n', 'docs.yaml').workers, 4)
  for (const bad of ['0', '2.5', 'all', '-1', '1000'])
    t.match(issuesOf(t, BASE + `workers: ${bad}\n`), [{ file: 'docs.yaml', line: 11, path: 'workers', message: "must be 'auto' or a whole number from 1 to 256" }], `workers: ${bad}`)
})

t.test('controlStore mistakes name file, line and key', async t => {
  t.same(issuesOf(t, BASE + 'controlStore:\n  postgres: { host: h, database: d, user: u, pasword: x }\n'), [
    { file: 'docs.yaml', line: 12, path: 'controlStore.postgres.pasword', message: 'unknown key' },
  ])
  t.match(issuesOf(t, BASE + 'controlStore:\n  postgres: { host: h, database: d, user: u, password: hunter2 }\n'), [
    { line: 12, path: 'controlStore.postgres.password', message: /secrets are referenced/ },
  ])
  t.match(issuesOf(t, BASE + 'controlStore:\n  postgres: { host: h, database: d, user: u, password: { secret: nope } }\n'), [
    { path: 'controlStore.postgres.password', message: /nope/ },
  ])
  t.same(issuesOf(t, BASE + 'controlStore:\n  lease: 2s\n  heartbeat: 5s\n'), [
    { file: 'docs.yaml', line: 13, path: 'controlStore.heartbeat', message: 'heartbeat must be at most half the lease' },
  ])
  t.same(issuesOf(t, BASE + 'controlStore:\n  postgres: { database: d, user: u }\n'), [
    { file: 'docs.yaml', line: 12, path: 'controlStore.postgres.host', message: 'is required' },
  ])
})

t.test('controlStore: redis, or postgres, never both', async t => {
  const config = parseConfig(
    BASE.replace('  pg: { env: PG }\n', '  pg: { env: PG }\n  ctl: { env: CTL }\n') + 'controlStore:\n  redis: { host: cache.internal, password: { secret: ctl }, db: 2 }\n',
    'docs.yaml',
  )
  t.same(config.controlStore.redis, { host: 'cache.internal', port: 6379, password: { secret: 'ctl' }, db: 2, prefix: 'portcullis:control:' })
  t.same(issuesOf(t, BASE + 'controlStore:\n  postgres: { host: h, database: d, user: u }\n  redis: { host: h }\n'), [
    { file: 'docs.yaml', line: 13, path: 'controlStore.redis', message: 'one control store: postgres or redis, not both' },
  ])
})

t.test('minApprovals: a whole number from 1 on approve rules only, named by file, line and key when wrong', async t => {
  const rules = (r: string) => `targets:
  - { name: a, protocol: redis, listen: "127.0.0.1:1", upstream: { host: h, port: 1 } }
rules:
${r}`
  const c = parseConfig(rules(`  - { id: two, when: {}, action: approve, approvers: [dba], minApprovals: 2 }`))
  t.equal(c.rules[0].minApprovals, 2)
  t.equal(parseConfig(rules(`  - { id: one, when: {}, action: approve, approvers: [dba] }`)).rules[0].minApprovals, undefined, 'default: one approver')
  t.match(issuesOf(t, rules(`  - { id: zero, when: {}, action: approve, approvers: [dba], minApprovals: 0 }`)), [{ path: 'rules.0.minApprovals', line: 4 }])
  t.match(issuesOf(t, rules(`  - { id: half, when: {}, action: approve, approvers: [dba], minApprovals: 1.5 }`)), [{ path: 'rules.0.minApprovals' }])
  t.match(issuesOf(t, rules(`  - { id: allow, when: {}, action: allow, minApprovals: 2 }`)), [{ path: 'rules.0.minApprovals', message: /approve rules only/ }])
})

t.test('an mcp target names existing, non-mcp targets and needs no upstream', async t => {
  const mcp = (targets: string) =>
    DESIGN_EXAMPLE.replace('rules:\n', `  - { name: agents-mcp, protocol: mcp, listen: 127.0.0.1:18443, targets: ${targets} }\nrules:\n`)
  const ok = parseConfig(mcp('[docs-db]'), 'docs.yaml')
  t.same(ok.targets[1]!.targets, ['docs-db'])
  t.same(ok.targets[1]!.upstream, {})
  t.same(issuesOf(t, mcp('[nope]')).map(i => [i.path, i.message]), [['targets.1.targets.0', 'unknown target "nope"']])
  t.same(issuesOf(t, mcp('[agents-mcp]')).map(i => i.path), ['targets.1.targets.0'])
  t.same(issuesOf(t, mcp('[]')).map(i => i.path), ['targets.1.targets'])
  // a postgres target still needs its upstream, and may not name targets
  const bare = DESIGN_EXAMPLE.replace('rules:\n', '  - { name: bare, protocol: postgres, listen: 127.0.0.1:15433, targets: [docs-db] }\nrules:\n')
  t.same(issuesOf(t, bare).map(i => i.path).sort(), ['targets.1', 'targets.1.targets', 'targets.1.upstream'])
})

t.test('an mcp target\'s options are checked: a typo or a wrong type is an error, never the default', async t => {
  const mcp = (options: string) =>
    DESIGN_EXAMPLE.replace('rules:\n', `  - name: agents-mcp\n    protocol: mcp\n    listen: 127.0.0.1:18443\n    targets: [docs-db]\n    options:\n${options}rules:\n`)
  const ok = parseConfig(mcp('      stateless: true\n      maxRows: 50\n      poolSize: 2\n      path: /agents\n      resource: https://mcp.example.com/agents\n      authorizationServers: [https://idp.example.com/]\n'), 'docs.yaml')
  t.same(ok.targets[1].options, { stateless: true, maxRows: 50, poolSize: 2, path: '/agents', resource: 'https://mcp.example.com/agents', authorizationServers: ['https://idp.example.com/'] })
  // line 16 is `options:`; each bad key is reported on its own line
  const issues = issuesOf(t, mcp('      stateless: "true"\n      maxrows: 50\n      poolSize: 0\n      maxRows: "100"\n      sessionIdleMs: 1.5\n      path: mcp\n      resource: not a url\n'))
  t.same(issues.map(i => [i.line, i.path, i.message.replace(/ \(mcp options: .*\)$/, '')]), [
    [17, 'targets.1.options.stateless', 'must be true or false'],
    [18, 'targets.1.options.maxrows', 'unknown key'],
    [19, 'targets.1.options.poolSize', 'must be a whole number above 0'],
    [20, 'targets.1.options.maxRows', 'must be a whole number above 0'],
    [21, 'targets.1.options.sessionIdleMs', 'must be a whole number above 0'],
    [22, 'targets.1.options.path', 'must be a path starting with / (no query)'],
    [23, 'targets.1.options.resource', 'must be an http(s) URL'],
  ])
  t.match(issues[1].message, /maxRows/, 'the unknown key\'s message lists the known ones')
  t.match(new ConfigError(issues).message, /^docs\.yaml:18: targets\.1\.options\.maxrows: unknown key/m)
  t.ok(parseConfig(DESIGN_EXAMPLE.replace('password: { secret: pg } }', 'password: { secret: pg } }, options: { approvalMode: defer, explainTimeout: 500 }'), 'docs.yaml'))
})

t.test('every target\'s options are checked for its protocol: a typo, a wrong type or a misspelt value is an error, never the default', async t => {
  const pgOptions = (options: string) => DESIGN_EXAMPLE.replace('password: { secret: pg } }', `password: { secret: pg } }, options: ${options}`)
  const messages = (yaml: string) => issuesOf(t, yaml).map(i => [i.path, i.message.replace(/ \((postgres|redis|http) options: .*\)$/, '')])
  t.same(messages(pgOptions('{ approvalMode: deffer, explainTimeout: "500", requireTLS: true }')), [
    ['targets.0.options.approvalMode', 'must be one of wait, defer'],
    ['targets.0.options.explainTimeout', 'must be a whole number above 0'],
    ['targets.0.options.requireTLS', 'unknown key'],
  ])
  t.match(issuesOf(t, pgOptions('{ requireTLS: true }'))[0].message, /postgres options: sniff, approvalMode, requireTls, explainTimeout/, 'the message lists the keys the protocol knows')
  const redis = (options: string) => DESIGN_EXAMPLE.replace('rules:\n', `  - { name: cache, protocol: redis, listen: 127.0.0.1:16380, upstream: { host: 127.0.0.1, port: 6379 }, options: ${options} }\nrules:\n`)
  t.ok(parseConfig(redis('{ bulkDeleteKeys: 10, scripts: write, pingBeforeAuth: true, commandInfo: builtin, multiplex: false, approvalMode: defer, sniff: true }'), 'docs.yaml'))
  t.same(messages(redis('{ multiplex: "no", scripts: read, bulkDeleteKeys: 0, commandinfo: builtin }')), [
    ['targets.1.options.multiplex', 'must be true or false'],
    ['targets.1.options.scripts', 'must be one of admin, write'],
    ['targets.1.options.bulkDeleteKeys', 'must be a whole number above 0'],
    ['targets.1.options.commandinfo', 'unknown key'],
  ])
  const http = (options: string) => DESIGN_EXAMPLE.replace('rules:\n', `  - name: llm\n    protocol: http\n    listen: 127.0.0.1:18080\n    upstream: { url: 'http://127.0.0.1:9/' }\n    options: ${options}\nrules:\n`)
  const good = parseConfig(
    http("{ profile: openai, upstreamTimeout: 30s, upstreamBodyTimeout: 600000, maskRequests: true, unmaskedResponseTypes: ['audio/*'], tokenHeader: x-token, recordBodyBytes: 0, routes: [{ method: [GET, POST], path: '/admin/*', operation: admin, class: admin, body: json }], mcp: { tools: [{ name: 'delete_*', class: delete }] } }"),
    'docs.yaml',
  )
  t.equal(good.targets[1].options.profile, 'openai')
  t.same(messages(http("{ profile: openAI, upstreamTimeout: soon, routes: [{ method: GET, class: admin }, { path: '/x', class: superuser }], mcp: { tools: [{ name: x }] }, unmaskedResponseTypes: [audio] }")), [
    ['targets.1.options.profile', 'must be one of openai, qdrant, pinecone, mcp, generic'],
    ['targets.1.options.upstreamTimeout', 'must be a number of ms above 0 or a duration such as 30s'],
    // a route rule without a path was silently no rule at all: the profile's (laxer) class applied
    ['targets.1.options.routes', 'item 0 needs path'],
    ['targets.1.options.mcp', 'item 0 needs class'],
    ['targets.1.options.unmaskedResponseTypes', 'must be a list of media types such as audio/* or image/png'],
  ])
  t.same(messages(http("{ routes: [{ path: '/x', class: superuser }] }")), [['targets.1.options.routes', 'item 0: class must be one of session, read, write, delete, bulk-delete, schema-change, admin']])
})
