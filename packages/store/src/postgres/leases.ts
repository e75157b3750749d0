// Instance leases: each instance renews its own on a heartbeat; any instance's heartbeat reaps the
// lapsed ones (their pending requests read withdrawn, their sessions leave the registry) and drops
// what is past its retention. An instance that shuts down gives its lease back at once.
import type pg from 'pg'
import type { ApprovalRequest, InstanceInfo } from '@portcullis/core'
import type { Db } from './db.ts'

export async function renew(c: pg.PoolClient | pg.Pool, s: string, i: InstanceInfo, leaseMs: number): Promise<void> {
  await c.query(
    `INSERT INTO ${s}.instances (id, host, pid, started, lease_until, state)
     VALUES ($1, $2, $3, to_timestamp($4 / 1000.0), now() + $5::float8 * interval '1 millisecond', 'alive')
     ON CONFLICT (id) DO UPDATE SET lease_until = excluded.lease_until, state = 'alive'`,
    [i.id, i.host, i.pid, i.started, leaseMs],
  )
}

/** one heartbeat: the lease renewed, lapsed ones reaped, old changes, decided requests and grants dropped */
export async function heartbeat(db: Db, pool: pg.Pool, i: InstanceInfo, leaseMs: number, log: (msg: string, fields?: Record<string, unknown>) => void): Promise<void> {
  const s = db.s
  await renew(pool, s, i, leaseMs)
  const { rows } = await pool.query(
    `SELECT id FROM ${s}.instances WHERE state = 'alive' AND lease_until < now()`,
  )
  if (rows.length > 0)
    await db.tx(async c => {
      const { rows: dead } = await c.query(
        `UPDATE ${s}.instances SET state = 'gone' WHERE id = ANY($1) AND state = 'alive' AND lease_until < now() RETURNING id`,
        [rows.map(r => r.id)],
      )
      if (dead.length > 0) {
        log('control store: instance lease lapsed', { instances: dead.map(r => r.id) })
        await reap(db, c, dead.map(r => String(r.id)), 'gateway instance stopped answering')
      }
    })
  await pool.query(`DELETE FROM ${s}.changes WHERE at < now() - $1::float8 * interval '1 millisecond'`, [db.retainMs])
  await pool.query(
    `DELETE FROM ${s}.requests WHERE status <> 'pending' AND updated < now() - $1::float8 * interval '1 millisecond'`,
    [db.retainMs],
  )
  await pool.query(`DELETE FROM ${s}.grants WHERE until < now()`)
}

/** leaving on purpose: this instance's requests withdrawn and its lease ended now, in one transaction */
export async function giveBack(db: Db, c: pg.PoolClient, id: string): Promise<void> {
  await reap(db, c, [id], 'gateway instance shut down')
  await c.query(`UPDATE ${db.s}.instances SET state = 'gone', lease_until = now() WHERE id = $1`, [id])
}

/** withdraws the pending requests of these instances and drops their sessions */
async function reap(db: Db, c: pg.PoolClient, instances: string[], reason: string): Promise<void> {
  const s = db.s
  const { rows } = await c.query(
    `UPDATE ${s}.requests r SET status = 'withdrawn', body = r.body || jsonb_build_object('status', 'withdrawn', 'reason', $2::text), updated = now()
      WHERE r.status = 'pending' AND r.instance = ANY($1) RETURNING r.body`,
    [instances, reason],
  )
  await c.query(`DELETE FROM ${s}.sessions WHERE instance = ANY($1)`, [instances])
  if (rows.length > 0) await db.append(c, rows.map(r => ({ kind: 'request', request: r.body as ApprovalRequest })))
}
