// Approvals: what is pending for this person (with everything the admin API tells about it: the
// statement, its parameters, blast radius and session context where the request carries them), and
// what was decided recently. The pending list refreshes itself (htmx polling); approve/deny post back.
import { approvalSummary, type ApprovalRequest, type Core, type SessionInfo } from '@portcullis/core'
import { mayDecide, maySeeApproval } from '../access.ts'
import { html, isoTime, type Html } from './html.ts'
import { csrfField, flashOob, flashSlot, page, type Flash, type PageContext } from './layout.ts'

/** how often the open page asks for the list again */
export const APPROVALS_POLL = '2s'

type Summary = ReturnType<typeof approvalSummary> & {
  parameters?: unknown
  recentStatements?: unknown
  estimate?: unknown
}

export function visibleApprovals(core: Core, ctx: PageContext): ApprovalRequest[] {
  return core.approvals
    .list()
    .filter((a) => maySeeApproval(ctx.principal, a, core.config))
    .sort((a, b) => b.created - a.created)
}

function valueText(v: unknown): string {
  if (typeof v === 'string') return v
  return JSON.stringify(v, (_k, x: unknown) => (typeof x === 'bigint' ? x.toString() : x), 2)
}

/** fields another part of the API may add (parameters, recent statements, estimate): shown when present */
function extras(s: Summary): Html {
  const rows: Html[] = []
  if (Array.isArray(s.parameters) && s.parameters.length > 0) {
    rows.push(html`<dt>Parameters</dt><dd><ol class="params">${s.parameters.map((p) => html`<li><code>${valueText(p)}</code></li>`)}</ol></dd>`)
  } else if (s.parameters !== undefined && s.parameters !== null && !Array.isArray(s.parameters)) {
    rows.push(html`<dt>Parameters</dt><dd><pre>${valueText(s.parameters)}</pre></dd>`)
  }
  if (s.estimate !== undefined && s.estimate !== null) {
    rows.push(html`<dt>Blast radius</dt><dd class="estimate"><pre>${valueText(s.estimate)}</pre></dd>`)
  }
  if (Array.isArray(s.recentStatements) && s.recentStatements.length > 0) {
    rows.push(
      html`<dt>Session so far</dt><dd><ol class="recent">${s.recentStatements.map((r) => html`<li><code>${typeof r === 'object' && r && 'statement' in r ? valueText((r as { statement: unknown }).statement) : valueText(r)}</code></li>`)}</ol></dd>`,
    )
  }
  return html`${rows}`
}

/** the requester's live sessions on the request's target (the registry's view of them) */
function liveContext(a: ApprovalRequest, sessions: SessionInfo[]): Html | '' {
  const mine = sessions.filter((x) => x.subject === a.principal.subject && x.target === a.target)
  if (mine.length === 0) return ''
  return html`<dt>Live session${mine.length > 1 ? 's' : ''}</dt><dd>${mine.map(
    (x) => html`<div class="live-session">from ${x.remote}, since ${isoTime(x.started)}${x.recent?.length ? html`; last statements:<ol class="recent">${x.recent.map((r) => html`<li><code>${r}</code></li>`)}</ol>` : ''}</div>`,
  )}</dd>`
}

