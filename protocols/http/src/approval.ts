// What an approver sees of an HTTP request held for approval, the hash the request binds to, and
// the wait for the decision (held, or deferred with the pending request).
import { randomBytes } from 'node:crypto'
import type { Duplex } from 'node:stream'
import { statementHash, type Decision, type Estimator, type MaskPlan, type Operation, type Session, type StatementAsSent } from '@portcullis/core'
import { httpError } from './errors.ts'
import type { Upstreamed } from './forward.ts'
import { maskJsonText } from './json-mask.ts'

/** a body shown to an approver is cut here (the hash covers all of it) */
const SHOWN_BODY_MAX = 4096

/**
 * `METHOD /path?query` and the JSON body, masked by the session's plan (field rules and detectors)
 * for display; the hash covers the method, the full path and every byte of the body as sent.
 */
export function sentHttp(method: string, path: string, raw: Buffer | undefined, withBody: boolean, masks: MaskPlan): StatementAsSent {
  const text = `${method} ${masks.hasDetectors ? masks.scan(path).text : path}`
  if (!withBody) return { text, hash: statementHash(`${method} ${path}`) }
  if (!raw) {
    // a streamed body is not read before the decision: nothing to bind to. A fresh hash per request
    // means no retry is ever released by another's approval (fail closed; use approvalMode: wait)
    return { text, parameters: ['<streamed body, not inspected>'], hash: statementHash(`${method} ${path}`, [randomBytes(16)]) }
  }
  let shown = raw.toString('utf8')
  if (!masks.empty && raw.length > 0) shown = maskJsonText(shown, masks, true).text
  if (shown.length > SHOWN_BODY_MAX) shown = shown.slice(0, SHOWN_BODY_MAX) + `… (${raw.length} bytes)`
  return { text, parameters: [shown], hash: statementHash(`${method} ${path}`, [raw]) }
}

/** decide when an approval is asked for, honouring approvalMode: 'wait' holds the request, 'defer' answers 202 at once */
export function decide(session: Session, op: Operation, up: Upstreamed, socket: Duplex, sent: () => StatementAsSent, estimator?: Estimator): Promise<Decision> {
  const est = estimator ? { estimator } : {}
  // defer: the core answers at once with the pending request; the same request sent again runs once approved
  if (session.target.options.approvalMode === 'defer') return session.decide(op, { defer: true, sent, ...est })
  // a client that goes away withdraws its pending approval
  const controller = (up.controller = new AbortController())
  if (up.reason) controller.abort(up.reason)
  // A FIN is a half-close as far as answering goes (what was sent is answered), but a request held
  // for a human is withdrawn by it: TCP cannot tell "done sending" from "gone", and an approval
  // granted for a client that left would run a write nobody waits for. The client, if still
  // there, gets the refusal.
  const onEnd = () => controller.abort(CLIENT_ENDED())
  if (socket.readableEnded) onEnd()
  else socket.once('end', onEnd)
  return session.decide(op, { signal: controller.signal, sent, ...est }).finally(() => socket.off('end', onEnd))
}

const CLIENT_ENDED = () => httpError(403, 'policy_blocked', 'approval withdrawn: the client closed its side of the connection while the request waited for approval')
