// Scoped objects: the ids a scope created on a target (a collection, a vector, a file), so that a
// later request of the same scope may touch them and another scope may not.
import type { Db } from './db.ts'

export async function putObjects(db: Db, target: string, scope: string, kind: string, ids: string[]): Promise<void> {
  await db.q(
    `INSERT INTO ${db.s}.objects (target, kind, id, scope) SELECT $1, $2, unnest($4::text[]), $3 ON CONFLICT DO NOTHING`,
    [target, kind, scope, ids],
  )
}

export async function ownedObjects(db: Db, target: string, scope: string, kind: string, ids: string[]): Promise<string[]> {
  const { rows } = await db.q(`SELECT id FROM ${db.s}.objects WHERE target = $1 AND kind = $2 AND scope = $3 AND id = ANY($4::text[])`, [target, kind, scope, ids])
  const owned = new Set(rows.map(r => r.id as string))
  return ids.filter(id => owned.has(id))
}

export async function dropObjects(db: Db, target: string, scope: string, kind: string, ids: string[]): Promise<void> {
  await db.q(`DELETE FROM ${db.s}.objects WHERE target = $1 AND kind = $2 AND scope = $3 AND id = ANY($4::text[])`, [target, kind, scope, ids])
}
