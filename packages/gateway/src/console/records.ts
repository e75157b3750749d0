// Recordings (list with verify status, replay viewer) and the audit search: what auditors read.
// A replay shows the recording as written, which is after masking: nothing here can unmask a value.
import type { Core } from '@portcullis/core'
import { AuditUnavailable, auditFile, parseAuditQuery, searchAudit } from '../audit-search.ts'
import type { Recordings } from '../recordings.ts'
import { bytes, html, isoTime, type Html } from './html.ts'
import { page, type PageContext } from './layout.ts'

const CLASSES = ['session', 'read', 'write', 'delete', 'bulk-delete', 'schema-change', 'admin']
const DECISIONS = ['allow', 'block', 'approve']

function statusBadge(status: string, signature?: string): Html {
  const good = status === 'intact' && signature !== 'invalid'
  return html`<span class="badge ${good ? 'ok' : 'bad'}" data-verify="${status}">${status}${signature && signature !== 'absent' ? `, signature ${signature}` : ''}</span>`
}

function field(name: string, label: string, value: string | null, type = 'text'): Html {
  return html`<label for="f-${name}">${label}<input id="f-${name}" name="${name}" type="${type}" value="${value ?? ''}"></label>`
}

function choice(name: string, label: string, value: string | null, options: string[]): Html {
  return html`<label for="f-${name}">${label}<select id="f-${name}" name="${name}"><option value="">any</option>${options.map((o) => html`<option${o === value ? html` selected` : ''}>${o}</option>`)}</select></label>`
}

export async function recordingsPage(recs: Recordings, ctx: PageContext, q: URLSearchParams): Promise<Html> {
  const list = await recs.list({
    ...(q.get('day') ? { day: q.get('day')! } : {}),
    ...(q.get('target') ? { target: q.get('target')! } : {}),
    ...(q.get('principal') ? { principal: q.get('principal')! } : {}),
  })
  const body = html`<h1>Recordings</h1>
<form class="filters" method="get" action="/console/recordings" role="search" aria-label="Filter recordings">
  ${field('day', 'Day', q.get('day'), 'date')}${field('target', 'Target', q.get('target'))}${field('principal', 'Principal', q.get('principal'))}
  <button type="submit">Filter</button>
</form>
${
  list.length === 0
    ? html`<p class="muted">No recordings match.</p>`
    : html`<table class="stack"><caption class="sr-only">Recordings</caption>
<thead><tr><th scope="col">Started</th><th scope="col">Principal</th><th scope="col">Target</th><th scope="col">Records</th><th scope="col">Size</th><th scope="col">Verify</th><th scope="col"><span class="sr-only">Open</span></th></tr></thead>
<tbody>${list.map(
        (r) => html`<tr data-recording="${r.id}">
  <td data-label="Started">${r.start ? isoTime(r.start) : r.day}</td>
  <td data-label="Principal">${r.subject ?? '—'}</td>
  <td data-label="Target">${r.target ?? '—'}${r.protocol ? html` <span class="muted">(${r.protocol})</span>` : ''}</td>
  <td data-label="Records">${r.records}</td>
  <td data-label="Size">${bytes(r.bytes)}</td>
  <td data-label="Verify">${statusBadge(r.status, r.signature)}${r.problem ? html`<br><span class="bad">record ${r.problem.record}: ${r.problem.message}</span>` : ''}</td>
  <td data-label="Open"><a href="/console/recordings/${r.day}/${encodeURIComponent(r.id)}">Replay<span class="sr-only"> ${r.id}</span></a></td>
</tr>`,
      )}</tbody></table>`
}`
  return page(ctx, 'recordings', 'Recordings', body)
}

