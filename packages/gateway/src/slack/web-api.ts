// The few Slack Web API methods the approval messages need, with the bot token as a bearer
// credential (never logged). Slack answers HTTP 200 with { ok: false, error } for most failures,
// 429 with Retry-After when rate limited.
import type { SecretRef } from '@portcullis/core'

export interface SlackApi {
  postMessage(channel: string, text: string, blocks: unknown[]): Promise<{ channel: string; ts: string }>
  update(channel: string, ts: string, text: string, blocks: unknown[]): Promise<void>
  /** the Slack user id of an email, or undefined when Slack knows none (users_not_found) */
  lookupByEmail(email: string): Promise<string | undefined>
}

export class SlackApiError extends Error {
  constructor(
    readonly method: string,
    readonly error: string,
  ) {
    super(`slack ${method}: ${error}`)
  }
}

const TIMEOUT_MS = 10_000
const MAX_REPLY_BYTES = 1 << 20

export function slackApi(apiUrl: string, botToken: SecretRef, secret: (ref: SecretRef) => Promise<string>): SlackApi {
  async function call(method: string, init: { json?: unknown; query?: Record<string, string> }): Promise<Record<string, unknown>> {
    const token = await secret(botToken)
    const url = new URL(`${apiUrl}/${method}`)
    for (const [k, v] of Object.entries(init.query ?? {})) url.searchParams.set(k, v)
    const res = await fetch(url, {
      method: init.json !== undefined ? 'POST' : 'GET',
      headers: {
        authorization: `Bearer ${token}`,
        ...(init.json !== undefined ? { 'content-type': 'application/json; charset=utf-8' } : {}),
      },
      ...(init.json !== undefined ? { body: JSON.stringify(init.json) } : {}),
      signal: AbortSignal.timeout(TIMEOUT_MS),
    })
    if (res.status === 429) throw new SlackApiError(method, `rate_limited (retry after ${res.headers.get('retry-after') ?? '?'} s)`)
    const text = await res.text()
    if (text.length > MAX_REPLY_BYTES) throw new SlackApiError(method, 'reply too large')
    let body: Record<string, unknown>
    try {
      body = JSON.parse(text) as Record<string, unknown>
    } catch {
      throw new SlackApiError(method, `HTTP ${res.status}, not JSON`)
    }
    if (body.ok !== true) throw new SlackApiError(method, typeof body.error === 'string' ? body.error : `HTTP ${res.status}`)
    return body
  }
  return {
    async postMessage(channel, text, blocks) {
      const r = await call('chat.postMessage', { json: { channel, text, blocks, unfurl_links: false, unfurl_media: false } })
      if (typeof r.channel !== 'string' || typeof r.ts !== 'string') throw new SlackApiError('chat.postMessage', 'no channel/ts in the reply')
      return { channel: r.channel, ts: r.ts }
    },
    async update(channel, ts, text, blocks) {
      await call('chat.update', { json: { channel, ts, text, blocks } })
    },
    async lookupByEmail(email) {
      try {
        const r = await call('users.lookupByEmail', { query: { email } })
        const id = (r.user as { id?: unknown } | undefined)?.id
        return typeof id === 'string' ? id : undefined
      } catch (err) {
        if (err instanceof SlackApiError && err.error === 'users_not_found') return undefined
        throw err
      }
    },
  }
}
