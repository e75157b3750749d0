// Policy: the running rules and masking rules, and a "what would happen" form that classifies a
// request and runs the running config's rules on it, the way `portcullis explain --config` does.
import type { Core, Principal } from '@portcullis/core'
import { classify } from '../commands/explain.ts'
import { html, type Html } from './html.ts'
import { csrfField, page, type PageContext } from './layout.ts'

const PROTOCOL_FIELD = { postgres: 'sql', redis: 'command', http: 'request' } as const
const MAX_INPUT = 64 * 1024

function rulesTable(core: Core): Html {
  const rules = core.config.rules
  return html`<table class="stack rules"><caption class="sr-only">Rules, in config order</caption>
<thead><tr><th scope="col">Rule</th><th scope="col">When</th><th scope="col">Action</th><th scope="col">Approvers</th></tr></thead>
<tbody>${rules.map(
    (r) => html`<tr><td data-label="Rule"><code>${r.id}</code></td><td data-label="When"><code>${JSON.stringify(r.when)}</code></td>
  <td data-label="Action"><span class="badge ${r.action === 'allow' ? 'ok' : r.action === 'block' ? 'bad' : 'warn'}">${r.action}</span>${r.reason ? html` <span class="muted">${r.reason}</span>` : ''}</td>
  <td data-label="Approvers">${r.approvers?.join(', ') ?? ''}</td></tr>`,
  )}</tbody></table>`
}

function maskingTable(core: Core): Html {
  const masks = core.config.masking as unknown as Array<Record<string, unknown>>
  if (masks.length === 0) return html`<p class="muted">No masking rules.</p>`
  return html`<table class="stack"><caption class="sr-only">Masking rules</caption>
<thead><tr><th scope="col">Rule</th><th scope="col">Definition</th></tr></thead>
<tbody>${masks.map((m) => html`<tr><td data-label="Rule"><code>${String(m.id ?? '')}</code></td><td data-label="Definition"><code>${JSON.stringify(m)}</code></td></tr>`)}</tbody></table>`
}

function explainForm(core: Core, ctx: PageContext, form?: URLSearchParams): Html {
  const v = (k: string) => form?.get(k) ?? ''
  const protocol = v('protocol') || 'postgres'
  return html`<form method="post" action="/console/policy" class="card" aria-labelledby="explain-h">
  <h2 id="explain-h">What would happen</h2>
  ${csrfField(ctx.csrf)}
  <div class="filters">
    <label for="x-target">Target<select id="x-target" name="target">${core.config.targets.map((t) => html`<option value="${t.name}"${t.name === v('target') ? html` selected` : ''}>${t.name} (${t.protocol})</option>`)}</select></label>
    <label for="x-protocol">Protocol<select id="x-protocol" name="protocol">${['postgres', 'redis', 'http'].map((p) => html`<option${p === protocol ? html` selected` : ''}>${p}</option>`)}</select></label>
    <label for="x-subject">Subject<input id="x-subject" name="subject" value="${v('subject')}"></label>
    <label for="x-groups">Groups (comma separated)<input id="x-groups" name="groups" value="${v('groups')}"></label>
  </div>
  <label for="x-text">SQL, Redis command, or HTTP 'METHOD /path'<textarea id="x-text" name="text" rows="3" cols="70" required>${v('text')}</textarea></label>
  <label for="x-body">HTTP body (JSON, optional)<textarea id="x-body" name="body" rows="2" cols="70">${v('body')}</textarea></label>
  <div class="actions"><button class="primary" type="submit">Explain</button></div>
</form>`
}

export async function explainResult(core: Core, form: URLSearchParams): Promise<Html> {
  const protocol = form.get('protocol') ?? ''
  const text = (form.get('text') ?? '').slice(0, MAX_INPUT)
  const key = PROTOCOL_FIELD[protocol as keyof typeof PROTOCOL_FIELD]
  if (!key) return html`<p class="flash bad" role="alert">Choose postgres, redis or http.</p>`
  const target = core.config.targets.find((t) => t.name === form.get('target'))
  if (!target) return html`<p class="flash bad" role="alert">No such target in the running config.</p>`
  try {
    const body = form.get('body')?.trim()
    const op = await classify({ protocol, [key]: text, ...(body ? { body: body.slice(0, MAX_INPUT) } : {}) })
    const principal: Principal = {
      subject: form.get('subject')?.trim() || 'anonymous',
      groups: (form.get('groups') ?? '').split(',').map((g) => g.trim()).filter(Boolean),
      issuer: 'explain',
    }
    const d = core.wouldDecide(principal, target.name, op)
    const out = { class: op.class, resources: op.resources, statement: op.statement, statements: op.statements, decision: { action: d.action, rule: d.rule, reason: d.reason } }
    return html`<section class="card" aria-labelledby="result-h" id="explain-result"><h2 id="result-h">Result: <span class="badge ${d.action === 'allow' ? 'ok' : d.action === 'block' ? 'bad' : 'warn'}" id="explain-action">${d.action}</span></h2>
<p>Rule <code>${d.rule ?? '(none)'}</code>: ${d.reason}</p>
<pre>${JSON.stringify(out, (_k, x: unknown) => (typeof x === 'bigint' ? x.toString() : x), 2)}</pre></section>`
  } catch (err) {
    return html`<p class="flash bad" role="alert">${(err as Error).message}</p>`
  }
}

export async function policyPage(core: Core, ctx: PageContext, form?: URLSearchParams): Promise<Html> {
  const result = form ? await explainResult(core, form) : ''
  return page(
    ctx,
    'policy',
    'Policy',
    html`<h1>Policy</h1>${explainForm(core, ctx, form)}${result}
<h2>Rules</h2><p class="muted">Strictest matching rule wins (block &gt; approve &gt; allow); no matching rule blocks.</p>${rulesTable(core)}
<h2>Masking</h2>${maskingTable(core)}`,
  )
}
