// Approvals in Slack: a Block Kit message per request (posted by the instance that holds it), and
// the interactivity endpoint its buttons call on the admin listener (POST /slack/interactions).
//
// A click is only as good as Slack's signature over it: verified on the raw body with the signing
// secret (constant-time), within five minutes of our clock, and never twice (a replay inside the
// window is refused too). The Slack user is then mapped to an approver — approvals.slack.users by
// Slack user id, or by email through users.lookupByEmail — and the decision goes through the very
// function the admin API calls (core.approvals.approve / deny), so the same rules hold: not one's
// own request, a group among the rule's approvers, min approvals. A refused click is said on the
// message; the outcome replaces the buttons whichever way the request was decided (Slack, API,
// CLI, expiry, withdrawal).
import type { IncomingMessage, ServerResponse } from 'node:http'
import { isPortcullisError, type ApprovalRequest, type Core, type Principal, type SlackConfig } from '@portcullis/core'
import type { Logger } from '../log.ts'
import { APPROVE, DENY, escapeMrkdwn, outcomeBlocks, pendingBlocks, summaryText } from './blocks.ts'
import { REPLAY_WINDOW_S, verifySlackSignature } from './signature.ts'
import { slackApi, type SlackApi } from './web-api.ts'

export const SLACK_INTERACTIONS_PATH = '/slack/interactions'
const MAX_BODY_BYTES = 256 * 1024
const MAX_MESSAGES = 10_000
/** signatures remembered for the replay check (only Slack can sign: this bounds a burst of clicks) */
const MAX_SEEN = 100_000
/** how often an email map is asked of Slack again for a user it did not know */
const LOOKUP_AGAIN_MS = 60_000

export interface SlackApprovals {
  /** the interactivity endpoint (admin listener) */
  handle(req: IncomingMessage, res: ServerResponse): Promise<void>
  close(): void
}

interface Posted {
  message: Promise<{ channel: string; ts: string } | undefined>
  request: ApprovalRequest
  notes: string[]
  /** who decided in Slack, shown in the outcome */
  by?: string
  final?: boolean
}

function reply(res: ServerResponse, status: number, code?: string, message?: string): void {
  const body = code ? JSON.stringify({ error: { code, message } }) : ''
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) })
  res.end(body)
}

async function rawBody(req: IncomingMessage): Promise<Buffer | undefined> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > MAX_BODY_BYTES) return undefined
    chunks.push(chunk)
  }
  return Buffer.concat(chunks)
}

