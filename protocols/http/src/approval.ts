// What an approver sees of an HTTP request held for approval, and the hash the request binds to.
import { randomBytes } from 'node:crypto'
import { statementHash, type MaskPlan, type StatementAsSent } from '@portcullis/core'
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
