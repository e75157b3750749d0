// Slack's request signing (https://api.slack.com/authentication/verifying-requests-from-slack):
// X-Slack-Signature is 'v0=' + hex(HMAC-SHA256(signing secret, 'v0:' + X-Slack-Request-Timestamp
// + ':' + the raw body)). A request more than five minutes from our clock is refused whatever its
// signature says: a captured request cannot be replayed later.
import { createHmac, timingSafeEqual } from 'node:crypto'

export const REPLAY_WINDOW_S = 5 * 60

export type SignatureVerdict = { ok: true } | { ok: false; why: string }

export function verifySlackSignature(secret: string, timestamp: string | undefined, signature: string | undefined, rawBody: Buffer, nowMs: number): SignatureVerdict {
  if (!timestamp || !signature) return { ok: false, why: 'missing X-Slack-Request-Timestamp or X-Slack-Signature' }
  if (!/^\d{1,12}$/.test(timestamp)) return { ok: false, why: 'bad X-Slack-Request-Timestamp' }
  if (Math.abs(nowMs / 1000 - Number(timestamp)) > REPLAY_WINDOW_S) return { ok: false, why: 'request timestamp outside the five-minute window' }
  if (!/^v0=[0-9a-f]{64}$/.test(signature)) return { ok: false, why: 'bad X-Slack-Signature' }
  const mac = createHmac('sha256', secret)
  mac.update(`v0:${timestamp}:`)
  mac.update(rawBody)
  const expected = Buffer.from(`v0=${mac.digest('hex')}`)
  const given = Buffer.from(signature)
  // same length by the pattern above: the compare itself takes the same time for any mismatch
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { ok: false, why: 'signature mismatch' }
  return { ok: true }
}
