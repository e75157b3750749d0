// The seed corpus is what real clients send, captured here at the start of a run (never typed by
// hand): a tiny TCP relay in front of the gateway records every byte each client connection sends,
// while psql, pg (extended protocol), redis-cli, ioredis pipelines and node:http with chunked bodies
// do ordinary work through it.
import { createServer, connect, type Server, type Socket } from 'node:net'
import { once } from 'node:events'
import { execFile as execFileCb } from 'node:child_process'
import { promisify } from 'node:util'
import { request, Agent } from 'node:http'
import pg from 'pg'
import { Redis } from 'ioredis'
import { pgDirect, type World } from './env.ts'

const execFile = promisify(execFileCb)

interface Relay {
  port: number
  /** client→server bytes of every connection, in connection order */
  streams: Buffer[][]
  close(): Promise<void>
}

async function relay(targetPort: number): Promise<Relay> {
  const streams: Buffer[][] = []
  const sockets = new Set<Socket>()
  const server: Server = createServer((client) => {
    const chunks: Buffer[] = []
    streams.push(chunks)
    const up = connect({ host: '127.0.0.1', port: targetPort })
    sockets.add(client).add(up)
    client.on('data', (d: Buffer) => {
      chunks.push(Buffer.from(d))
      up.write(d)
    })
    up.pipe(client)
    client.on('end', () => up.end())
    up.on('end', () => client.end())
    const gone = () => (client.destroy(), up.destroy())
    client.on('error', gone).on('close', gone)
    up.on('error', gone).on('close', gone)
  })
  server.listen(0, '127.0.0.1')
  await once(server, 'listening')
  return {
    port: (server.address() as { port: number }).port,
    streams,
    async close() {
      for (const s of sockets) s.destroy()
      await new Promise((r) => server.close(r))
    },
  }
}

export interface Corpus {
  /** whole client→gateway byte streams, one per captured connection */
  pg: Buffer[]
  redis: Buffer[]
  http: Buffer[]
}

/** Tables the captured traffic and the fuzzers work on (created past the gateway). */
export async function prepareData(w: World): Promise<void> {
  await pgDirect(
    w.pg,
    `CREATE TABLE IF NOT EXISTS robust_items (id int PRIMARY KEY, name text, email text, n int DEFAULT 0);
     INSERT INTO robust_items SELECT g, 'item ' || g, 'user' || g || '@example.com', g FROM generate_series(1, 50) g ON CONFLICT DO NOTHING;`,
  )
}

export async function captureCorpus(w: World): Promise<Corpus> {
  await prepareData(w)
  const token = await w.token('robust-capture')
  const gw = w.gateway.ports

  // Postgres: psql (simple query protocol, several statements, a transaction)
  const pgRelay = await relay(gw.pg)
  await execFile(
    'psql',
    [`host=127.0.0.1 port=${pgRelay.port} user=robust-capture dbname=app sslmode=disable application_name=psql`, '-X', '-q',
      '-c', 'SELECT id, name, email FROM robust_items WHERE id < 4 ORDER BY id',
      '-c', "BEGIN; UPDATE robust_items SET n = n + 1 WHERE id = 2; SELECT n FROM robust_items WHERE id = 2; COMMIT",
      '-c', "INSERT INTO robust_items (id, name, email) VALUES (1000, 'psql', 'p@example.com') ON CONFLICT (id) DO UPDATE SET n = robust_items.n + 1",
      '-c', 'SELECT count(*), max(n) FROM robust_items'],
    { env: { ...process.env, PGPASSWORD: token } },
  )
  // pg: the extended protocol (Parse/Bind/Describe/Execute/Sync), unnamed and named statements
  const client = new pg.Client({ host: '127.0.0.1', port: pgRelay.port, user: 'robust-capture', database: 'app', password: token })
  await client.connect()
  await client.query('SELECT $1::int + 1 AS x, $2::text AS t', [41, 'hello'])
  await client.query({ name: 'by-id', text: 'SELECT id, name, email FROM robust_items WHERE id = $1', values: [3] })
  await client.query({ name: 'by-id', text: 'SELECT id, name, email FROM robust_items WHERE id = $1', values: [4] })
  await client.query('UPDATE robust_items SET n = n + $1 WHERE id = $2', [1, 5])
  await client.query({ text: 'SELECT id, n FROM robust_items WHERE id = ANY($1::int[]) ORDER BY id', values: [[1, 2, 3]], rowMode: 'array' })
  await client.end()
  await pgRelay.close()

  // Redis: redis-cli (commands from stdin) and an ioredis pipeline
  const redisRelay = await relay(gw.redis)
  await new Promise<void>((resolve, reject) => {
    const child = execFileCb('redis-cli', ['-h', '127.0.0.1', '-p', String(redisRelay.port), '--no-auth-warning', '-a', token], (err) => (err ? reject(err) : resolve()))
    child.stdin!.end('SET robust:a 1\nINCR robust:a\nGET robust:a\nHSET robust:h name ada email ada@example.com\nHGETALL robust:h\nDEL robust:missing\nMGET robust:a robust:h\n')
  })
  const io = new Redis({ host: '127.0.0.1', port: redisRelay.port, password: token, lazyConnect: true, maxRetriesPerRequest: 0 })
  await io.connect()
  await io
    .pipeline()
    .set('robust:p', 'v'.repeat(40))
    .get('robust:p')
    .lpush('robust:l', 'a', 'b', 'c')
    // (trimmed, as a capped list is used: every replay of the LPUSH grew it, and with it each
    // LRANGE's reply, until a long run spent its time in megabyte replies — 4.6 GB of recordings
    // and cases/s from 253 to 26 over 150,000 cases)
    .ltrim('robust:l', 0, 9)
    .lrange('robust:l', 0, -1)
    .hset('robust:ph', { f1: 'one', f2: 'ada@example.com' })
    .hgetall('robust:ph')
    .expire('robust:p', 600)
    .exec()
  await io.quit()
  await redisRelay.close()

  // HTTP/1.1: keep-alive requests with chunked request bodies (node:http writes each chunk framed)
  const httpRelay = await relay(gw.http)
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  const post = (path: string, parts: string[]) =>
    new Promise<void>((resolve, reject) => {
      const req = request(
        { host: '127.0.0.1', port: httpRelay.port, path, method: 'POST', agent, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', 'transfer-encoding': 'chunked' } },
        (res) => res.resume().on('end', resolve).on('error', reject),
      )
      req.on('error', reject)
      for (const p of parts) req.write(p)
      req.end()
    })
  const chat = JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hello, write to ada@example.com' }] })
  await post('/v1/chat/completions', [chat.slice(0, 20), chat.slice(20, 50), chat.slice(50)])
  const emb = JSON.stringify({ model: 'text-embedding-3-small', input: ['one', 'two'] })
  await post('/v1/embeddings', [emb.slice(0, 10), emb.slice(10)])
  await new Promise<void>((resolve, reject) => {
    request({ host: '127.0.0.1', port: httpRelay.port, path: '/v1/models', agent, headers: { authorization: `Bearer ${token}` } }, (res) => res.resume().on('end', resolve)).on('error', reject).end()
  })
  agent.destroy()
  await httpRelay.close()

  const join = (r: Relay) => r.streams.map((s) => Buffer.concat(s)).filter((b) => b.length > 0)
  return { pg: join(pgRelay), redis: join(redisRelay), http: join(httpRelay) }
}
