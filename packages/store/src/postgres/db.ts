// What the store's role files (approvals, grants, registry, objects, leases) use of the store: its
// statements and transactions (each marks the store down when the connection is lost), and the
// change feed (appended in commit order inside a transaction, emitted to this instance's subscribers).
import type pg from 'pg'
import type { ControlChange } from '@portcullis/core'

export type Row = Record<string, unknown>

export interface Db {
  /** the schema's name, quoted */
  readonly s: string
  /** how long decided requests and changes are kept, ms */
  readonly retainMs: number
  q(text: string, values?: unknown[]): Promise<{ rows: Row[] }>
  tx<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T>
  append(c: pg.PoolClient, changes: ControlChange[]): Promise<void>
  emit(change: ControlChange): void
}
