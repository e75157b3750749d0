import t, { type Test } from 'tap'
import { PassThrough } from 'node:stream'
import { startGateway, type Gateway } from '../src/index.ts'
import { silentLogger } from '../src/log.ts'
import { lineClient, lineCodec, testEnv, waitFor, type TestEnv } from './helpers.ts'

async function setup(t: Test): Promise<{ env: TestEnv; gw: Gateway; admin: string }> {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const gw = await startGateway(env.config(), { log: silentLogger, auditStream: new PassThrough().resume(), codecs: [lineCodec()] })
  t.teardown(() => gw.close(100))
  return { env, gw, admin: gw.admin!.url }
}

async function api(base: string, method: string, path: string, token?: string, body?: unknown) {
  const res = await fetch(base + path, {
    method,
    headers: { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body ? { 'content-type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  })
  const text = await res.text()
  let json: any
  try {
    json = JSON.parse(text)
  } catch {
    json = undefined
  }
  return { status: res.status, json, text, type: res.headers.get('content-type') }
}

t.test('health and metrics answer without a token on loopback; the API needs one', async (t) => {
  const { admin, env } = await setup(t)
  const health = await api(admin, 'GET', '/healthz')
  t.match([health.status, health.json], [200, { status: 'ok', instance: String, controlStore: { kind: 'memory', ok: true } }])
  const metrics = await api(admin, 'GET', '/metrics')
  t.equal(metrics.status, 200)
  t.match(metrics.type, /^text\/plain/)
  t.match(metrics.text, /portcullis_sessions/, 'Prometheus text from core')

  const anon = await api(admin, 'GET', '/api/approvals')
  t.same([anon.status, anon.json.error.code], [401, 'unauthenticated'])
  const forged = await api(admin, 'GET', '/api/approvals', 'eyJhbGciOiJub25lIn0.e30.')
  t.same([forged.status, forged.json.error.code], [401, 'unauthenticated'])
  t.notMatch(forged.text, /eyJhbGci/, 'the token is not echoed back')
  const missing = await api(admin, 'GET', '/api/nothing', await env.token('ann', ['agents']))
  t.same([missing.status, missing.json.error.code], [404, 'not_found'])
  const wrongMethod = await api(admin, 'DELETE', '/healthz')
  t.same([wrongMethod.status, wrongMethod.json.error.code], [405, 'method_not_allowed'])
  const page = await api(admin, 'GET', '/')
  t.match(page.text, /Pending approvals/, 'a small approvals page is served at /')
})

t.test('a held write is listed for approvers, refused to its requester, and approved over the API', async (t) => {
  const { env, gw, admin } = await setup(t)
  const agent = await env.token('ann', ['agents', 'approvers'])
  const approver = await env.token('bea', ['approvers'])
  const outsider = await env.token('cy', ['agents'])
  const c = await lineClient(gw.targets.lines!.port)
  c.send(`AUTH ${await env.token('ann', ['agents'])}`)
  t.equal(await c.next(), 'OK ann')
  c.send('write UPDATE customers')
  const pending = await c.next()
  t.match(pending, /^PENDING \S+/)
  const id = pending.split(' ')[1]!

  const listed = await api(admin, 'GET', '/api/approvals', approver)
  t.equal(listed.status, 200)
  t.same(listed.json.approvals.map((a: { id: string }) => a.id), [id])
  t.match(listed.json.approvals[0], { subject: 'ann', target: 'lines', class: 'write', rule: 'agents-write', status: 'pending' })
  t.notOk('tokenId' in listed.json.approvals[0], 'no token id is exposed')
  const hidden = await api(admin, 'GET', '/api/approvals', outsider)
  t.same(hidden.json.approvals, [], 'someone who is neither approver nor requester sees nothing')

  const own = await api(admin, 'POST', `/api/approvals/${id}/approve`, agent)
  t.equal(own.status, 403, 'nobody approves their own request')
  t.equal(own.json.error.code, 'forbidden')
  const notApprover = await api(admin, 'POST', `/api/approvals/${id}/approve`, outsider)
  t.equal(notApprover.status, 403, 'only approver groups may approve')

  const ok = await api(admin, 'POST', `/api/approvals/${id}/approve`, approver)
  t.same([ok.status, ok.json.approval.status], [200, 'approved'])
  t.equal(await c.next(), 'ALLOW agents-write', 'the held operation goes through')
  const again = await api(admin, 'POST', `/api/approvals/${id}/deny`, approver)
  t.same([again.status, again.json.error.code], [409, 'conflict'])
  const unknown = await api(admin, 'POST', '/api/approvals/apr_nothing/approve', approver)
  t.equal(unknown.status, 404)
  c.socket.destroy()
})

t.test('a denied request reaches the client with the reason', async (t) => {
  const { env, gw, admin } = await setup(t)
  const c = await lineClient(gw.targets.lines!.port)
  c.send(`AUTH ${await env.token('ann', ['agents'])}`)
  t.equal(await c.next(), 'OK ann')
  c.send('write DELETE one row')
  const id = (await c.next()).split(' ')[1]!
  const res = await api(admin, 'POST', `/api/approvals/${id}/deny`, await env.token('bea', ['approvers']), { reason: 'not today' })
  t.same([res.status, res.json.approval.status], [200, 'denied'])
  t.match(await c.next(), /^BLOCK agents-write .*not today/)
  c.socket.destroy()
})

t.test('admins list and kill sessions, one or all of a subject; others may not', async (t) => {
  const { env, gw, admin } = await setup(t)
  const root = await env.token('root', ['admins'])
  const clients = []
  for (const sub of ['ann', 'ann', 'bob']) {
    const c = await lineClient(gw.targets.lines!.port)
    c.send(`AUTH ${await env.token(sub, ['agents'])}`)
    t.equal(await c.next(), `OK ${sub}`)
    clients.push(c)
  }
  const denied = await api(admin, 'GET', '/api/sessions', await env.token('ann', ['agents']))
  t.same([denied.status, denied.json.error.code], [403, 'forbidden'])
  const list = await api(admin, 'GET', '/api/sessions', root)
  t.equal(list.status, 200)
  t.same(list.json.sessions.map((s: { subject: string }) => s.subject).sort(), ['ann', 'ann', 'bob'])

  const bob = list.json.sessions.find((s: { subject: string }) => s.subject === 'bob')
  const one = await api(admin, 'DELETE', `/api/sessions/${bob.id}`, root)
  t.same([one.status, one.json.killed], [200, 1])
  t.match(await clients[2]!.next(), /^ERR SESSION_CLOSED/, 'the client is told its session was killed')
  await clients[2]!.closed

  const many = await api(admin, 'DELETE', '/api/sessions?subject=ann', root)
  t.same([many.status, many.json.killed], [200, 2])
  await clients[0]!.closed
  await clients[1]!.closed
  await waitFor(() => gw.core.sessions().length === 0, 'all sessions gone')
  const gone = await api(admin, 'DELETE', `/api/sessions/${bob.id}`, root)
  t.equal(gone.status, 404)
})

t.test('a revocation ends the subject’s live sessions and refuses its tokens', async (t) => {
  const { env, gw, admin } = await setup(t)
  const root = await env.token('root', ['admins'])
  const token = await env.token('mallory', ['agents'])
  const c = await lineClient(gw.targets.lines!.port)
  c.send(`AUTH ${token}`)
  t.equal(await c.next(), 'OK mallory')
  const bad = await api(admin, 'POST', '/api/revocations', root, {})
  t.same([bad.status, bad.json.error.code], [400, 'bad_request'])
  const res = await api(admin, 'POST', '/api/revocations', root, { subject: 'mallory' })
  t.same([res.status, res.json.revoked], [200, { subject: 'mallory' }])
  t.match(await c.next(), /^ERR REVOKED/)
  await c.closed
  const again = await lineClient(gw.targets.lines!.port)
  again.send(`AUTH ${token}`)
  t.match(await again.next(), /^ERR AUTH_FAILED/, 'the revoked subject cannot come back')
})

t.test('metrics need a token when the admin listener is not on loopback', async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const { createCore } = await import('@portcullis/core')
  const { startAdmin } = await import('../src/admin.ts')
  const core = await createCore(env.config(), { auditStream: new PassThrough().resume() })
  t.teardown(() => core.close())
  const admin = await startAdmin({ core, listen: '0.0.0.0:0', admin: { listen: '0.0.0.0:0' }, log: silentLogger })
  t.teardown(() => admin.close())
  const local = admin.url.replace('0.0.0.0', '127.0.0.1')
  const anon = await api(local, 'GET', '/metrics')
  t.same([anon.status, anon.json.error.code], [401, 'unauthenticated'])
  const withToken = await api(local, 'GET', '/metrics', await env.token('prom', ['monitoring']))
  t.equal(withToken.status, 200)
  t.match(withToken.text, /portcullis_/)
})