function card(a: ApprovalRequest, ctx: PageContext, sessions: SessionInfo[]): Html {
  const s = approvalSummary(a) as Summary
  const canDecide = a.status === 'pending' && mayDecide(ctx.principal, a)
  const domId = `approval-${a.id.replace(/[^A-Za-z0-9_-]/g, '_')}`
  return html`<article class="card approval" id="${domId}" data-approval="${a.id}" data-status="${a.status}" aria-labelledby="${domId}-title">
  <h3 id="${domId}-title">${s.class} on ${s.target} by ${s.subject} <span class="badge ${a.status === 'approved' ? 'ok' : a.status === 'pending' ? 'warn' : 'bad'}">${a.status}</span></h3>
  <pre class="statement" aria-label="Statement">${s.statement}</pre>
  <dl>
    <dt>Requester</dt><dd>${s.subject}${s.groups.length ? html` <span class="muted">[${s.groups.join(', ')}]</span>` : ''}</dd>
    <dt>Target</dt><dd>${s.target} (${s.protocol})</dd>
    <dt>Rule</dt><dd>${s.rule} — approvers: ${s.approvers.join(', ')}</dd>
    ${s.resources.length ? html`<dt>Resources</dt><dd>${s.resources.join(', ')}</dd>` : ''}
    <dt>Requested</dt><dd>${isoTime(s.created)}</dd>
    ${a.status === 'pending' ? html`<dt>Expires</dt><dd>${isoTime(s.expires)}</dd>` : html`<dt>Decided by</dt><dd>${s.decidedBy ?? '—'}${a.reason ? html` — ${a.reason}` : ''}</dd>`}
    ${extras(s)}
    ${a.status === 'pending' && s.recentStatements === undefined ? liveContext(a, sessions) : ''}
  </dl>
  ${
    canDecide
      ? html`<form class="actions" method="post" action="/console/approvals/${encodeURIComponent(a.id)}/decide"
      hx-post="/console/approvals/${encodeURIComponent(a.id)}/decide" hx-target="#approval-list" hx-swap="outerHTML">
    ${csrfField(ctx.csrf)}
    <label for="${domId}-reason">Reason (sent with a denial)
      <input id="${domId}-reason" name="reason" type="text" maxlength="500" autocomplete="off" hx-preserve="true"></label>
    <button class="primary" type="submit" name="decision" value="approve">Approve</button>
    <button class="danger" type="submit" name="decision" value="deny">Deny</button>
  </form>`
      : a.status === 'pending'
        ? html`<p class="muted">${a.principal.subject === ctx.principal.subject ? 'Your own request: someone else in the approver groups decides.' : 'You are not in its approver groups.'}</p>`
        : ''
  }
</article>`
}

export async function approvalList(core: Core, ctx: PageContext, flash?: Flash): Promise<Html> {
  const all = visibleApprovals(core, ctx)
  // session context for approvers: only the sessions of requests they may see, never the whole list
  const sessions = all.some((a) => a.status === 'pending') ? await core.control.sessions().catch(() => [] as SessionInfo[]) : []
  const pending = all.filter((a) => a.status === 'pending')
  const decided = all.filter((a) => a.status !== 'pending').slice(0, 50)
  return html`<div id="approval-list" hx-get="/console/approvals/list" hx-trigger="every ${APPROVALS_POLL}" hx-swap="outerHTML">
  <section aria-labelledby="pending-h"><h2 id="pending-h">Pending (<span id="pending-count">${pending.length}</span>)</h2>
  ${pending.length === 0 ? html`<p class="muted">Nothing is waiting for you.</p>` : pending.map((a) => card(a, ctx, sessions))}
  </section>
  <section aria-labelledby="decided-h"><h2 id="decided-h">Recently decided</h2>
  ${decided.length === 0 ? html`<p class="muted">Nothing decided recently.</p>` : decided.map((a) => card(a, ctx, sessions))}
  </section>
</div>${flashOob(flash)}`
}

export async function approvalsPage(core: Core, ctx: PageContext): Promise<Html> {
  return page(ctx, 'approvals', 'Approvals', html`<h1>Approvals</h1>${flashSlot()}${await approvalList(core, ctx)}`)
}

/** approve or deny; the answer is the list again, with what happened on top */
export async function decide(core: Core, ctx: PageContext, id: string, form: URLSearchParams): Promise<Flash> {
  const decision = form.get('decision')
  const reason = form.get('reason')?.trim().slice(0, 500) || undefined
  if (decision !== 'approve' && decision !== 'deny') return { ok: false, text: 'choose approve or deny' }
  try {
    const done = decision === 'approve' ? await core.approvals.approve(id, ctx.principal) : await core.approvals.deny(id, ctx.principal, reason)
    return { ok: true, text: `Request ${done.id} ${done.status}.` }
  } catch (err) {
    return { ok: false, text: `Not done: ${(err as Error).message}` }
  }
}
