// The bench's own Postgres 15 server and its reference proxy, pgbouncer (session pooling). Both
// refuse to run as root, so they run as the `postgres` user in directories that user owns.
import { mkdtempSync, writeFileSync, chmodSync, chownSync, rmSync, readdirSync, existsSync } from 'node:fs'
import { execFileSync } from 'node:child_process'
import { join } from 'node:path'
import { asPostgres, daemon, freePort, isRoot, run, waitForPort, which, type Daemon } from './proc.ts'
import { Unavailable } from './types.ts'

/** the newest installed server's binaries (Debian keeps them out of PATH) */
const PG_BIN = (() => {
  try {
    const versions = readdirSync('/usr/lib/postgresql').filter(v => existsSync(`/usr/lib/postgresql/${v}/bin/initdb`))
    versions.sort((a, b) => Number(b) - Number(a))
    return versions.length ? `/usr/lib/postgresql/${versions[0]}/bin` : '/usr/lib/postgresql/15/bin'
  } catch {
    return '/usr/lib/postgresql/15/bin'
  }
})()

export interface PostgresServer {
  host: string
  port: number
  user: string
  database: string
  /** runs SQL through psql as the superuser, returns stdout */
  psql(sql: string, database?: string): Promise<string>
  stop(): Promise<void>
}

function ownedTempDir(prefix: string): string {
  const dir = mkdtempSync(join('/tmp', prefix))
  chmodSync(dir, 0o700)
  if (isRoot) {
    const uid = Number(execFileSync('id', ['-u', 'postgres']).toString().trim())
    const gid = Number(execFileSync('id', ['-g', 'postgres']).toString().trim())
    chownSync(dir, uid, gid)
  }
  return dir
}


export async function startPostgres(): Promise<PostgresServer> {
  const initdb = `${PG_BIN}/initdb`
  if (!existsSync(initdb) || !which('psql')) throw new Unavailable('postgres server binaries or psql not installed')
  const dir = ownedTempDir('bench-pg-')
  const data = join(dir, 'data')
  const [c, a] = asPostgres(initdb, ['-D', data, '-A', 'trust', '-U', 'postgres', '--no-sync', '-E', 'UTF8'])
  const init = await run(c, a)
  if (init.code !== 0) throw new Error(`initdb failed: ${init.stderr}`)
  const port = await freePort()
  const [pc, pa] = asPostgres(`${PG_BIN}/postgres`, [
    '-D', data, '-p', String(port), '-k', dir, '-c', 'listen_addresses=127.0.0.1',
    '-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off',
    '-c', 'max_connections=200', '-c', 'shared_buffers=128MB', '-c', 'log_min_messages=warning',
  ])
  const d = daemon(pc, pa)
  await waitForPort(port, '127.0.0.1', 30_000, d.child)
  const server: PostgresServer = {
    host: '127.0.0.1',
    port,
    user: 'postgres',
    database: 'bench',
    async psql(sql, database = 'bench') {
      const r = await run('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-A', '-t', '-h', '127.0.0.1', '-p', String(port), '-U', 'postgres', '-d', database, '-c', sql])
      if (r.code !== 0) throw new Error(`psql: ${r.stderr.trim()}`)
      return r.stdout
    },
    async stop() {
      await d.stop()
      rmSync(dir, { recursive: true, force: true })
    },
  }
  // the server accepts TCP a moment before it accepts logins
  for (let i = 0; ; i++) {
    try { await server.psql('select 1', 'postgres'); break } catch (err) { if (i > 100) throw err; await new Promise(r => setTimeout(r, 100)) }
  }
  await server.psql('create database bench', 'postgres')
  return server
}

export interface Pgbouncer { host: string; port: number; stop(): Promise<void> }

/** pgbouncer in session pooling in front of `upstream` (trust auth on loopback, like the direct path) */
export async function startPgbouncer(upstream: { host: string; port: number }, database = 'bench'): Promise<Pgbouncer> {
  const exe = which('pgbouncer')
  if (!exe) throw new Unavailable('pgbouncer not installed')
  const dir = ownedTempDir('bench-pgb-')
  const port = await freePort()
  const ini = join(dir, 'pgbouncer.ini')
  const users = join(dir, 'userlist.txt')
  writeFileSync(users, '"postgres" ""\n')
  writeFileSync(ini, [
    '[databases]',
    `${database} = host=${upstream.host} port=${upstream.port} dbname=${database}`,
    '[pgbouncer]',
    'listen_addr = 127.0.0.1',
    `listen_port = ${port}`,
    'unix_socket_dir =',
    'auth_type = trust',
    `auth_file = ${users}`,
    'pool_mode = session',
    'max_client_conn = 500',
    'default_pool_size = 100',
    'ignore_startup_parameters = extra_float_digits,options',
    'log_connections = 0',
    'log_disconnections = 0',
    '',
  ].join('\n'))
  if (isRoot) execFileSync('chown', ['-R', 'postgres:postgres', dir])
  const [c, a] = asPostgres(exe, [ini])
  const d = daemon(c, a)
  try {
    await waitForPort(port, '127.0.0.1', 10_000, d.child)
  } catch (err) {
    throw new Error(`pgbouncer did not start: ${(err as Error).message}\n${d.output()}`)
  }
  return {
    host: '127.0.0.1',
    port,
    async stop() { await d.stop(); rmSync(dir, { recursive: true, force: true }) },
  }
}


