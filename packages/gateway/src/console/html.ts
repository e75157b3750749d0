// HTML built by one tagged template that escapes every interpolated value unless it is already
// Html: the console's pages cannot be made to render a statement, a subject or a reason as markup.
export class Html {
  constructor(readonly text: string) {}
  toString(): string {
    return this.text
  }
}

const ESCAPES: Record<string, string> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' }

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ESCAPES[c]!)
}

function piece(v: unknown): string {
  if (v === undefined || v === null || v === false) return ''
  if (v instanceof Html) return v.text
  if (Array.isArray(v)) return v.map(piece).join('')
  return escapeHtml(String(v))
}

export function html(strings: TemplateStringsArray, ...values: unknown[]): Html {
  let out = strings[0]!
  for (let i = 0; i < values.length; i++) out += piece(values[i]) + strings[i + 1]!
  return new Html(out)
}

/** trusted markup (never call with anything a request or a store gave) */
export function raw(text: string): Html {
  return new Html(text)
}

export function when(cond: unknown, then: () => Html): Html | '' {
  return cond ? then() : ''
}

export function isoTime(ms: number | string | undefined): string {
  if (ms === undefined) return ''
  const d = new Date(ms)
  return Number.isNaN(d.getTime()) ? String(ms) : d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z')
}

export function bytes(n: number | undefined): string {
  if (n === undefined) return '0 B'
  if (n < 1024) return `${n} B`
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`
  return `${(n / 1024 / 1024).toFixed(1)} MiB`
}
