// Searching this host's audit log (audit.destination when it is a file) for the admin API and the
// web console: filters by subject, target, class, decision and time range, newest first, paged.
// The file is read as a stream and only one page's worth of matches is held, however large it is.
import { createReadStream } from 'node:fs'
import { createInterface } from 'node:readline'
import type { AuditEvent, Core } from '@portcullis/core'

export interface AuditQuery {
  subject?: string
  target?: string
  class?: string
  decision?: string
  /** ISO time or anything Date.parse reads; inclusive */
  from?: string
  to?: string
  /** 0-based page, newest first */
  page?: number
  pageSize?: number
}

export interface AuditPage {
  events: AuditEvent[]
  /** matches in the whole file */
  total: number
  page: number
  pageSize: number
}

export const MAX_PAGE_SIZE = 200
export const MAX_PAGE = 1000
/** a longer line is not an audit event the core wrote: skipped */
const MAX_LINE_CHARS = 256 * 1024

export class AuditUnavailable extends Error {}

export function auditFile(core: Core): string | undefined {
  const d = core.config.audit.destination
  return d && d !== 'stdout' ? d : undefined
}

export function parseAuditQuery(params: URLSearchParams): AuditQuery {
  const q: AuditQuery = {}
  for (const k of ['subject', 'target', 'class', 'decision', 'from', 'to'] as const) {
    const v = params.get(k)?.trim()
    if (v) q[k] = v
  }
  const page = Number(params.get('page') ?? 0)
  const size = Number(params.get('pageSize') ?? 50)
  q.page = Number.isInteger(page) && page >= 0 ? Math.min(page, MAX_PAGE) : 0
  q.pageSize = Number.isInteger(size) && size > 0 ? Math.min(size, MAX_PAGE_SIZE) : 50
  return q
}

function time(text: string | undefined, what: string): number | undefined {
  if (!text) return undefined
  const t = Date.parse(text)
  if (Number.isNaN(t)) throw new RangeError(`${what} is not a time: ${JSON.stringify(text)}`)
  return t
}

export async function searchAudit(file: string, q: AuditQuery): Promise<AuditPage> {
  const from = time(q.from, 'from')
  const to = time(q.to, 'to')
  const page = q.page ?? 0
  const pageSize = q.pageSize ?? 50
  // newest first: keep the last (page + 1) * pageSize matches as the file streams past
  const keep = (page + 1) * pageSize
  const ring: AuditEvent[] = []
  let total = 0
  const input = createReadStream(file, { encoding: 'utf8' })
  const opened = new Promise<void>((resolve, reject) => {
    input.once('open', () => resolve())
    input.once('error', (err) => reject(new AuditUnavailable(`the audit log cannot be read: ${(err as NodeJS.ErrnoException).code ?? err.message}`)))
  })
  await opened
  const lines = createInterface({ input, crlfDelay: Infinity })
  for await (const line of lines) {
    if (line.length === 0 || line.length > MAX_LINE_CHARS) continue
    let e: AuditEvent & { log?: string }
    try {
      e = JSON.parse(line) as AuditEvent & { log?: string }
    } catch {
      continue
    }
    if (!e || typeof e !== 'object' || e.log !== undefined || typeof e.session !== 'string') continue
    if (q.subject && e.principal?.sub !== q.subject) continue
    if (q.target && e.target !== q.target) continue
    if (q.class && e.class !== q.class) continue
    if (q.decision && e.decision !== q.decision) continue
    if (from !== undefined || to !== undefined) {
      const t = Date.parse(e.time)
      if (Number.isNaN(t) || (from !== undefined && t < from) || (to !== undefined && t > to)) continue
    }
    total++
    ring.push(stripLevel(e))
    // trimmed in batches: at most 2 × keep held, and no per-line shift of a long array
    if (ring.length >= 2 * keep) ring.splice(0, ring.length - keep)
  }
  const newestFirst = ring.slice(-keep).reverse()
  return { events: newestFirst.slice(page * pageSize, (page + 1) * pageSize), total, page, pageSize }
}

function stripLevel(e: AuditEvent & { level?: unknown }): AuditEvent {
  const { level: _level, ...rest } = e
  return rest as AuditEvent
}
