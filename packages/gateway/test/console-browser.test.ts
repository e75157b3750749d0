// The web console in a real browser (Debian's chromium, driven by puppeteer-core), signing in
// against a real OpenID Connect provider (oidc-provider, fixtures/src/oidc.ts), in front of a real
// Postgres 15 and Redis 7 with real psql clients: what an approver and an auditor see and do.
// Screenshots of each page go to test/artifacts/console/ (gitignored).
import t from 'tap'
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import { existsSync } from 'node:fs'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { createServer } from 'node:http'
import { connect } from 'node:net'
import { join } from 'node:path'
import pg from 'pg'
import puppeteer, { type Browser, type Page } from 'puppeteer-core'
import { parseConfig } from '@portcullis/core'
import { startOidcProvider } from '@portcullis/fixtures/oidc'
import { startPostgres } from '@portcullis/fixtures/postgres'
import { startRedis } from '@portcullis/fixtures/redis'
import { startGateway } from '../src/index.ts'
import { silentLogger } from '../src/log.ts'
import { recordingsIn, testEnv, waitFor } from './helpers.ts'

const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium'
const ARTIFACTS = new URL('./artifacts/console/', import.meta.url).pathname
const CLIENT_ID = 'portcullis-console'
const CLIENT_SECRET = 'console-client-secret-for-tests'
const SECRET_ENV = 'PORTCULLIS_CONSOLE_TEST_SECRET'
const PG_ENV = 'PORTCULLIS_CONSOLE_TEST_PG'
const EMAIL = 'grace.hopper@example.com'

// a browser, Postgres, Redis and an identity provider on a loaded 2-core machine: more than the
// suite's 180 s per file may be needed (it takes ~65 s alone)
t.setTimeout(600_000)

if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is missing: scripts/bootstrap.sh --test installs Debian's chromium`)

interface Psql {
  child: ChildProcess
  done: Promise<{ code: number; out: string }>
}

function psql(port: number, token: string, sql: string): Psql {
  const child = spawn('psql', ['-X', '-v', 'ON_ERROR_STOP=1', `host=127.0.0.1 port=${port} dbname=app user=agent sslmode=disable`, '-c', sql], {
    env: { ...process.env, PGPASSWORD: token, PGCONNECT_TIMEOUT: '30' },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let out = ''
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d))
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d))
  return { child, done: once(child, 'close').then(([code]) => ({ code: code as number, out })) }
}

