import t from 'tap'
import { Redis } from 'ioredis'
import { RawClient, startGateway, type Gateway } from './harness.ts'

const RULES = `
  - { id: agents-rw, when: { groups: [agents], class: [read, write] }, action: allow }
  - { id: deletes-need-ok, when: { groups: [agents], class: [delete] }, action: approve, approvers: [ops] }
  - { id: wide-knn, when: { facts: { topK: { gt: 100 } } }, action: block, reason: top-k over 100 }
  - { id: allow-foo, when: { operations: [FOO.PING] }, action: allow }`

async function pending(gw: Gateway): Promise<string> {
  for (;;) {
    const p = gw.core.approvals.list().find(r => r.status === 'pending')
    if (p) return p.id
    await new Promise(r => setTimeout(r, 20))
  }
}
const approver = { subject: 'alice', groups: ['ops'], issuer: 'test' }

t.test('an approved command runs and later pipelined replies keep their order', async t => {
  const gw = await startGateway(t, { rules: RULES })
  const c = await RawClient.connect(gw.port)
  t.teardown(() => c.close())
  c.send(`AUTH ${await gw.token()}\r\nSET a 1\r\nDEL a\r\nGET a\r\nSET b 2\r\n`)
  t.equal(await c.lines(2), '+OK\r\n+OK\r\n')
  const id = await pending(gw)
  t.match(gw.core.approvals.get(id), { statement: 'DEL a', class: 'delete', resources: ['a'] })
  gw.core.approvals.approve(id, approver)
  t.equal(await c.lines(3), ':1\r\n$-1\r\n+OK\r\n')
  t.match(gw.audit().find(e => e.statement === 'DEL a'), { decision: 'allow', approvalId: id })
})

t.test('a denied command is an -ERR naming the approval; the pipeline goes on', async t => {
  const gw = await startGateway(t, { rules: RULES })
  const r = new Redis({ port: gw.port, password: await gw.token(), lazyConnect: true, enableReadyCheck: false })
  t.teardown(() => r.disconnect())
  await r.connect()
  await r.set('keep', 'me')
  const del = r.del('keep')
  const get = r.get('keep')
  const id = await pending(gw)
  gw.core.approvals.deny(id, approver, 'not today')
  await t.rejects(del, new RegExp(`^ERR approval ${id} denied by alice: not today`))
  t.equal(await get, 'me')
})

t.test('an approval that times out is an -ERR with its id', async t => {
  const gw = await startGateway(t, { rules: RULES.replace('approvers: [ops]', 'approvers: [ops], timeout: 300ms') })
  const c = await RawClient.connect(gw.port)
  t.teardown(() => c.close())
  c.send(`AUTH ${await gw.token()}\r\nHDEL h f\r\nPING\r\n`)
  const out = await c.lines(3)
  t.match(out, /^\+OK\r\n-ERR approval \S+ timed out\r\n\+PONG\r\n$/)
})

t.test('a KNN search over the top-k limit is blocked; a small one runs', async t => {
  const gw = await startGateway(t, { rules: RULES })
  const c = await RawClient.connect(gw.port)
  t.teardown(() => c.close())
  c.send(`AUTH ${await gw.token()}\r\nVSIM vs ELE e1 COUNT 500\r\nFT.SEARCH idx "*=>[KNN 1000 @v $B]" PARAMS 2 B xxxx DIALECT 2\r\n`)
  t.equal(await c.lines(3), '+OK\r\n-NOPERM blocked by rule wide-knn: top-k over 100\r\n-NOPERM blocked by rule wide-knn: top-k over 100\r\n')
})

t.test('an unknown command is refused unless a rule names it', async t => {
  const gw = await startGateway(t, { rules: RULES })
  const c = await RawClient.connect(gw.port)
  t.teardown(() => c.close())
  c.send(`AUTH ${await gw.token()}\r\nNOSUCH.CMD x\r\nFOO.PING\r\n`)
  const out = await c.lines(3)
  t.match(out, /^\+OK\r\n-NOPERM blocked: no rule allows this \(default deny\)\r\n-ERR unknown command 'FOO.PING'/)
})

t.test("module commands without a rule of ours are classified by the upstream's COMMAND metadata", async t => {
  const gw = await startGateway(t, { rules: RULES, redis: { search: true } })
  if (!gw.redis.hasSearch) {
    t.comment('RediSearch is not installed: no module command to look up')
    t.equal(gw.redis.hasSearch, false)
    return
  }
  const c = await RawClient.connect(gw.port)
  t.teardown(() => c.close())
  c.send(`AUTH ${await gw.token()}\r\nFT.CREATE idx SCHEMA t TEXT\r\nFT.SAFEADD idx d1 1.0 FIELDS t hello\r\nFT.DEBUG nosuch\r\n`)
  const out = await c.lines(4)
  // FT.CREATE has no rule here; FT.SAFEADD (a write) and FT.DEBUG (read-only) reach the upstream
  t.match(out, /^\+OK\r\n-NOPERM blocked: no rule allows this \(default deny\)\r\n-Unknown index name\r\n-ERR wrong number of arguments for 'FT.DEBUG' command\r\n$/)
  t.match(gw.audit().filter(e => String(e.statement).startsWith('FT.')), [
    { class: 'schema-change', decision: 'block' },
    { class: 'write', decision: 'allow', resources: ['idx'] },
    { class: 'read' },
  ])
})
