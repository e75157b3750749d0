// `portcullis approvals list | approve ID [--reason R] | deny ID [--reason R] | wait ID` against the admin API.
// `wait` blocks until the request is decided or expires: exit 0 approved, 1 denied / expired /
// withdrawn (or --timeout passed), 2 usage or the API refused.
// The admin URL comes from --admin, PORTCULLIS_ADMIN, or the demo's default http://127.0.0.1:9090.
// The token must be given (--token or PORTCULLIS_TOKEN): nothing is minted behind the caller's back,
// so who approved is always who ran the command (`portcullis token --sub ann --groups approvers`).
import { parseArgs } from 'node:util'
import { UsageError } from '../args.ts'

interface ApprovalView {
  id: string
  subject: string
  groups?: string[]
  target: string
  class: string
  statement: string
  text?: string
  parameters?: string[]
  rule?: string
  ruleReason?: string | null
  minApprovals?: number
  approvals?: { by: string; at: string; reason?: string }[]
  recent?: { at: string; statement: string; action: string }[]
  estimate?: Record<string, unknown> | null
  mode?: string
  expires: string
  status: string
  reason?: string
}

/** one request as a person reads it in a terminal */
function describe(a: ApprovalView): string {
  const lines = [`${a.id}  ${a.status}  ${a.subject}${a.groups?.length ? ` (${a.groups.join(', ')})` : ''}  ${a.target}  ${a.class}  expires ${a.expires}`]
  lines.push(`    ${a.text ?? a.statement}`)
  ;(a.parameters ?? []).forEach((p, i) => lines.push(`      $${i + 1} = ${p}`))
  if (a.rule) lines.push(`    rule ${a.rule}${a.ruleReason ? `: ${a.ruleReason}` : ''}`)
  const votes = a.approvals ?? []
  if ((a.minApprovals ?? 1) > 1 || votes.length > 0)
    lines.push(`    approvals ${votes.length}/${a.minApprovals ?? 1}${votes.length ? ': ' + votes.map(v => `${v.by} at ${v.at}${v.reason ? ` (${v.reason})` : ''}`).join(', ') : ''}`)
  if (a.estimate) lines.push(`    estimate ${JSON.stringify(a.estimate)}`)
  for (const r of a.recent ?? []) lines.push(`    before: ${r.at} ${r.action} ${r.statement}`)
  return lines.join('\n') + '\n'
}

export async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      admin: { type: 'string' },
      token: { type: 'string' },
      reason: { type: 'string' },
      json: { type: 'boolean', default: false },
      /** wait: give up after this many seconds (exit 1) */
      timeout: { type: 'string' },
      /** wait: seconds between polls */
      interval: { type: 'string', default: '1' },
    },
  })
  const [action, id] = positionals
  const base = (values.admin ?? process.env.PORTCULLIS_ADMIN ?? 'http://127.0.0.1:9090').replace(/\/+$/, '')
  const token = values.token ?? process.env.PORTCULLIS_TOKEN
  if (!token) throw new UsageError('a token is required: --token T or PORTCULLIS_TOKEN (mint one with `portcullis token`)')

  const call = async (method: string, path: string, body?: unknown) => {
    let res: Response
    try {
      res = await fetch(base + path, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': 'application/json' } : {}) },
        body: body ? JSON.stringify(body) : undefined,
      })
    } catch (err) {
      throw new Error(`cannot reach the admin API at ${base}: ${(err as Error).cause ?? (err as Error).message}`)
    }
    const data = (await res.json().catch(() => ({}))) as Record<string, unknown>
    return { ok: res.ok, status: res.status, data }
  }
  const refused = (r: { status: number; data: Record<string, unknown> }) => {
    const e = r.data.error as { code?: string; message?: string } | undefined
    process.stderr.write(`portcullis approvals: ${r.status} ${e?.code ?? ''}: ${e?.message ?? 'request failed'}\n`)
    return 1
  }

  switch (action) {
    case 'list': {
      const r = await call('GET', '/api/approvals')
      if (!r.ok) return refused(r)
      const list = (r.data.approvals ?? []) as ApprovalView[]
      if (values.json) process.stdout.write(JSON.stringify(list, null, 2) + '\n')
      else if (list.length === 0) process.stdout.write('no pending approvals\n')
      else
        for (const a of list) process.stdout.write(describe(a))
      return 0
    }
    case 'show': {
      if (!id) throw new UsageError('usage: portcullis approvals show ID')
      const r = await call('GET', `/api/approvals/${encodeURIComponent(id)}`)
      if (!r.ok) return refused(r)
      const a = r.data.approval as ApprovalView
      process.stdout.write(values.json ? JSON.stringify(a, null, 2) + '\n' : describe(a))
      return 0
    }
    case 'wait': {
      if (!id) throw new UsageError('usage: portcullis approvals wait ID [--timeout SECONDS]')
      const interval = Math.max(0.05, Number(values.interval) || 1) * 1000
      const until = values.timeout !== undefined ? Date.now() + Number(values.timeout) * 1000 : Infinity
      for (;;) {
        const r = await call('GET', `/api/approvals/${encodeURIComponent(id)}`)
        if (!r.ok) {
          refused(r)
          return 2
        }
        const a = r.data.approval as ApprovalView
        // pending past its expiry reads expired: the holder marks it a moment later
        const expired = a.status === 'pending' && Date.parse(a.expires) <= Date.now()
        if (a.status !== 'pending' || expired) {
          const status = expired ? 'expired' : a.status
          if (values.json) process.stdout.write(JSON.stringify({ ...a, status }) + '\n')
          else process.stdout.write(`${a.id}: ${status}${a.reason ? ` (${a.reason})` : ''}\n`)
          return status === 'approved' ? 0 : 1
        }
        if (Date.now() >= until) {
          process.stdout.write(`${a.id}: still pending after --timeout\n`)
          return 1
        }
        await new Promise(res => setTimeout(res, interval))
      }
    }
    case 'approve':
    case 'deny': {
      if (!id) throw new UsageError(`usage: portcullis approvals ${action} ID`)
      const body = values.reason ? { reason: values.reason } : undefined
      const r = await call('POST', `/api/approvals/${encodeURIComponent(id)}/${action}`, body ?? {})
      if (!r.ok) return refused(r)
      const a = r.data.approval as ApprovalView
      const votes = a.approvals?.length ?? 0
      process.stdout.write(a.status === 'pending' ? `${a.id}: approval counted (${votes} of ${a.minApprovals ?? 1})\n` : `${a.id}: ${a.status}\n`)
      return 0
    }
    default:
      throw new UsageError(
        'usage: portcullis approvals list | show ID | approve ID [--reason R] | deny ID [--reason R] | wait ID [--timeout S] [--admin URL] [--token T] [--json]\n' +
          '  wait: blocks until ID is decided or expires; exit 0 approved, 1 denied/expired/withdrawn/timeout, 2 error',
      )
  }
}
