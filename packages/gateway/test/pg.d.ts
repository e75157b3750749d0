// pg ships no types and @types/pg is not installed; the tests use a small, typed slice of it.
declare module 'pg' {
  interface QueryResult {
    rows: Array<Record<string, any>>
    rowCount: number | null
  }
  class Client {
    constructor(config: { host: string; port: number; user: string; database: string; password: string })
    connect(): Promise<void>
    query(text: string): Promise<QueryResult>
    end(): Promise<void>
  }
  const pg: { Client: typeof Client }
  export default pg
}
