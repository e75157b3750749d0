// What a held or windowed statement's decision says, from the approval request that answered it:
// pure answers, kept apart from the session that asks (session.ts decide()).
import type { HoldOutcome } from '../approvals/approvals.ts'
import type { ApprovalRequest, Decision, MaskPlan } from '../types.ts'

/** `work`, or the signal's reason as soon as it aborts (the work itself runs on, holding nothing) */
export function untilAborted<T>(work: Promise<T>, signal: AbortSignal): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason)
    signal.addEventListener('abort', onAbort, { once: true })
    work.then(
      v => {
        signal.removeEventListener('abort', onAbort)
        resolve(v)
      },
      e => {
        signal.removeEventListener('abort', onAbort)
        reject(e)
      },
    )
  })
}

export function votersOf(r: ApprovalRequest): string {
  const by = (r.approvals ?? []).map(v => v.by)
  return by.length > 0 ? by.join(', ') : (r.decidedBy ?? 'an approver')
}

/** an approval window's answer: the statement runs, naming the approval that opened the window */
export function byWindow(rule: string | null, approvalId: string, masks: MaskPlan): Decision {
  return { action: 'allow', rule, reason: `approved by window of ${approvalId}`, masks, approvalId }
}

/** defer mode's answer: a block that names the pending request; the codec says how to poll */
export function deferred(rule: string | null, r: ApprovalRequest, masks: MaskPlan): Decision {
  return { action: 'block', rule, reason: `approval pending: request ${r.id}`, masks, approvalId: r.id, deferred: true }
}

/** the Decision a finished hold comes to */
export function outcomeDecision(outcome: HoldOutcome, rule: string | null, masks: MaskPlan): Decision {
  if (outcome.status === 'unavailable')
    // a block like any other, so every codec answers it in its own protocol and keeps the session
    return { action: 'block', rule, reason: outcome.reason, masks }
  if (outcome.status === 'approved')
    return { action: 'allow', rule, reason: `approved by ${votersOf(outcome.request)}`, masks, approvalId: outcome.request.id }
  if (outcome.status === 'denied')
    return {
      action: 'block',
      rule,
      reason: `denied by ${outcome.request.decidedBy}${outcome.reason ? `: ${outcome.reason}` : ''}`,
      masks,
      approvalId: outcome.request.id,
    }
  return { action: 'block', rule, reason: `approval ${outcome.request.id} timed out`, masks, approvalId: outcome.request.id }
}
