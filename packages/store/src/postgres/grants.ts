// Approval windows: a grant lets the same statement (subject, target, fingerprint) through until it
// lapses. Written in the transaction that decides the request it came with.
import type pg from 'pg'
import type { ApprovalGrant } from '@portcullis/core'
import type { Db, Row } from './db.ts'

/** the grant of a decided request; a second grant for the same statement keeps the later end */
export async function putGrant(c: pg.PoolClient, s: string, grant: ApprovalGrant): Promise<void> {
  await c.query(
    `INSERT INTO ${s}.grants (subject, target, fingerprint, until, approval_id) VALUES ($1, $2, $3, to_timestamp($4 / 1000.0), $5)
     ON CONFLICT (subject, target, fingerprint) DO UPDATE SET until = greatest(${s}.grants.until, excluded.until), approval_id = excluded.approval_id`,
    [grant.subject, grant.target, grant.fingerprint, grant.until, grant.approvalId],
  )
}

export async function findGrant(db: Db, subject: string, target: string, fingerprint: string): Promise<ApprovalGrant | undefined> {
  const { rows } = await db.q(
    `SELECT subject, target, fingerprint, (extract(epoch FROM until) * 1000)::float8 AS until, approval_id FROM ${db.s}.grants
      WHERE subject = $1 AND target = $2 AND fingerprint = $3 AND until > now()`,
    [subject, target, fingerprint],
  )
  return rows[0] ? grantOf(rows[0]) : undefined
}

export async function grants(db: Db): Promise<ApprovalGrant[]> {
  const { rows } = await db.q(
    `SELECT subject, target, fingerprint, (extract(epoch FROM until) * 1000)::float8 AS until, approval_id FROM ${db.s}.grants WHERE until > now()`,
  )
  return rows.map(grantOf)
}

function grantOf(r: Row): ApprovalGrant {
  return { subject: String(r.subject), target: String(r.target), fingerprint: String(r.fingerprint), until: Number(r.until), approvalId: String(r.approval_id) }
}
