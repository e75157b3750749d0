// Approval requests: put, read, decided once (one UPDATE whose WHERE only a pending, unexpired request
// of a live holder passes), approved by votes where it needs several approvers, and released once to
// the deferred retry it was approved for. A decision and its window's grant commit together.
import type pg from 'pg'
import { PortcullisError, type ApprovalGrant, type ApprovalRequest, type ControlChange, type RequestVerdict } from '@portcullis/core'
import type { Db } from './db.ts'
import { putGrant } from './grants.ts'

export async function putRequest(db: Db, r: ApprovalRequest): Promise<void> {
  await db.tx(async c => {
    await c.query(
      `INSERT INTO ${db.s}.requests (id, instance, status, expires, min_approvals, body) VALUES ($1, $2, $3, to_timestamp($4 / 1000.0), $5, $6)`,
      [r.id, r.instance ?? null, r.status, r.expires, r.minApprovals ?? 1, JSON.stringify(r)],
    )
    await db.append(c, [{ kind: 'request', request: r }])
  })
  db.emit({ kind: 'request', request: r })
}

export async function getRequest(db: Db, id: string): Promise<ApprovalRequest | undefined> {
  const { rows } = await db.q(`SELECT body FROM ${db.s}.requests WHERE id = $1`, [id])
  return rows[0] ? (rows[0].body as ApprovalRequest) : undefined
}

export async function listRequests(db: Db): Promise<ApprovalRequest[]> {
  const { rows } = await db.q(
    `SELECT body FROM ${db.s}.requests WHERE status = 'pending' OR updated > now() - $1::float8 * interval '1 millisecond' ORDER BY updated LIMIT 10000`,
    [db.retainMs],
  )
  return rows.map(r => r.body as ApprovalRequest)
}

export async function decide(db: Db, id: string, verdict: RequestVerdict): Promise<ApprovalRequest> {
  const s = db.s
  const patch: Record<string, unknown> = { status: verdict.status }
  if (verdict.decidedBy !== undefined) patch.decidedBy = verdict.decidedBy
  if (verdict.reason !== undefined) patch.reason = verdict.reason
  if (verdict.vote) return countVote(db, id, verdict)
  const decision = verdict.status === 'approved' || verdict.status === 'denied'
  const done = await db.tx(async c => {
    // one decision only: of two approvers at once, the second finds it no longer pending. An
    // approval or denial also needs the request unexpired and its holder's lease alive.
    const { rows } = await c.query(
      `UPDATE ${s}.requests r SET status = $2, body = r.body || $3::jsonb, updated = now()
        WHERE r.id = $1 AND r.status = 'pending'
          AND (NOT $4 OR (r.expires > now() AND (r.instance IS NULL OR EXISTS (
            SELECT 1 FROM ${s}.instances i WHERE i.id = r.instance AND i.state = 'alive' AND i.lease_until > now()))))
        RETURNING r.body`,
      [id, verdict.status, JSON.stringify(patch), decision],
    )
    if (!rows[0]) {
      const { rows: found } = await c.query(`SELECT status, expires <= now() AS expired FROM ${s}.requests WHERE id = $1`, [id])
      if (!found[0]) throw new PortcullisError('APPROVAL_NOT_FOUND', `no approval request ${id}`, { approvalId: id })
      throw notPending(id, found[0])
    }
    const request = rows[0].body as ApprovalRequest
    return { request, changes: await decided(db, c, request, verdict.grant) }
  })
  for (const ch of done.changes) db.emit(ch)
  return done.request
}

/**
 * One approver's yes. One UPDATE: the row lock orders two approvers at once, and the second one's
 * WHERE is evaluated again on the row the first left (Read Committed), so the same approver twice
 * counts once and two approvers on two instances make exactly one decision.
 */
