// Approvals from Slack, end to end: a statement held on real Postgres is posted to the Slack
// stand-in (fixtures/src/slack.ts) as a Block Kit message; its buttons, clicked as Slack would send
// the click (signed with the signing secret), approve or deny it through the same approver rules as
// the admin API. Forged, stale and replayed clicks are refused with 401 and change nothing.
import t from 'tap'
import { PassThrough } from 'node:stream'
import pg from 'pg'
import { startPostgres } from '@portcullis/fixtures/postgres'
import { startSlack, type SlackMessage } from '@portcullis/fixtures/slack'
import { parseConfig } from '@portcullis/core'
import { startGateway } from '../src/index.ts'
import { silentLogger } from '../src/log.ts'
import { testEnv } from './helpers.ts'

const BOT = 'xoxb-portcullis-test-bot-token'
const SIGNING = 'portcullis-test-signing-secret'
const alice = { id: 'U0ALICE', name: 'alice' }
const bob = { id: 'U0BOB', name: 'bob', email: 'bob@example.com' }
const mallory = { id: 'U0MALLORY', name: 'mallory' }
const stranger = { id: 'U0STRANGER', name: 'stranger' }

const text = (m: SlackMessage) => JSON.stringify(m.blocks)

t.test('Slack buttons decide held statements', async t => {
  const upstream = await startPostgres()
  t.teardown(() => upstream.stop())
  const slack = await startSlack({ botToken: BOT, signingSecret: SIGNING, users: [alice, bob, mallory, stranger] })
  t.teardown(() => slack.close())
  process.env.PORTCULLIS_SLACK_TEST_PG = upstream.password
  process.env.PORTCULLIS_SLACK_TEST_BOT = BOT
  process.env.PORTCULLIS_SLACK_TEST_SIGNING = SIGNING
  const env = await testEnv()
  t.teardown(env.cleanup)
  const targets = `
  - { name: db, protocol: postgres, listen: 127.0.0.1:0, upstream: { host: ${upstream.host}, port: ${upstream.port}, database: ${upstream.database}, user: ${upstream.user}, password: { secret: pg } } }`
  const rules = `
  - { id: session, when: { class: [session] }, action: allow }
  - { id: agents-read, when: { groups: [agents], class: [read] }, action: allow }
  - { id: agents-delete, when: { groups: [agents], class: [delete, write] }, action: approve, approvers: [dba], timeout: 2m, reason: deletes need a DBA }`
  const yaml =
    env.yaml({ targets, rules }) +
    `
secrets:
  pg: { env: PORTCULLIS_SLACK_TEST_PG }
  slackbot: { env: PORTCULLIS_SLACK_TEST_BOT }
  slacksign: { env: PORTCULLIS_SLACK_TEST_SIGNING }
approvals:
  slack:
    botToken: { secret: slackbot }
    signingSecret: { secret: slacksign }
    channel: approvals
    apiUrl: ${slack.apiUrl}
    lookupByEmail: true
    users:
      U0ALICE: { subject: alice, groups: [dba] }
      U0MALLORY: { subject: mallory, groups: [staff] }
      bob@example.com: { groups: [dba] }
`
  const gw = await startGateway(parseConfig(yaml, `${env.dir}/portcullis.yaml`), { log: silentLogger, auditStream: new PassThrough().resume() })
  t.teardown(() => gw.close(100))
  const interactions = `${gw.admin!.url}/slack/interactions`
  const direct = new pg.Client({ host: upstream.host, port: upstream.port, user: upstream.user, database: upstream.database, password: upstream.password })
  await direct.connect()
  t.teardown(() => direct.end())
  await direct.query('create table items (id int primary key, name text)')
  await direct.query("insert into items select g, 'item ' || g from generate_series(1, 100) g")
  await direct.query('analyze items')
  const has = async (id: number) => (await direct.query('select count(*)::int as n from items where id = $1', [id])).rows[0].n === 1
  const client = async (sub = 'agent-1') => {
    const c = new pg.Client({ host: '127.0.0.1', port: gw.targets.db!.port, user: sub, database: 'app', password: await env.token(sub, ['agents']) })
    c.on('error', () => {})
    await c.connect()
    t.teardown(() => c.end().catch(() => {}))
    return c
  }
  // the statement on the message is the normalized one (literals as $n): each held statement is the next new message
  const posted = new Set<string>()
  const heldMessage = async (needle: string) => {
    const m = await slack.waitForMessage(x => !posted.has(x.ts) && text(x).includes(needle) && text(x).includes('portcullis_approve'))
    posted.add(m.ts)
    return m
  }
  const failure = async (p: Promise<unknown>) => {
    try {
      await p
    } catch (e) {
      return e as { code?: string; message: string }
    }
    throw new Error('expected a failure')
  }

  await t.test('Approve runs the held statement and the message says who approved', async t => {
    const c = await client()
    const held = c.query({ text: 'delete from items where id = $1', values: [1] })
    const m = await heldMessage('delete from items where id')
    t.match(text(m), /Approval needed: delete on db/)
    t.match(text(m), /agent-1/)
    t.match(text(m), /Blast radius/)
    t.match(text(m), /~1 rows \(planner estimate\)/, 'the EXPLAIN estimate is on the message')
    t.match(text(m), /public\.items/)
    t.ok(slack.calls.every(call => call.authorization === `Bearer ${BOT}`), 'every Web API call carries the bot token')
    const r = await slack.click(interactions, m, alice, 'portcullis_approve')
    t.equal(r.status, 200)
    t.equal((await held).rowCount, 1)
    t.notOk(await has(1), 'the row is gone')
    const done = await slack.waitForMessage(x => x.ts === m.ts && text(x).includes('Approved'))
    t.match(text(done), /Approved\* by <@U0ALICE> \(alice\)/)
    t.notOk(text(done).includes('portcullis_approve'), 'the buttons are gone')
  })

  await t.test('Deny refuses it; an approver found by email (users.lookupByEmail) counts', async t => {
    const c = await client()
    const held = c.query('delete from items where id = 2')
    const m = await heldMessage('delete from items where id')
    t.equal((await slack.click(interactions, m, bob, 'portcullis_deny')).status, 200)
    const e = await failure(held)
    t.equal(e.code, '42501')
    t.match(e.message, /denied by bob@example\.com/)
    t.ok(await has(2), 'nothing was deleted')
    const done = await slack.waitForMessage(x => x.ts === m.ts && text(x).includes('Denied'))
    t.match(text(done), /Denied\* by <@U0BOB> \(bob@example\.com\)/)
    t.ok(slack.calls.some(call => call.method === 'users.lookupByEmail' && call.body.email === 'bob@example.com'))
  })

  await t.test('a Slack user without the group, unmapped, or deciding their own request is refused, and the message says so', async t => {
    const c = await client('alice')
    const held = c.query('delete from items where id = 3')
    const m = await heldMessage('delete from items where id')
    const id = /"value":"(apr_[a-z2-7]+)"/.exec(text(m))![1]!
    t.equal((await slack.click(interactions, m, mallory, 'portcullis_approve')).status, 200)
    let now = await slack.waitForMessage(x => x.ts === m.ts && text(x).includes('U0MALLORY'))
    t.match(text(now), /<@U0MALLORY> could not approve: mallory is not an approver/)
    t.match(text(now), /portcullis_approve/, 'the buttons stay')
    t.equal((await slack.click(interactions, m, stranger, 'portcullis_approve')).status, 200)
    now = await slack.waitForMessage(x => x.ts === m.ts && text(x).includes('U0STRANGER'))
    t.match(text(now), /stranger is not mapped to a Portcullis approver/)
    // alice is a DBA, but this is alice's own statement
    t.equal((await slack.click(interactions, m, alice, 'portcullis_approve')).status, 200)
    now = await slack.waitForMessage(x => x.ts === m.ts && text(x).includes('own request'))
    t.match(text(now), /<@U0ALICE> could not approve: alice may not decide their own request/)
    t.equal(gw.core.approvals.get(id)?.status, 'pending', 'none of them decided it')
    t.ok(await has(3))
    t.equal((await slack.click(interactions, m, bob, 'portcullis_approve')).status, 200)
    t.equal((await held).rowCount, 1)
  })

  await t.test('forged, stale and replayed clicks are refused with 401 and decide nothing', async t => {
    const c = await client()
    const held = c.query('delete from items where id = 4')
    const refused = failure(held)
    const m = await heldMessage('delete from items where id')
    const id = /"value":"(apr_[a-z2-7]+)"/.exec(text(m))![1]!
    const bad = await slack.click(interactions, m, alice, 'portcullis_approve', { secret: 'not-the-signing-secret' })
    t.equal(bad.status, 401)
    t.match(JSON.parse(bad.body), { error: { code: 'unauthenticated', message: /signature mismatch/ } })
    const old = await slack.click(interactions, m, alice, 'portcullis_approve', { timestamp: Math.floor(Date.now() / 1000) - 6 * 60 })
    t.equal(old.status, 401)
    t.match(old.body, /five-minute window/)
    const future = await slack.click(interactions, m, alice, 'portcullis_approve', { timestamp: Math.floor(Date.now() / 1000) + 6 * 60 })
    t.equal(future.status, 401)
    // signed for a deny, sent as an approve: the body no longer matches its signature
    const tampered = await slack.click(interactions, m, alice, 'portcullis_deny', { tamper: b => b.replace('portcullis_deny', 'portcullis_approve') })
    t.equal(tampered.status, 401)
    const unsigned = await fetch(interactions, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'payload={}' })
    t.equal(unsigned.status, 401)
    t.equal(gw.core.approvals.get(id)?.status, 'pending', 'still pending')
    t.ok(await has(4))
    // a genuine deny, then the same request again: taken once
    const req = slack.signedRequest(m, alice, 'portcullis_deny')
    const first = await fetch(interactions, { method: 'POST', headers: req.headers, body: req.body })
    t.equal(first.status, 200)
    const again = await fetch(interactions, { method: 'POST', headers: req.headers, body: req.body })
    t.equal(again.status, 401)
    t.match(await again.text(), /replay/)
    t.equal((await refused).code, '42501')
    t.ok(await has(4))
  })

  await t.test('a request decided elsewhere (the admin API) updates the message too', async t => {
    const c = await client()
    const held = c.query('delete from items where id = 5')
    const m = await heldMessage('delete from items where id')
    const id = /"value":"(apr_[a-z2-7]+)"/.exec(text(m))![1]!
    await gw.core.approvals.approve(id, { subject: 'carol', groups: ['dba'], issuer: 'test' })
    t.equal((await held).rowCount, 1)
    const done = await slack.waitForMessage(x => x.ts === m.ts && text(x).includes('Approved'))
    t.match(text(done), /Approved\* by carol/)
  })
})
