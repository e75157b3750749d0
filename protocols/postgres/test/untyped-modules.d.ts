// pg-cursor and pg-copy-streams ship no types and their @types packages are not installed: the
// tests use only this much.
declare module 'pg-cursor' {
  import type { Submittable } from 'pg'
  export default class Cursor<R = any> implements Submittable {
    constructor(text: string, values?: unknown[])
    submit(connection: any): void
    read(rows: number): Promise<R[]>
    close(): Promise<void>
  }
}
declare module 'pg-copy-streams' {
  import type { Submittable } from 'pg'
  import type { Readable, Writable } from 'node:stream'
  export function from(text: string): Writable & Submittable
  export function to(text: string): Readable & Submittable
}