export function startSlackApprovals(opts: { core: Core; config: SlackConfig; log: Logger; api?: SlackApi; now?: () => number }): SlackApprovals {
  const { core, config, log } = opts
  const now = opts.now ?? Date.now
  const secret = (ref: { secret: string }) => core.secrets.get(ref)
  const api = opts.api ?? slackApi(config.apiUrl, config.botToken, secret)
  const posted = new Map<string, Posted>()
  /** signatures seen inside the replay window: a request is taken once */
  const seen = new Map<string, number>()
  const byEmail = new Map<string, string>() // Slack user id → email key of config.users
  let lookedUp = -Infinity

  function forget() {
    if (posted.size <= MAX_MESSAGES) return
    for (const [id, p] of posted) {
      if (posted.size <= MAX_MESSAGES) break
      if (p.final) posted.delete(id)
    }
  }

  async function show(p: Posted): Promise<void> {
    const m = await p.message
    if (!m) return
    const r = p.request
    const blocks = r.status === 'pending' ? pendingBlocks(r, p.notes) : outcomeBlocks(r, p.by)
    try {
      await api.update(m.channel, m.ts, r.status === 'pending' ? summaryText(r) : `${summaryText(r)}: ${r.status}`, blocks)
    } catch (err) {
      log.warn({ approval: r.id, error: (err as Error).message }, 'slack: message not updated')
    }
  }

  // updates of one message in the order they were asked for
  const chains = new Map<string, Promise<void>>()
  function refresh(p: Posted): void {
    const id = p.request.id
    const next = (chains.get(id) ?? Promise.resolve()).then(() => show(p))
    chains.set(id, next)
    void next.finally(() => {
      if (chains.get(id) === next) chains.delete(id)
    })
  }

  const unsubscribe = core.approvals.subscribe(r => {
    const known = posted.get(r.id)
    if (r.status === 'pending') {
      // the instance that holds the request posts it: one message, however many instances hear of it
      if (known || (r.instance !== undefined && r.instance !== core.instance)) {
        if (known && !known.final) known.request = r
        return
      }
      const message = api.postMessage(config.channel, summaryText(r), pendingBlocks(r)).catch(err => {
        log.warn({ approval: r.id, error: (err as Error).message }, 'slack: approval message not posted')
        return undefined
      })
      posted.set(r.id, { message, request: r, notes: [] })
      forget()
      return
    }
    if (!known || known.final) return
    known.request = r
    known.final = true
    refresh(known)
  })

  /** the approver a Slack user is, or undefined */
  async function approverOf(userId: string): Promise<Principal | undefined> {
    const direct = config.users[userId]
    if (direct && !userId.includes('@')) return { subject: direct.subject ?? userId, groups: [...direct.groups], issuer: 'slack' }
    if (!config.lookupByEmail) return undefined
    if (!byEmail.has(userId) && now() - lookedUp > LOOKUP_AGAIN_MS) {
      lookedUp = now()
      for (const email of Object.keys(config.users).filter(k => k.includes('@'))) {
        try {
          const id = await api.lookupByEmail(email)
          if (id) byEmail.set(id, email)
        } catch (err) {
          log.warn({ error: (err as Error).message }, 'slack: users.lookupByEmail failed')
          lookedUp = -Infinity
        }
      }
    }
    const email = byEmail.get(userId)
    const entry = email === undefined ? undefined : config.users[email]
    return entry ? { subject: entry.subject ?? email!, groups: [...entry.groups], issuer: 'slack' } : undefined
  }

  async function act(userId: string, userName: string, action: string, id: string, container: { channel?: string; ts?: string }): Promise<void> {
    const mention = `<@${escapeMrkdwn(userId)}>`
    let p = posted.get(id)
    if (!p) {
      // a message this process did not post (a restart, another instance): update the one clicked
      const r = core.approvals.get(id) ?? (await core.approvals.fetch(id).catch(() => undefined))
      if (!r || !container.channel || !container.ts) return
      p = { message: Promise.resolve({ channel: container.channel, ts: container.ts }), request: r, notes: [] }
      if (r.status === 'pending') posted.set(id, p)
    }
    const who = await approverOf(userId)
    const refuse = (why: string) => {
      log.info({ approval: id, slackUser: userId, why }, 'slack: decision refused')
      p.notes.push(`:warning: ${mention} could not ${action === APPROVE ? 'approve' : 'deny'}: ${escapeMrkdwn(why)}`)
      refresh(p)
    }
    if (!who) return refuse(`${userName} is not mapped to a Portcullis approver (approvals.slack.users)`)
    if (core.revocations().some(e => e.subject === who.subject)) return refuse(`${who.subject} is revoked`)
    p.by = `${mention} (${escapeMrkdwn(who.subject)})`
    try {
      const done = action === APPROVE ? await core.approvals.approve(id, who) : await core.approvals.deny(id, who, `denied in Slack by ${who.subject}`)
      log.info({ approval: id, by: who.subject, via: 'slack', status: done.status }, 'approval decided')
      if (done.status === 'pending') {
        // counted, not yet enough (minApprovals): say so and keep the buttons
        p.notes.push(`:ballot_box_with_check: ${mention} (${escapeMrkdwn(who.subject)}) approved; more approvals are needed`)
        p.request = done
        refresh(p)
      }
    } catch (err) {
      delete p.by
      refuse(isPortcullisError(err) ? err.message : 'the decision failed')
    }
  }

  return {
    async handle(req, res) {
      if (req.method !== 'POST') {
        res.setHeader('allow', 'POST')
        return reply(res, 405, 'method_not_allowed', 'allowed: POST')
      }
      const body = await rawBody(req)
      if (!body) return reply(res, 413, 'payload_too_large', `body over ${MAX_BODY_BYTES} bytes`)
      const timestamp = req.headers['x-slack-request-timestamp']
      const signature = req.headers['x-slack-signature']
      const verdict = verifySlackSignature(await secret(config.signingSecret), typeof timestamp === 'string' ? timestamp : undefined, typeof signature === 'string' ? signature : undefined, body, now())
      if (!verdict.ok) {
        log.warn({ why: verdict.why }, 'slack: interaction refused')
        return reply(res, 401, 'unauthenticated', `slack signature: ${verdict.why}`)
      }
      const t = now()
      for (const [sig, at] of seen) if (t - at > REPLAY_WINDOW_S * 1000 * 2 || seen.size > MAX_SEEN) seen.delete(sig)
      if (seen.has(signature as string)) return reply(res, 401, 'unauthenticated', 'slack signature: this request was already taken (replay)')
      seen.set(signature as string, t)
      let payload: any
      try {
        payload = JSON.parse(new URLSearchParams(body.toString('utf8')).get('payload') ?? '')
      } catch {
        return reply(res, 400, 'bad_request', 'no JSON payload')
      }
      const action = payload?.actions?.[0]
      const userId = payload?.user?.id
      if (payload?.type !== 'block_actions' || typeof userId !== 'string' || typeof action?.value !== 'string' || (action.action_id !== APPROVE && action.action_id !== DENY))
        return reply(res, 400, 'bad_request', 'not a Portcullis approval button')
      // Slack wants its answer within 3 s; the decision and the message update follow
      reply(res, 200)
      const container = { channel: payload.container?.channel_id ?? payload.channel?.id, ts: payload.container?.message_ts ?? payload.message?.ts }
      act(userId, String(payload.user.username ?? payload.user.name ?? userId), action.action_id, action.value, container).catch(err =>
        log.error({ err, approval: action.value }, 'slack: interaction failed'),
      )
    },
    close() {
      unsubscribe()
    },
  }
}
