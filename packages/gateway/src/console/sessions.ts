// Live sessions of every instance: who, target, protocol, since, last statements, bytes. Admins see
// all and may end one, or all of a subject's; approvers see the sessions their pending requests come
// from (same subject and target), read only.
import type { Core, SessionInfo } from '@portcullis/core'
import { mayDecide } from '../access.ts'
import { bytes, html, isoTime, type Html } from './html.ts'
import { csrfField, flashOob, flashSlot, page, type Flash, type PageContext } from './layout.ts'

export async function visibleSessions(core: Core, ctx: PageContext): Promise<SessionInfo[]> {
  const all = await core.control.sessions()
  if (ctx.roles.admin) return all
  const mine = core.approvals.list().filter((a) => a.status === 'pending' && mayDecide(ctx.principal, a))
  return all.filter((s) => mine.some((a) => a.principal.subject === s.subject && a.target === s.target))
}

function row(s: SessionInfo, ctx: PageContext): Html {
  return html`<tr data-session="${s.id}" data-subject="${s.subject ?? ''}">
  <td data-label="Who">${s.subject ?? html`<span class="muted">not signed in</span>`}${s.groups?.length ? html` <span class="muted">[${s.groups.join(', ')}]</span>` : ''}</td>
  <td data-label="Target">${s.target}</td>
  <td data-label="Protocol">${s.protocol}</td>
  <td data-label="Since">${isoTime(s.started)}</td>
  <td data-label="Last statements">${s.recent?.length ? html`<ol class="recent">${s.recent.map((r) => html`<li><code>${r}</code></li>`)}</ol>` : html`<span class="muted">none yet</span>`}</td>
  <td data-label="Bytes">${bytes(s.bytes)}</td>
  <td data-label="Actions">${
    ctx.roles.admin
      ? html`<form method="post" action="/console/sessions/end" hx-post="/console/sessions/end" hx-target="#session-list" hx-swap="outerHTML">
      ${csrfField(ctx.csrf)}<input type="hidden" name="id" value="${s.id}">
      <button class="danger" type="submit" aria-label="End session ${s.id} of ${s.subject ?? 'unknown'}">End</button></form>
      ${s.subject ? html`<form method="post" action="/console/sessions/end-subject" hx-post="/console/sessions/end-subject" hx-target="#session-list" hx-swap="outerHTML">
      ${csrfField(ctx.csrf)}<input type="hidden" name="subject" value="${s.subject}">
      <button type="submit" aria-label="End every session of ${s.subject}">End all of ${s.subject}</button></form>` : ''}`
      : ''
  }</td>
</tr>`
}

export async function sessionList(core: Core, ctx: PageContext, flash?: Flash): Promise<Html> {
  let list: SessionInfo[]
  let problem: string | undefined
  try {
    list = await visibleSessions(core, ctx)
  } catch (err) {
    list = []
    problem = (err as Error).message
  }
  list.sort((a, b) => b.started - a.started)
  return html`<div id="session-list" hx-get="/console/sessions/list" hx-trigger="every 3s" hx-swap="outerHTML">
  ${problem ? html`<p class="flash bad" role="alert">${problem}</p>` : ''}
  ${
    list.length === 0
      ? html`<p class="muted">No live sessions${ctx.roles.admin ? '' : ' behind your pending requests'}.</p>`
      : html`<table class="stack"><caption class="sr-only">Live sessions</caption>
    <thead><tr><th scope="col">Who</th><th scope="col">Target</th><th scope="col">Protocol</th><th scope="col">Since</th><th scope="col">Last statements</th><th scope="col">Bytes out</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
    <tbody>${list.map((s) => row(s, ctx))}</tbody></table>`
  }
</div>${flashOob(flash)}`
}

export async function sessionsPage(core: Core, ctx: PageContext): Promise<Html> {
  return page(ctx, 'sessions', 'Sessions', html`<h1>Live sessions</h1>${flashSlot()}${await sessionList(core, ctx)}`)
}

/** admins only (the caller checks); ends one session or all of a subject's, on every instance */
export async function endSessions(core: Core, ctx: PageContext, what: 'one' | 'subject', form: URLSearchParams): Promise<Flash> {
  const by = `ended from the console by ${ctx.principal.subject}`
  try {
    if (what === 'one') {
      const id = form.get('id') ?? ''
      return (await core.control.kill(id, by)) ? { ok: true, text: `Session ${id} ended.` } : { ok: false, text: `No live session ${id}.` }
    }
    const subject = form.get('subject') ?? ''
    if (!subject) return { ok: false, text: 'no subject given' }
    const n = await core.control.killSubject(subject, by)
    return { ok: true, text: `${n} session${n === 1 ? '' : 's'} of ${subject} ended.` }
  } catch (err) {
    return { ok: false, text: `Not done: ${(err as Error).message}` }
  }
}