export async function replayPage(recs: Recordings, ctx: PageContext, day: string, id: string): Promise<Html | undefined> {
  const t = await recs.replay(day, id)
  if (!t) return undefined
  const v = t.verify
  const broken = v.status !== 'intact' || v.signature === 'invalid'
  const failAt = v.problem?.record
  const h = t.header
  const body = html`<h1>Replay <code>${id}</code></h1>
<p class="integrity ${broken ? 'bad' : 'ok'}" id="integrity" role="${broken ? 'alert' : 'status'}">Integrity: ${v.status}${v.signature && v.signature !== 'absent' ? `, signature ${v.signature}` : ''}${
    v.problem ? ` — fails at record ${v.problem.record} (byte ${v.problem.offset}): ${v.problem.message}. Records from there on are marked and cannot be trusted.` : ` (${v.records} records)`
  }</p>
${h ? html`<dl class="card"><dt>Principal</dt><dd>${h.principal.subject}${h.principal.groups.length ? ` [${h.principal.groups.join(', ')}]` : ''} from ${h.principal.issuer}</dd><dt>Target</dt><dd>${h.target} (${h.protocol})</dd><dt>Started</dt><dd>${isoTime(h.start)}</dd></dl>` : ''}
<table class="stack transcript"><caption class="sr-only">Transcript</caption>
<thead><tr><th scope="col">#</th><th scope="col">Time</th><th scope="col">Record</th><th scope="col">What</th></tr></thead>
<tbody>${t.entries.map((e) => {
    const bad = failAt !== undefined && e.index >= failAt
    return html`<tr class="${bad ? 'broken' : ''} rec-${e.type}" data-index="${e.index}"${bad ? html` data-integrity="fails"` : ''}>
  <td data-label="#">${e.index}${bad ? html` <span class="bad" aria-label="integrity fails here">⚠</span>` : ''}</td>
  <td data-label="Time">${isoTime(e.time)}</td>
  <td data-label="Record">${e.type}</td>
  <td data-label="What"><pre>${e.lines.join('\n')}</pre></td>
</tr>`
  })}</tbody></table>
${t.more ? html`<p class="muted">${t.more} more records not shown.</p>` : ''}
${t.seal ? html`<p>Sealed ${isoTime(t.seal.time)} after ${t.seal.payload.records} records${t.seal.payload.reason ? ` (${t.seal.payload.reason})` : ''}.</p>` : html`<p class="bad">Not sealed.</p>`}
<p><a href="/console/recordings">Back to recordings</a></p>`
  return page(ctx, 'recordings', `Replay ${id}`, body)
}

export async function auditPage(core: Core, ctx: PageContext, params: URLSearchParams): Promise<Html> {
  const q = parseAuditQuery(params)
  const file = auditFile(core)
  let result: Html
  if (!file) {
    result = html`<p class="flash bad">The audit log goes to stdout (audit.destination): it can be searched here only when it is a file.</p>`
  } else {
    try {
      const found = await searchAudit(file, q)
      const pages = Math.max(1, Math.ceil(found.total / found.pageSize))
      const link = (p: number) => {
        const u = new URLSearchParams(params)
        u.set('page', String(p))
        return `/console/audit?${u}`
      }
      result = html`<p id="audit-total">${found.total} event${found.total === 1 ? '' : 's'} match; page ${found.page + 1} of ${pages}.</p>
<table class="stack"><caption class="sr-only">Audit events, newest first</caption>
<thead><tr><th scope="col">Time</th><th scope="col">Subject</th><th scope="col">Target</th><th scope="col">Class</th><th scope="col">Decision</th><th scope="col">Statement</th><th scope="col">Rows / bytes</th></tr></thead>
<tbody>${found.events.map(
        (e) => html`<tr class="audit-event">
  <td data-label="Time">${isoTime(e.time)}</td><td data-label="Subject">${e.principal?.sub ?? '—'}</td><td data-label="Target">${e.target}</td>
  <td data-label="Class">${e.class ?? ''}</td><td data-label="Decision">${e.decision ?? ''}${e.rule ? html` <span class="muted">(${e.rule})</span>` : ''}${e.error ? html` <span class="bad">${e.error}</span>` : ''}</td>
  <td data-label="Statement"><code>${e.statement ?? ''}</code></td><td data-label="Rows / bytes">${e.rows ?? ''}${e.bytes !== undefined ? ` / ${bytes(e.bytes)}` : ''}${e.masked ? html` <span class="warn">${e.masked} masked</span>` : ''}</td>
</tr>`,
      )}</tbody></table>
<nav aria-label="Audit pages" class="actions">${found.page > 0 ? html`<a href="${link(found.page - 1)}" rel="prev">Newer</a>` : ''}${found.page + 1 < pages ? html`<a href="${link(found.page + 1)}" rel="next">Older</a>` : ''}</nav>`
    } catch (err) {
      if (!(err instanceof RangeError) && !(err instanceof AuditUnavailable)) throw err
      result = html`<p class="flash bad" role="alert">${err.message}</p>`
    }
  }
  const body = html`<h1>Audit</h1>
<form class="filters" method="get" action="/console/audit" role="search" aria-label="Search the audit log">
  ${field('subject', 'Subject', q.subject ?? null)}${field('target', 'Target', q.target ?? null)}
  ${choice('class', 'Class', q.class ?? null, CLASSES)}${choice('decision', 'Decision', q.decision ?? null, DECISIONS)}
  ${field('from', 'From (ISO time)', q.from ?? null)}${field('to', 'To (ISO time)', q.to ?? null)}
  <button type="submit">Search</button>
</form>
${result}`
  return page(ctx, 'audit', 'Audit', body)
}
