// The Block Kit message of one approval request (https://api.slack.com/block-kit): what is held,
// who asked, the rule, the blast radius, and Approve / Deny buttons; then the same message with
// its outcome in place of the buttons. Everything shown is escaped for Slack's mrkdwn (&, <, >),
// so a statement cannot mention @channel or forge a link, and cut to Slack's limits.
import type { ApprovalRequest, BlastRadius } from '@portcullis/core'

/** the button action ids; their value is the request id */
export const APPROVE = 'portcullis_approve'
export const DENY = 'portcullis_deny'
const SECTION_MAX = 2900

export function escapeMrkdwn(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
}

function cut(s: string, max: number): string {
  return s.length <= max ? s : `${s.slice(0, max - 1)}…`
}

function code(s: string): string {
  // a fence inside the text would end the block early
  return '```' + escapeMrkdwn(cut(s, SECTION_MAX - 8)).replace(/```/g, '`\u200b``') + '```'
}

const fmt = (n: number) => n.toLocaleString('en-US')

export function blastRadius(e: BlastRadius | null | undefined): string {
  if (e === undefined) return 'not estimated for this kind of operation'
  if (e === null) return 'unknown — no estimate could be had (rules read it the stricter way)'
  const parts: string[] = []
  if (e.estimatedRows !== undefined) parts.push(`~${fmt(e.estimatedRows)} rows (planner estimate)`)
  if (e.keys !== undefined) parts.push(`${fmt(e.keys)} keys`)
  if (e.documents !== undefined) parts.push(`${fmt(e.documents)} documents`)
  if (e.points !== undefined) parts.push(`${fmt(e.points)} points`)
  if (e.vectors !== undefined) parts.push(`${fmt(e.vectors)} vectors`)
  if (e.tables && e.tables.length > 0) parts.push(`tables ${e.tables.join(', ')}`)
  return `${parts.join(' · ') || 'nothing'} (${e.source})`
}

/** the statement as sent with its parameters, when the request carries them (approvals #14) */
function asSent(r: ApprovalRequest): { text?: string; parameters?: string[] } | undefined {
  const sent = (r as { sent?: { text?: unknown; parameters?: unknown } }).sent
  if (!sent || typeof sent !== 'object') return undefined
  return {
    ...(typeof sent.text === 'string' ? { text: sent.text } : {}),
    ...(Array.isArray(sent.parameters) ? { parameters: sent.parameters.map(String) } : {}),
  }
}

export function summaryText(r: ApprovalRequest): string {
  return `Approval needed: ${r.class} on ${r.target} by ${r.principal.subject} (${r.id})`
}

function details(r: ApprovalRequest): unknown[] {
  const sent = asSent(r)
  const blocks: unknown[] = [
    { type: 'header', text: { type: 'plain_text', text: cut(`Approval needed: ${r.class} on ${r.target}`, 150) } },
    {
      type: 'section',
      fields: [
        { type: 'mrkdwn', text: `*Requested by*\n${escapeMrkdwn(r.principal.subject)}${r.principal.groups.length ? ` (${escapeMrkdwn(r.principal.groups.join(', '))})` : ''}` },
        { type: 'mrkdwn', text: `*Rule*\n${escapeMrkdwn(r.rule)}` },
        { type: 'mrkdwn', text: `*Approvers*\n${escapeMrkdwn(r.approvers.join(', ') || '(none)')}` },
        { type: 'mrkdwn', text: `*Expires*\n<!date^${Math.floor(r.expires / 1000)}^{date_short_pretty} {time_secs}|${new Date(r.expires).toISOString()}>` },
      ],
    },
    { type: 'section', text: { type: 'mrkdwn', text: `*Statement*\n${code(sent?.text ?? r.statement)}` } },
  ]
  if (sent?.parameters && sent.parameters.length > 0)
    blocks.push({ type: 'section', text: { type: 'mrkdwn', text: `*Parameters*\n${code(sent.parameters.map((p, i) => `$${i + 1} = ${p}`).join('\n'))}` } })
  blocks.push({ type: 'section', text: { type: 'mrkdwn', text: `*Blast radius*\n${escapeMrkdwn(blastRadius(r.estimate))}` } })
  blocks.push({ type: 'context', elements: [{ type: 'mrkdwn', text: `request \`${escapeMrkdwn(r.id)}\` · ${escapeMrkdwn(r.protocol)} · resources: ${escapeMrkdwn(cut(r.resources.join(', ') || '(none)', 500))}` }] })
  return blocks
}

/** the message while the request is pending; `notes` (a refused click…) go under the buttons */
export function pendingBlocks(r: ApprovalRequest, notes: string[] = []): unknown[] {
  return [
    ...details(r),
    {
      type: 'actions',
      block_id: `portcullis:${r.id}`,
      elements: [
        { type: 'button', action_id: APPROVE, style: 'primary', text: { type: 'plain_text', text: 'Approve' }, value: r.id },
        { type: 'button', action_id: DENY, style: 'danger', text: { type: 'plain_text', text: 'Deny' }, value: r.id },
      ],
    },
    ...notes.slice(-5).map(n => ({ type: 'context', elements: [{ type: 'mrkdwn', text: cut(n, SECTION_MAX) }] })),
  ]
}

/** the message once decided: the outcome where the buttons were */
export function outcomeBlocks(r: ApprovalRequest, by?: string): unknown[] {
  const who = by ?? (r.decidedBy ? escapeMrkdwn(r.decidedBy) : undefined)
  const why = r.reason ? `: ${escapeMrkdwn(r.reason)}` : ''
  const line =
    r.status === 'approved' ? `:white_check_mark: *Approved* by ${who ?? 'an approver'}`
    : r.status === 'denied' ? `:no_entry: *Denied* by ${who ?? 'an approver'}${why}`
    : r.status === 'expired' ? ':hourglass: *Expired* — nobody decided in time; the statement was refused'
    : `:leftwards_arrow_with_hook: *Withdrawn*${why}`
  return [...details(r), { type: 'section', text: { type: 'mrkdwn', text: line } }]
}
