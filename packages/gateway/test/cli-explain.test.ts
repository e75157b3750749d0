import t from 'tap'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { portcullis, testEnv } from './helpers.ts'

t.test('explain classifies SQL without an upstream and shows the deciding rule', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const file = join(env.dir, 'p.yaml')
  await writeFile(file, env.yaml())
  const res = await portcullis([
    'explain', '--protocol', 'postgres', '--sql', "UPDATE customers SET email = 'x@y.z' WHERE id = 1",
    '--config', file, '--target', 'lines', '--subject', 'ann', '--groups', 'agents',
  ])
  t.equal(res.code, 0, res.stderr)
  const out = JSON.parse(res.stdout)
  t.equal(out.class, 'write')
  t.same(out.resources, ['customers'])
  t.notMatch(out.statement, /x@y\.z/, 'literals are normalized away')
  t.equal(out.statements.length, 1)
  t.same(out.decision, { action: 'approve', rule: 'agents-write', reason: out.decision.reason })

  const missing = await portcullis(['explain', '--protocol', 'postgres'])
  t.equal(missing.code, 2)
  t.match(missing.stderr, /needs --sql/)
})

t.test('explain classifies Redis commands and HTTP API requests', async (t) => {
  const redis = await portcullis(['explain', '--protocol', 'redis', '--command', 'HGETALL customer:1'])
  t.equal(redis.code, 0, redis.stderr)
  t.match(JSON.parse(redis.stdout), { class: 'read', resources: ['customer:1'], statements: [{ class: 'read' }] })

  const flush = await portcullis(['explain', '--protocol', 'redis', '--command', 'FLUSHALL'])
  t.not(JSON.parse(flush.stdout).class, 'read', 'FLUSHALL is not a read')

  const http = await portcullis([
    'explain', '--protocol', 'http', '--request', 'POST /v1/chat/completions', '--profile', 'openai',
    '--body', '{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}',
  ])
  t.equal(http.code, 0, http.stderr)
  const op = JSON.parse(http.stdout)
  t.equal(op.statement, 'POST /v1/chat/completions')
  t.equal(op.facts.model, 'gpt-4o')
})

t.test('explain on a scoped target: says which claims it needs, and with --claims shows the scope and its refusals', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const file = join(env.dir, 'scoped.yaml')
  await writeFile(file, env.yaml({
    targets: `
  - { name: docs-db, protocol: postgres, listen: 127.0.0.1:0, upstream: { host: 127.0.0.1, port: 1, user: portcullis_app }, scope: { settings: { app.tenant: '\${claims.tenant}' } } }
  - { name: cache, protocol: redis, listen: 127.0.0.1:0, upstream: { host: 127.0.0.1, port: 1 }, scope: { keys: ['tenant:\${claims.tenant}:*'] } }`,
    rules: `
  - { id: all, when: { groups: [agents] }, action: allow }`,
  }))
  const pgArgs = (sql: string, ...rest: string[]) => ['explain', '--protocol', 'postgres', '--sql', sql, '--config', file, '--target', 'docs-db', '--subject', 'ann', '--groups', 'agents', ...rest]

  const bare = await portcullis(pgArgs("SET app.tenant = 'globex'"))
  t.equal(bare.code, 0, bare.stderr)
  const out = JSON.parse(bare.stdout)
  t.same(out.decision.action, 'allow', 'the rules alone allow it')
  t.same(out.scope.needs, ['claims.tenant'])
  t.match(out.scope.note, /--claims '\{"tenant":"…"\}'/)

  const refused = JSON.parse((await portcullis(pgArgs("SET app.tenant = 'globex'", '--claims', '{"tenant":"acme"}'))).stdout)
  t.match(refused.scope, { applied: 'app.tenant="acme"', refuse: /^scope: / }, 'the scope refuses the SET')
  const allowed = JSON.parse((await portcullis(pgArgs('SELECT * FROM documents', '--claims', '{"tenant":"acme"}'))).stdout)
  t.same(allowed.scope, { needs: ['claims.tenant'], applied: 'app.tenant="acme"' }, 'a plain read runs under the scope')
  const noClaim = JSON.parse((await portcullis(pgArgs('SELECT 1', '--claims', '{"tenant":42}'))).stdout)
  t.match(noClaim.scope, { refused: /claim claims\.tenant is not a string/, note: /refused at login/ })
  const bad = await portcullis(pgArgs('SELECT 1', '--claims', 'not json'))
  t.equal(bad.code, 2)
  t.match(bad.stderr, /--claims must be a JSON object/)

  const redis = (line: string) => portcullis(['explain', '--protocol', 'redis', '--command', line, '--config', file, '--target', 'cache', '--subject', 'ann', '--groups', 'agents', '--claims', '{"tenant":"acme"}'])
  t.match(JSON.parse((await redis('GET tenant:globex:doc1')).stdout).scope, { applied: 'keys=tenant:acme:*', refuse: /outside this session's scope/ })
  t.match(JSON.parse((await redis('SCAN 0')).stdout).scope, { rewritten: 'SCAN 0 MATCH tenant:acme:*' })
  t.notOk('refuse' in JSON.parse((await redis('GET tenant:acme:doc1')).stdout).scope)
})

t.test('explain of an mcp target names the targets its tools reach (that is where a call is decided)', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const file = join(env.dir, 'p.yaml')
  const targets = `
  - { name: lines, protocol: redis, listen: 127.0.0.1:0, upstream: { host: 127.0.0.1, port: 1 } }
  - { name: agents-mcp, protocol: mcp, listen: 127.0.0.1:0, targets: [lines] }`
  await writeFile(file, env.yaml({ targets }))
  const res = await portcullis(['explain', '--protocol', 'redis', '--command', 'GET k', '--config', file, '--target', 'agents-mcp'])
  t.equal(res.code, 2)
  t.match(res.stderr, /agents-mcp is an mcp target: .* use --target lines/)
  const ok = await portcullis(['explain', '--protocol', 'redis', '--command', 'GET k', '--config', file, '--target', 'lines', '--groups', 'agents'])
  t.equal(ok.code, 0, ok.stderr)
  t.equal(JSON.parse(ok.stdout).decision.action, 'allow')
})