/** a RESP client that stays connected: AUTH, then commands; resolves `closed` when the gateway ends it */
async function redisSession(port: number) {
  const s = connect({ host: '127.0.0.1', port })
  await once(s, 'connect')
  let got = ''
  s.setEncoding('utf8').on('data', (d: string) => (got += d))
  s.on('error', () => undefined)
  const closed = once(s, 'close').then(() => true)
  const cmd = (...args: string[]) => s.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`)
  return { socket: s, cmd, closed, got: () => got }
}

async function shot(page: Page, name: string): Promise<void> {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true })
}

/** the provider's own login form (any name, no password), then back at the console */
async function signIn(browser: Browser, admin: string, login: string): Promise<Page> {
  const ctx = await browser.createBrowserContext()
  const page = await ctx.newPage()
  // puppeteer's 30 s default is short for a loaded CI machine; nothing here waits on a clock
  page.setDefaultTimeout(120_000)
  await page.setViewport({ width: 1280, height: 900 })
  await page.goto(`${admin}/console/`, { waitUntil: 'domcontentloaded' })
  await page.waitForSelector('input[name=login]')
  await page.type('input[name=login]', login)
  await page.type('input[name=password]', 'any')
  await Promise.all([page.waitForNavigation({ waitUntil: 'domcontentloaded' }), page.click('button[type=submit]')])
  // consent is granted by the fixture; the callback redirects to the console
  await page.waitForFunction((a) => location.href.startsWith(a), {}, admin)
  return page
}

t.test('the web console: sign-in, approvals, sessions, replay, audit, policy, refusals', async (t) => {
  await mkdir(ARTIFACTS, { recursive: true })
  const upstream = await startPostgres()
  t.teardown(() => upstream.stop())
  const redis = await startRedis({})
  t.teardown(() => redis.stop())
  const direct = new pg.Client({ host: upstream.host, port: upstream.port, user: upstream.user, database: upstream.database, password: upstream.password })
  await direct.connect()
  t.teardown(() => direct.end())
  await direct.query(`create table notes (id int primary key, body text); create table customers (id int, email text); insert into customers values (1, '${EMAIL}')`)

  const oidc = await startOidcProvider({ accounts: { bea: ['dba'], alice: ['admins', 'auditors'], eve: ['interns'] } })
  t.teardown(() => oidc.stop())

  process.env[SECRET_ENV] = CLIENT_SECRET
  process.env[PG_ENV] = upstream.password
  const env = await testEnv()
  t.teardown(env.cleanup)
  const targets = `
  - { name: app-db, protocol: postgres, listen: 127.0.0.1:0, upstream: { host: ${upstream.host}, port: ${upstream.port}, database: ${upstream.database}, user: ${upstream.user}, password: { secret: pg } } }
  - { name: cache, protocol: redis, listen: 127.0.0.1:0, upstream: { host: ${redis.host}, port: ${redis.port} } }`
  const rules = `
  - { id: agents-read, when: { groups: [agents], class: [session, read] }, action: allow }
  - { id: agents-write, when: { groups: [agents], class: [write] }, action: approve, approvers: [dba], timeout: 10m }
  - { id: no-admin, when: { class: [admin, schema-change, bulk-delete] }, action: block }`
  const yaml =
    env.yaml({ admin: false, targets, rules }) +
    `
admin:
  listen: 127.0.0.1:0
  console: { issuer: ${JSON.stringify(oidc.issuer)}, clientId: ${CLIENT_ID}, clientSecret: { secret: console } }
secrets:
  pg: { env: ${PG_ENV} }
  console: { env: ${SECRET_ENV} }
masking:
  - { id: pii, when: { groups: [agents] }, columns: [customers.email], detectors: [email], method: redact }
`
  const gw = await startGateway(parseConfig(yaml, join(env.dir, 'portcullis.yaml')), { log: silentLogger })
  t.teardown(() => gw.close(500))
  const admin = gw.admin!.url
  oidc.addClient({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, redirectUri: `${admin}/console/callback` })
  const pgPort = gw.targets['app-db']!.port
  const agentToken = await env.token('agent', ['agents'])

  const browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-dev-shm-usage'] })
  t.teardown(() => browser.close())

  // a read first: masked on the way out, and so in the recording the auditor replays
  const read = await psql(pgPort, agentToken, 'select email from customers').done
  t.equal(read.code, 0, read.out)
  t.notMatch(read.out, EMAIL, 'the agent sees the email masked')

  await t.test('an approver approves a held psql statement, and the psql client proceeds', async (t) => {
    const bea = await signIn(browser, admin, 'bea')
    t.match(bea.url(), /\/console\/approvals$/, 'an approver lands on approvals')
    t.equal(await bea.$eval('#who', (e) => e.textContent), 'bea')
    const session = (await bea.cookies()).find((c) => c.name === 'portcullis_console')
    t.match(session, { httpOnly: true, sameSite: 'Lax', secure: false, path: '/' }, 'HttpOnly, SameSite=Lax, not Secure on loopback http')
    t.notOk(await bea.evaluate(() => document.cookie.includes('portcullis_console')), 'scripts cannot read it')
    const held = psql(pgPort, agentToken, "insert into notes values (1, 'approved from the console')")
    // the page is not reloaded: the card appears by itself (polling)
    await bea.waitForSelector('[data-status=pending] .statement', { timeout: 60_000 })
    t.match(await bea.$eval('[data-status=pending] .statement', (e) => e.textContent), /insert into notes/i)
    t.match(await bea.$eval('[data-status=pending] .live-session', (e) => e.textContent), /from 127\.0\.0\.1:\d+, since/, 'the session it comes from')
    await shot(bea, 'approvals')
    // the approver sees the session the request comes from, and cannot end it
    const sessions = await bea.browserContext().newPage()
    sessions.setDefaultTimeout(120_000)
    await sessions.goto(`${admin}/console/sessions`)
    await sessions.waitForSelector('tr[data-subject=agent]')
    t.match(await sessions.$eval('tr[data-subject=agent]', (e) => e.textContent), /app-db/)
    t.equal((await sessions.$$('tr[data-subject=agent] button')).length, 0, 'no End buttons for an approver')
    await sessions.close()
    await bea.setViewport({ width: 390, height: 844 })
    await shot(bea, 'approvals-390')
    await bea.setViewport({ width: 1280, height: 900 })
    // keyboard: focus the Approve button and press Enter
    await bea.focus('[data-status=pending] button[value=approve]')
    await bea.keyboard.press('Enter')
    const result = await held.done
    t.equal(result.code, 0, result.out)
    t.match(result.out, /INSERT 0 1/)
    t.same((await direct.query('select body from notes where id = 1')).rows, [{ body: 'approved from the console' }], 'the row is upstream')
    await bea.waitForSelector('[data-status=approved]')
    t.match(await bea.$eval('[data-status=approved]', (e) => e.textContent), /Decided by\s*bea/)
  })

  await t.test('an approver denies one with a reason, and the statement never reaches Postgres', async (t) => {
    const bea = await signIn(browser, admin, 'bea')
    const held = psql(pgPort, agentToken, "insert into notes values (2, 'denied from the console')")
    await bea.waitForSelector('[data-status=pending] input[name=reason]', { timeout: 60_000 })
    await bea.type('[data-status=pending] input[name=reason]', 'not during the freeze')
    await bea.click('[data-status=pending] button[value=deny]')
    const result = await held.done
    t.not(result.code, 0)
    t.match(result.out, /denied|not during the freeze/)
    t.same((await direct.query('select * from notes where id = 2')).rows, [], 'nothing was inserted')
    await bea.waitForSelector('[data-status=denied]')
    t.match(await bea.$eval('[data-status=denied]', (e) => e.textContent), /not during the freeze/)
  })

  await t.test('an admin ends a live Redis session from the sessions page', async (t) => {
    const r = await redisSession(gw.targets.cache!.port)
    r.cmd('AUTH', await env.token('agent-redis', ['agents']))
    r.cmd('GET', 'greeting')
    await waitFor(() => r.got().includes('$-1'), 'the GET reply')
    const alice = await signIn(browser, admin, 'alice')
    await alice.goto(`${admin}/console/sessions`)
    const row = 'tr[data-subject=agent-redis]'
    await alice.waitForSelector(row, { timeout: 30_000 })
    t.match(await alice.$eval(row, (e) => e.textContent), /GET greeting/i, 'its last statement is shown')
    await shot(alice, 'sessions')
    await alice.setViewport({ width: 390, height: 844 })
    await shot(alice, 'sessions-390')
    await alice.setViewport({ width: 1280, height: 900 })
    await alice.click(`${row} button.danger`)
    t.equal(await r.closed, true, 'the gateway closed the Redis connection')
    await alice.waitForFunction((sel) => !document.querySelector(sel), {}, row)

    // all of a subject's sessions at once
    const two = [await redisSession(gw.targets.cache!.port), await redisSession(gw.targets.cache!.port)]
    for (const s of two) {
      s.cmd('AUTH', await env.token('agent-many', ['agents']))
      s.cmd('GET', 'k')
    }
    await waitFor(() => two.every((s) => s.got().includes('$-1')), 'both GET replies')
    await alice.waitForFunction(() => document.querySelectorAll('tr[data-subject=agent-many]').length === 2, { timeout: 30_000 })
    await alice.click('tr[data-subject=agent-many] button[aria-label^="End every session"]')
    t.same(await Promise.all(two.map((s) => s.closed)), [true, true], 'both connections closed')
    await alice.waitForSelector('#flash .flash.ok')
    t.match(await alice.$eval('#flash .flash.ok', (e) => e.textContent), /2 sessions of agent-many ended/)
    // the list keeps polling; its next answer must not wipe the confirmation (it did, under load)
    await alice.evaluate(() => document.querySelector('#session-list')!.setAttribute('data-seen', ''))
    await alice.waitForFunction(() => !document.querySelector('#session-list')?.hasAttribute('data-seen'), { timeout: 30_000 })
    t.match(await alice.$eval('#flash', (e) => e.textContent), /2 sessions of agent-many ended/, 'the confirmation outlives the next poll')
  })

  await t.test('an auditor lists recordings and opens a replay: masked values stay masked, tampering is marked', async (t) => {
    const alice = await signIn(browser, admin, 'alice')
    await alice.goto(`${admin}/console/recordings?target=app-db`)
    await alice.waitForSelector('tr[data-recording]')
    t.ok((await alice.$$('[data-verify=intact]')).length >= 1, 'sealed recordings verify intact')
    await shot(alice, 'recordings')
    // a tampered copy of a recording: one byte changed in its middle
    const files = await recordingsIn(join(env.dir, 'recordings'))
    const withEmail = []
    for (const f of files) if ((await readFile(f)).includes('customers')) withEmail.push(f)
    t.equal(withEmail.length, 1, 'the read session was recorded')
    const bytes = await readFile(withEmail[0]!)
    const tampered = withEmail[0]!.replace(/([^/]+)\.pcr$/, 'tampered-copy.pcr')
    const flipped = Buffer.from(bytes)
    flipped[Math.floor(flipped.length / 2)]! ^= 0xff
    await writeFile(tampered, flipped)

    const day = withEmail[0]!.split('/').at(-2)!
    const id = withEmail[0]!.split('/').at(-1)!.replace(/\.pcr$/, '')
    await alice.goto(`${admin}/console/recordings/${day}/${id}`)
    const text = await alice.$eval('main', (e) => e.textContent ?? '')
    t.match(text, /select email from customers/, 'the statement is in the transcript')
    t.match(text, /allow by rule agents-read/, 'the decision is in the transcript')
    t.notMatch(text, EMAIL, 'the email is not shown unmasked')
    t.match(await alice.$eval('#integrity', (e) => e.textContent), /intact/)
    await shot(alice, 'replay')
    await alice.setViewport({ width: 390, height: 844 })
    await shot(alice, 'replay-390')
    await alice.setViewport({ width: 1280, height: 900 })

    await alice.goto(`${admin}/console/recordings/${day}/tampered-copy`)
    t.match(await alice.$eval('#integrity', (e) => e.textContent), /tampered|truncated/)
    t.ok((await alice.$$('[data-integrity=fails]')).length >= 1, 'records from the failure on are marked')
    await shot(alice, 'replay-tampered')

    // the held statements' approvals are in the replay of their sessions
    await alice.goto(`${admin}/console/recordings?target=app-db`)
    const links = await alice.$$eval('tr[data-recording] a', (as) => as.map((a) => (a as HTMLAnchorElement).href))
    let sawApproval = false
    for (const l of links) {
      await alice.goto(l)
      if (/allow by rule agents-write \(.*\) approval apr_/.test(await alice.$eval('main', (e) => e.textContent ?? ''))) sawApproval = true
    }
    t.ok(sawApproval, 'a replay shows the decision held for approval')
  })

  await t.test('an auditor searches the audit log; an admin asks the policy what would happen', async (t) => {
    const alice = await signIn(browser, admin, 'alice')
    await alice.goto(`${admin}/console/audit`)
    await alice.type('#f-subject', 'agent')
    await alice.select('#f-class', 'write')
    await Promise.all([alice.waitForNavigation(), alice.click('form.filters button[type=submit]')])
    t.match(await alice.$eval('#audit-total', (e) => e.textContent), /^[1-9]\d* events? match/)
    const rows = await alice.$$eval('tr.audit-event', (trs) => trs.map((r) => r.textContent ?? ''))
    t.ok(rows.length >= 1 && rows.every((r) => /agent/.test(r) && /write/.test(r)), 'only the matching events')
    t.notOk(rows.some((r) => r.includes(EMAIL)))
    await shot(alice, 'audit')

    await alice.goto(`${admin}/console/policy`)
    await alice.select('#x-target', 'app-db')
    await alice.type('#x-groups', 'agents')
    await alice.type('#x-text', 'delete from notes where id = 1')
    await Promise.all([alice.waitForNavigation(), alice.click('form.card button[type=submit]')])
    t.equal(await alice.$eval('#explain-action', (e) => e.textContent), 'block', 'a delete has no allowing rule: blocked')
    await alice.evaluate(() => ((document.getElementById('x-text') as HTMLTextAreaElement).value = ''))
    await alice.type('#x-text', "insert into notes values (3, 'x')")
    await Promise.all([alice.waitForNavigation(), alice.click('form.card button[type=submit]')])
    t.equal(await alice.$eval('#explain-action', (e) => e.textContent), 'approve')
    await shot(alice, 'policy')
  })

  await t.test('a cross-site form and a request without the CSRF token are refused; nothing is done', async (t) => {
    const r = await redisSession(gw.targets.cache!.port)
    r.cmd('AUTH', await env.token('victim', ['agents']))
    await waitFor(() => r.got().startsWith('+OK'), 'AUTH')
    const alice = await signIn(browser, admin, 'alice')
    // an attacker's page on another origin (same site: 127.0.0.1, so the Lax cookie goes along)
    const evil = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' })
      res.end(`<form id=f method=post action="${admin}/console/sessions/end-subject"><input name=subject value=victim></form><script>f.submit()</script>`)
    })
    evil.listen(0, '127.0.0.1')
    await once(evil, 'listening')
    t.teardown(() => new Promise<void>((res) => evil.close(() => res())))
    const evilUrl = `http://127.0.0.1:${(evil.address() as { port: number }).port}/`
    const answered = alice.waitForResponse((res) => res.url().endsWith('/console/sessions/end-subject'))
    await alice.goto(evilUrl)
    const refused = await answered
    t.equal(refused.status(), 403)
    await alice.waitForSelector('#refusal')
    t.match(await alice.$eval('#refusal', (e) => e.textContent), /cross-origin|CSRF/)
    await shot(alice, 'csrf-refused')

    // same origin, but no token: a script the page did not get the token from
    await alice.goto(`${admin}/console/sessions`)
    const status = await alice.evaluate(async () => {
      const res = await fetch('/console/sessions/end-subject', { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'subject=victim' })
      return res.status
    })
    t.equal(status, 403)
    r.cmd('PING')
    await waitFor(() => r.got().includes('+PONG'), 'the victim session still answers')
    r.socket.destroy()
  })

  await t.test('a user whose groups give no role sees a 403 page and nothing else', async (t) => {
    const eve = await signIn(browser, admin, 'eve')
    t.match(await eve.$eval('#forbidden', (e) => e.textContent), /no role/)
    for (const p of ['approvals', 'sessions', 'recordings', 'audit', 'policy']) {
      const res = await eve.goto(`${admin}/console/${p}`)
      t.equal(res?.status(), 403, `${p} is refused`)
    }
    t.notMatch(await eve.content(), /insert into notes/)
    await shot(eve, 'forbidden')
    // bea (approver only) cannot open recordings either
    const bea = await signIn(browser, admin, 'bea')
    t.equal((await bea.goto(`${admin}/console/recordings`))?.status(), 403)
  })

  await t.test('sign-out ends the server-side session', async (t) => {
    const alice = await signIn(browser, admin, 'alice')
    await alice.goto(`${admin}/console/audit`)
    await Promise.all([alice.waitForNavigation(), alice.click('header form button[type=submit]')])
    t.match(alice.url(), /\/console\/signed-out$/)
    const cookies = await alice.cookies()
    t.notOk(cookies.some((c) => c.name === 'portcullis_console' && c.value), 'the cookie is cleared')
    // the bearer JSON API is untouched by the console
    const api = await fetch(`${admin}/api/approvals`, { headers: { authorization: `Bearer ${await env.token('bea', ['dba'])}` } })
    t.equal(api.status, 200)
  })
})
