// pg-cursor ships no types and @types/pg-cursor is not installed: the tests use only this much.
declare module 'pg-cursor' {
  export default class Cursor<R = any> {
    constructor(text: string, values?: unknown[])
    read(rows: number): Promise<R[]>
    close(): Promise<void>
  }
}
