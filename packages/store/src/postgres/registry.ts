// Who may still act and who is connected: revocations (a subject or a token id), the session
// registry (each instance's live sessions; an instance whose lease lapsed answers for none), and
// kills (a change every instance hears and acts on for its own sessions).
import type { KillRequest, RevocationEntry, SessionRecord } from '@portcullis/core'
import type { Db } from './db.ts'

export async function revoke(db: Db, entry: RevocationEntry): Promise<void> {
  const e: RevocationEntry = { ...(entry.subject ? { subject: entry.subject } : {}), ...(entry.jti ? { jti: entry.jti } : {}) }
  await db.tx(async c => {
    await c.query(`INSERT INTO ${db.s}.revocations (subject, jti) VALUES ($1, $2) ON CONFLICT DO NOTHING`, [e.subject ?? '', e.jti ?? ''])
    await db.append(c, [{ kind: 'revocation', entry: e }])
  })
  db.emit({ kind: 'revocation', entry: e })
}

export async function revocations(db: Db): Promise<RevocationEntry[]> {
  const { rows } = await db.q(`SELECT subject, jti FROM ${db.s}.revocations ORDER BY created`)
  return rows.map(r => ({ ...(r.subject ? { subject: String(r.subject) } : {}), ...(r.jti ? { jti: String(r.jti) } : {}) }))
}

export async function putSessions(db: Db, sessions: SessionRecord[]): Promise<void> {
  if (sessions.length === 0) return
  await db.q(
    `INSERT INTO ${db.s}.sessions (id, instance, body)
     SELECT s->>'id', s->>'instance', s FROM jsonb_array_elements($1::jsonb) s
     ON CONFLICT (id) DO UPDATE SET body = excluded.body, instance = excluded.instance`,
    [JSON.stringify(sessions)],
  )
}

export async function endSession(db: Db, id: string): Promise<void> {
  await db.q(`DELETE FROM ${db.s}.sessions WHERE id = $1`, [id])
}

export async function listSessions(db: Db): Promise<SessionRecord[]> {
  // an instance whose lease lapsed is not answering for its sessions, reaped or not yet
  const { rows } = await db.q(
    `SELECT s.body FROM ${db.s}.sessions s JOIN ${db.s}.instances i ON i.id = s.instance
      WHERE i.state = 'alive' AND i.lease_until > now() ORDER BY s.body->>'started'`,
  )
  return rows.map(r => r.body as SessionRecord)
}

export async function kill(db: Db, request: KillRequest): Promise<void> {
  await db.tx(c => db.append(c, [{ kind: 'kill', kill: request }]))
  db.emit({ kind: 'kill', kill: request })
}
