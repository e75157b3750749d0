// The page shell: navigation by role, who is signed in, logout, and the CSRF token htmx sends with
// every request it makes (hx-headers), which plain forms carry as a hidden field.
import type { Principal } from '@portcullis/core'
import type { Roles } from '../access.ts'
import { CSS, HTMX } from './assets.ts'
import { html, type Html } from './html.ts'

export interface PageContext {
  principal: Principal
  roles: Roles
  csrf: string
}

export type PageName = 'approvals' | 'sessions' | 'recordings' | 'audit' | 'policy'

export const PAGES: { name: PageName; title: string; may: (r: Roles) => boolean }[] = [
  { name: 'approvals', title: 'Approvals', may: (r) => r.admin || r.approver },
  { name: 'sessions', title: 'Sessions', may: (r) => r.admin || r.approver },
  { name: 'recordings', title: 'Recordings', may: (r) => r.admin || r.auditor },
  { name: 'audit', title: 'Audit', may: (r) => r.admin || r.auditor },
  { name: 'policy', title: 'Policy', may: (r) => r.admin },
]

export function mayOpen(name: PageName, roles: Roles): boolean {
  return PAGES.find((p) => p.name === name)!.may(roles)
}

export function csrfField(csrf: string): Html {
  return html`<input type="hidden" name="_csrf" value="${csrf}">`
}

function head(title: string): Html {
  return html`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="htmx-config" content='{"includeIndicatorStyles":false,"allowEval":false,"allowScriptTags":false,"selfRequestsOnly":true}'>
<title>${title} · Portcullis</title>
<link rel="stylesheet" href="${CSS.path}">
<script src="${HTMX.path}" defer></script>
</head>`
}

export interface Flash {
  ok: boolean
  text: string
}

/** Where an action's confirmation appears: outside the lists that poll, so that a poll answer that
 * lands after the action's answer cannot wipe it (it did: the sessions list polls every 3 s). */
export function flashSlot(): Html {
  return html`<div id="flash" role="status" aria-live="polite"></div>`
}

/** An action's answer carries its confirmation out of band into the slot (htmx hx-swap-oob). */
export function flashOob(flash: Flash | undefined): Html | '' {
  if (!flash) return ''
  return html`<div id="flash" role="status" aria-live="polite" hx-swap-oob="true"><p class="flash ${flash.ok ? 'ok' : 'bad'}">${flash.text}</p></div>`
}

export function page(ctx: PageContext, current: PageName | undefined, title: string, body: Html): Html {
  const nav = PAGES.filter((p) => p.may(ctx.roles))
  return html`${head(title)}
<body hx-headers='${JSON.stringify({ 'x-csrf-token': ctx.csrf })}'>
<a class="sr-only" href="#main">Skip to content</a>
<header>
  <span class="brand">Portcullis</span>
  <nav aria-label="Console"><ul>
    ${nav.map((p) => html`<li><a href="/console/${p.name}"${p.name === current ? html` aria-current="page"` : ''}>${p.title}</a></li>`)}
  </ul></nav>
  <div class="who">
    <span>Signed in as <strong id="who">${ctx.principal.subject}</strong></span>
    <form method="post" action="/console/logout">${csrfField(ctx.csrf)}<button type="submit">Sign out</button></form>
  </div>
</header>
<main id="main">
${body}
</main>
</body></html>`
}

/** pages for people who are not (or not yet) signed in: no navigation, no token */
export function plainPage(title: string, body: Html): Html {
  return html`${head(title)}
<body><header><span class="brand">Portcullis</span></header>
<main id="main">
${body}
</main></body></html>`
}
