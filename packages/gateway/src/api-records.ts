// The admin API's read side for auditors: recordings and the audit log of this host.
//   GET /api/recordings?day=&target=&principal=&limit=   list, each with its verify status
//   GET /api/recordings/:day/:id                         one recording as transcript entries
//   GET /api/audit?subject=&target=&class=&decision=&from=&to=&page=&pageSize=
// Members of admin.groups or admin.auditors only. Answers come back as { status, body } for
// admin.ts to send, with its error shape and codes.
import type { Core, Principal } from '@portcullis/core'
import { rolesOf } from './access.ts'
import { AuditUnavailable, auditFile, parseAuditQuery, searchAudit } from './audit-search.ts'
import type { Recordings } from './recordings.ts'

export interface ApiAnswer {
  status: number
  body: unknown
}

const error = (status: number, code: string, message: string): ApiAnswer => ({ status, body: { error: { code, message } } })

export function recordsApi(core: Core, recs: Recordings) {
  /** undefined: not one of these endpoints */
  return async function handle(method: string, parts: string[], url: URL, principal: () => Promise<Principal>): Promise<ApiAnswer | undefined> {
    if (parts[0] !== 'api' || (parts[1] !== 'recordings' && parts[1] !== 'audit')) return undefined
    if ((parts[1] === 'audit' && parts.length !== 2) || (parts[1] === 'recordings' && parts.length !== 2 && parts.length !== 4)) return undefined
    if (method !== 'GET') return { ...error(405, 'method_not_allowed', 'allowed: GET'), status: 405 }
    const p = await principal()
    const roles = rolesOf(p, core.config)
    if (!roles.admin && !roles.auditor) return error(403, 'forbidden', 'requires membership of the admin or auditor groups')

    if (parts[1] === 'audit') {
      const file = auditFile(core)
      if (!file) return error(409, 'conflict', 'audit.destination is stdout: the audit log can only be searched in a file')
      try {
        return { status: 200, body: await searchAudit(file, parseAuditQuery(url.searchParams)) }
      } catch (err) {
        if (err instanceof RangeError) return error(400, 'bad_request', err.message)
        if (err instanceof AuditUnavailable) return error(503, 'audit_unavailable', err.message)
        throw err
      }
    }
    if (parts.length === 2) {
      const q = url.searchParams
      const limit = Number(q.get('limit') ?? 200)
      const list = await recs.list({
        ...(q.get('day') ? { day: q.get('day')! } : {}),
        ...(q.get('target') ? { target: q.get('target')! } : {}),
        ...(q.get('principal') ? { principal: q.get('principal')! } : {}),
        limit: Number.isInteger(limit) && limit > 0 ? limit : 200,
      })
      return { status: 200, body: { recordings: list } }
    }
    const day = decodeURIComponent(parts[2]!)
    const id = decodeURIComponent(parts[3]!)
    const t = await recs.replay(day, id)
    if (!t) return error(404, 'not_found', `no recording ${day}/${id}`)
    return {
      status: 200,
      body: {
        recording: {
          day,
          id,
          header: t.header,
          entries: t.entries,
          more: t.more,
          ...(t.seal ? { seal: { time: t.seal.time, reason: t.seal.payload.reason, records: t.seal.payload.records, dropped: t.seal.payload.dropped } } : {}),
          verify: { status: t.verify.status, records: t.verify.records, ...(t.verify.problem ? { problem: t.verify.problem } : {}), ...(t.verify.signature ? { signature: t.verify.signature } : {}) },
        },
      },
    }
  }
}
