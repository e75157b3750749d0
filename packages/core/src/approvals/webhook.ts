// Announces a new approval request. Best effort: a slow or failing webhook never holds the operation
// longer than its own timeout, and never blocks it.
import type { ApprovalRequest, SecretRef } from '../types.ts'

export interface WebhookConfig {
  url: string | SecretRef
  format: 'json' | 'slack'
}

/**
 * What approvers see of a request, in the webhook and the admin API alike: who, what and where —
 * no token id, nothing the requester's token carried beyond who they are.
 */
export function approvalSummary(request: ApprovalRequest) {
  return {
    id: request.id,
    status: request.status,
    subject: request.principal.subject,
    groups: request.principal.groups,
    target: request.target,
    protocol: request.protocol,
    class: request.class,
    statement: request.statement,
    fingerprint: request.fingerprint,
    // as sent: the text and its bound parameters, masked where a masking rule covers a value
    text: request.sent?.text ?? request.statement,
    parameters: request.sent?.parameters ?? [],
    statementHash: request.statementHash ?? null,
    policyVersion: request.policyVersion ?? null,
    resources: request.resources,
    rule: request.rule,
    ruleReason: request.ruleReason ?? null,
    approvers: request.approvers,
    minApprovals: request.minApprovals ?? 1,
    approvals: (request.approvals ?? []).map(v => ({ by: v.by, at: new Date(v.at).toISOString(), ...(v.reason ? { reason: v.reason } : {}) })),
    recent: (request.recent ?? []).map(r => ({ at: new Date(r.at).toISOString(), statement: r.statement, class: r.class, action: r.action })),
    estimate: request.estimate ?? null,
    mode: request.mode ?? 'wait',
    created: new Date(request.created).toISOString(),
    expires: new Date(request.expires).toISOString(),
    ...(request.released !== undefined ? { released: new Date(request.released).toISOString() } : {}),
    ...(request.decidedBy ? { decidedBy: request.decidedBy } : {}),
    ...(request.reason ? { reason: request.reason } : {}),
  }
}

export function webhookBody(request: ApprovalRequest, format: 'json' | 'slack'): unknown {
  if (format === 'json') return { type: 'approval.requested', request: approvalSummary(request) }
  const statement = request.statement.length > 500 ? request.statement.slice(0, 500) + '…' : request.statement
  return {
    text:
      `Portcullis approval ${request.id}: ${request.principal.subject} wants to run a ${request.class} ` +
      `on ${request.target} (rule ${request.rule}, approvers: ${request.approvers.join(', ')})\n` +
      '```' + statement.replace(/```/g, "'''") + '```\n' +
      `Approve: portcullis approvals approve ${request.id} · Deny: portcullis approvals deny ${request.id}`,
  }
}

export async function announce(
  request: ApprovalRequest,
  hook: WebhookConfig,
  log: (msg: string) => void,
  resolve: (ref: SecretRef) => Promise<string>,
  timeoutMs = 5000,
): Promise<void> {
  try {
    // the URL may carry a credential: it never appears in a log line
    const url = typeof hook.url === 'string' ? hook.url : await resolve(hook.url)
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(webhookBody(request, hook.format)),
      signal: AbortSignal.timeout(timeoutMs),
    })
    await res.body?.cancel()
    if (!res.ok) log(`approval webhook answered ${res.status} for ${request.id}`)
  } catch (err) {
    log(`approval webhook failed for ${request.id}: ${(err as Error).name}`)
  }
}
