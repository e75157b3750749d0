// pg ships no types and @types/pg is not installed; the tests use a small, typed slice of it.
declare module 'pg' {
  interface QueryResult {
    rows: Array<Record<string, any>>
    rowCount: number | null
  }
  interface QueryConfig {
    text: string
    name?: string
    values?: unknown[]
    rowMode?: 'array'
  }
  class Client {
    constructor(config: { host: string; port: number; user: string; database: string; password: string; connectionTimeoutMillis?: number })
    connect(): Promise<void>
    query(text: string | QueryConfig, values?: unknown[]): Promise<QueryResult>
    on(event: 'error', listener: (err: Error) => void): this
    end(): Promise<void>
  }
  const pg: { Client: typeof Client }
  export default pg
}
