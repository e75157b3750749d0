// `portcullis approvals list | approve ID | deny ID [--reason R]` against the admin API.
// The admin URL comes from --admin, PORTCULLIS_ADMIN, or the demo's default http://127.0.0.1:9090.
// The token must be given (--token or PORTCULLIS_TOKEN): nothing is minted behind the caller's back,
// so who approved is always who ran the command (`portcullis token --sub ann --groups approvers`).
import { parseArgs } from 'node:util'
import { UsageError } from '../args.ts'

interface ApprovalView {
  id: string
  subject: string
  target: string
  class: string
  statement: string
  expires: string
  status: string
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
        for (const a of list) {
          process.stdout.write(`${a.id}  ${a.subject}  ${a.target}  ${a.class}  expires ${a.expires}\n    ${a.statement}\n`)
        }
      return 0
    }
    case 'approve':
    case 'deny': {
      if (!id) throw new UsageError(`usage: portcullis approvals ${action} ID`)
      const body = action === 'deny' && values.reason ? { reason: values.reason } : undefined
      const r = await call('POST', `/api/approvals/${encodeURIComponent(id)}/${action}`, body ?? {})
      if (!r.ok) return refused(r)
      const a = r.data.approval as ApprovalView
      process.stdout.write(`${a.id}: ${a.status}\n`)
      return 0
    }
    default:
      throw new UsageError('usage: portcullis approvals list | approve ID | deny ID [--reason R] [--admin URL] [--token T]')
  }
}