async function countVote(db: Db, id: string, verdict: RequestVerdict): Promise<ApprovalRequest> {
  const s = db.s
  const vote = verdict.vote!
  const patch: Record<string, unknown> = { status: 'approved' }
  if (verdict.decidedBy !== undefined) patch.decidedBy = verdict.decidedBy
  const done = await db.tx(async c => {
    const { rows } = await c.query(
      `UPDATE ${s}.requests r SET
          votes = r.votes || $2::jsonb,
          status = CASE WHEN jsonb_array_length(r.votes) + 1 >= r.min_approvals THEN 'approved' ELSE 'pending' END,
          body = r.body || jsonb_build_object('approvals', r.votes || $2::jsonb)
                 || CASE WHEN jsonb_array_length(r.votes) + 1 >= r.min_approvals THEN $3::jsonb ELSE '{}'::jsonb END,
          updated = now()
        WHERE r.id = $1 AND r.status = 'pending' AND NOT r.votes @> jsonb_build_array(jsonb_build_object('by', $4::text))
          AND r.expires > now() AND (r.instance IS NULL OR EXISTS (
            SELECT 1 FROM ${s}.instances i WHERE i.id = r.instance AND i.state = 'alive' AND i.lease_until > now()))
        RETURNING r.body, r.status`,
      [id, JSON.stringify([vote]), JSON.stringify(patch), vote.by],
    )
    if (!rows[0]) {
      const { rows: found } = await c.query(
        `SELECT status, expires <= now() AS expired, votes @> jsonb_build_array(jsonb_build_object('by', $2::text)) AS counted FROM ${s}.requests WHERE id = $1`,
        [id, vote.by],
      )
      if (!found[0]) throw new PortcullisError('APPROVAL_NOT_FOUND', `no approval request ${id}`, { approvalId: id })
      if (found[0].status === 'pending' && found[0].counted === true)
        throw new PortcullisError('APPROVAL_ALREADY_COUNTED', `${vote.by} has already approved ${id}; each approver counts once`, { approvalId: id })
      throw notPending(id, found[0])
    }
    const request = rows[0].body as ApprovalRequest
    return { request, changes: await decided(db, c, request, rows[0].status === 'approved' ? verdict.grant : undefined) }
  })
  for (const ch of done.changes) db.emit(ch)
  return done.request
}

/** a decided request's change, and its window's grant when it has one, in the deciding transaction */
async function decided(db: Db, c: pg.PoolClient, request: ApprovalRequest, grant: ApprovalGrant | undefined): Promise<ControlChange[]> {
  const changes: ControlChange[] = []
  if (grant) {
    await putGrant(c, db.s, grant)
    changes.push({ kind: 'grant', grant })
  }
  changes.push({ kind: 'request', request })
  await db.append(c, changes)
  return changes
}

export async function release(db: Db, id: string): Promise<ApprovalRequest | undefined> {
  const done = await db.tx(async c => {
    // once: of two retries at once, the second finds `released` set
    const { rows } = await c.query(
      `UPDATE ${db.s}.requests r SET released = now(),
          body = r.body || jsonb_build_object('released', floor(extract(epoch FROM now()) * 1000)::bigint), updated = now()
        WHERE r.id = $1 AND r.status = 'approved' AND r.released IS NULL AND r.expires > now() AND r.body->>'mode' = 'defer'
        RETURNING r.body`,
      [id],
    )
    if (!rows[0]) return undefined
    const request = rows[0].body as ApprovalRequest
    await db.append(c, [{ kind: 'request', request }])
    return request
  })
  if (done) db.emit({ kind: 'request', request: done })
  return done
}

/** why a request that no longer matched `status = 'pending'` (and alive, unexpired) was not decided */
function notPending(id: string, found: { status: unknown; expired: unknown }): PortcullisError {
  const why = found.status !== 'pending' ? `is already ${String(found.status)}` : found.expired ? 'has expired' : 'is held by a gateway instance that stopped answering'
  return new PortcullisError('APPROVAL_NOT_PENDING', `approval request ${id} ${why}`, { approvalId: id })
}
