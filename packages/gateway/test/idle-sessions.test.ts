// What an idle session costs the gateway, counted (never timed): a logged-in Redis client that sends
// nothing more, and an HTTP keep-alive connection after its request, hold no timer of their own but
// their socket's idle timeout (one entry in Node's shared list for that duration, refreshed in O(1));
// nothing is scheduled for them later, and a closed session leaves no timer behind. Before this,
// every login left the gateway's handshake timer armed to fire 10 s later (1,000 logins: 1,000 timers
// firing in one burst of the event loop), and every close armed a 5 s grace timer that held the
// session until it fired. The timers are seen through async_hooks: every Timeout made while the
// sessions open is tracked until it is cleared or fires.
import t from 'tap'
import { createHook } from 'node:async_hooks'
import { connect, type Socket } from 'node:net'
import { once } from 'node:events'
import { writeFile } from 'node:fs/promises'
import { Agent, request } from 'node:http'
import { join } from 'node:path'
import { PassThrough } from 'node:stream'
import { parseConfig } from '@portcullis/core'
import { startRedis } from '@portcullis/fixtures/redis'
import { startHttpUpstream } from '@portcullis/fixtures/http-upstream'
import { startGateway } from '../src/index.ts'
import { silentLogger } from '../src/log.ts'
import { testEnv } from './helpers.ts'

const REDIS_SESSIONS = 30
const HTTP_SESSIONS = 20
const IDLE_TIMEOUT_MS = 600_000
const HANDSHAKE_TIMEOUT_MS = 120_000

/** the Timeouts made from start() on that have neither fired nor been cleared, by duration */
function timerWatch() {
  const live = new Map<number, { _idleTimeout: number; _destroyed?: boolean }>()
  let on = false
  const hook = createHook({
    init(id, type, _trigger, resource) {
      if (on && type === 'Timeout') live.set(id, resource as { _idleTimeout: number })
    },
    destroy(id) {
      live.delete(id)
    },
  })
  hook.enable()
  return {
    start: () => (on = true),
    stop: () => hook.disable(),
    byDuration(): Record<string, number> {
      const out: Record<string, number> = {}
      // a socket's timer cleared by setTimeout(0) stays an object with _idleTimeout -1
      for (const r of live.values()) if (!r._destroyed && r._idleTimeout > 0) out[r._idleTimeout] = (out[r._idleTimeout] ?? 0) + 1
      return out
    },
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

t.test(`${REDIS_SESSIONS} idle Redis sessions and ${HTTP_SESSIONS} idle HTTP keep-alive connections hold only their idle timeouts, and leave no timer when they close`, async (t) => {
  const env = await testEnv()
  t.teardown(env.cleanup)
  const redis = await startRedis({})
  t.teardown(() => redis.stop())
  const upstream = await startHttpUpstream({})
  t.teardown(() => upstream.stop())
  const keyFile = join(env.dir, 'openai.key')
  await writeFile(keyFile, 'sk-upstream-secret\n')
  const limits = `limits: { idleTimeout: ${IDLE_TIMEOUT_MS}ms, handshakeTimeout: ${HANDSHAKE_TIMEOUT_MS}ms }`
  const targets = `
  - { name: cache, protocol: redis, listen: 127.0.0.1:0, upstream: { host: 127.0.0.1, port: ${redis.port} }, ${limits} }
  - name: llm
    protocol: http
    listen: 127.0.0.1:0
    upstream: { url: ${JSON.stringify(upstream.url)}, auth: { header: authorization, value: "Bearer {secret}", secret: { secret: openai } } }
    options: { profile: openai }
    ${limits}`
  const yaml = env.yaml({ admin: false, targets }).replace('recording:', `secrets: { openai: { file: ${JSON.stringify(keyFile)} } }\nrecording:`)
  const gw = await startGateway(parseConfig(yaml, join(env.dir, 'p.yaml')), { log: silentLogger, auditStream: new PassThrough().resume() })
  t.teardown(() => gw.close(100))
  const token = await env.token('ann', ['agents'])
  const watch = timerWatch()
  t.teardown(() => watch.stop())

  // one session of each kind first: the lane to Redis and the code paths exist before counting
  const login = async (): Promise<Socket> => {
    const s = connect({ host: '127.0.0.1', port: gw.targets.cache!.port })
    s.on('error', () => {})
    await once(s, 'connect')
    s.write(`AUTH ${token}\r\n`)
    const [reply] = (await once(s, 'data')) as [Buffer]
    t.equal(reply.toString(), '+OK\r\n')
    return s
  }
  const agent = new Agent({ keepAlive: true, maxSockets: HTTP_SESSIONS + 1, maxFreeSockets: HTTP_SESSIONS + 1 })
  const warm = new Agent({ keepAlive: true })
  const get = (via = agent) =>
    new Promise<number>((resolve, reject) => {
      request({ host: '127.0.0.1', port: gw.targets.llm!.port, path: '/v1/models', agent: via, headers: { authorization: `Bearer ${token}` } }, (res) => res.resume().on('end', () => resolve(res.statusCode!)))
        .on('error', reject)
        .end()
    })
  const first = await login()
  t.equal(await get(warm), 200)
  await sleep(300)

  watch.start()
  const sockets = await Promise.all(Array.from({ length: REDIS_SESSIONS }, login))
  const statuses = await Promise.all(Array.from({ length: HTTP_SESSIONS }, () => get()))
  t.same(new Set(statuses), new Set([200]), 'every HTTP request answered')
  t.equal(gw.core.sessions().length, 2 + REDIS_SESSIONS + HTTP_SESSIONS, 'the gateway holds every session')
  // the recording and audit windows (tens of ms) pass; a per-session timer would still be here
  await sleep(500)
  const held = watch.byDuration()
  t.same(held[HANDSHAKE_TIMEOUT_MS], undefined, 'no handshake timer outlives a login')
  const perSession = Object.entries(held).filter(([, n]) => n >= 10)
  t.same(
    Object.fromEntries(perSession),
    // Redis: the gateway's idle timeout on the socket; HTTP: node:http's keep-alive timeout (keepAliveTimeout = idleTimeout, plus its 1 s margin)
    { [IDLE_TIMEOUT_MS]: REDIS_SESSIONS, [IDLE_TIMEOUT_MS + 1000]: HTTP_SESSIONS },
    `one timer per idle session, its idle timeout (all held: ${JSON.stringify(held)})`,
  )

  for (const s of sockets) s.destroy()
  agent.destroy()
  const end = Date.now() + 10_000
  while (gw.core.sessions().length > 2 && Date.now() < end) await sleep(25)
  t.equal(gw.core.sessions().length, 2, 'the idle sessions ended when their clients left (the two opened first remain)')
  await sleep(200)
  const left = watch.byDuration()
  t.same([left[IDLE_TIMEOUT_MS], left[IDLE_TIMEOUT_MS + 1000], left[HANDSHAKE_TIMEOUT_MS]], [undefined, undefined, undefined], 'no idle or handshake timer of a closed session is left')
  // the 20 concurrent requests opened a few upstream connections; they stay pooled (keep-alive) after
  // their sessions end, each with its timer on both ends (the pool's and the fixture server's, the
  // fixture runs in this process): those are bounded by the pool, not by the sessions that came and went
  const pooled = upstream.connections()
  t.ok(
    Object.values(left).every((n) => n < 5 || n <= pooled),
    `no timer per closed session is left (${JSON.stringify(left)}, ${pooled} pooled upstream connections)`,
  )
  first.destroy()
  warm.destroy()
})
