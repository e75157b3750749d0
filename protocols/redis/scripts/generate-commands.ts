// Regenerates src/commands.json from a local redis-server's own metadata (COMMAND INFO + COMMAND
// DOCS): flags, ACL categories, arity, first/last/step and key-specs for every built-in command and
// subcommand. Module commands are left out: FT.* and vector sets are classified by name.
//   pnpm exec tsx scripts/generate-commands.ts   (needs redis-server on PATH)
import { writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import { startRedis } from '@portcullis/fixtures/redis'

type Raw = unknown[]

function toMap(list: unknown): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  const a = list as unknown[]
  for (let i = 0; i + 1 < a.length; i += 2) out[String(a[i])] = a[i + 1]
  return out
}

// key-spec, compacted: [flags, beginSearch, findKeys]
//   beginSearch: ['index', pos] | ['keyword', keyword, startfrom] | ['unknown']
//   findKeys: ['range', lastkey, keystep, limit] | ['keynum', keynumidx, firstkey, keystep] | ['unknown']
function keySpec(raw: unknown): unknown[] {
  const m = toMap(raw)
  const bs = toMap(m.begin_search)
  const bsSpec = toMap(bs.spec)
  const fk = toMap(m.find_keys)
  const fkSpec = toMap(fk.spec)
  const begin = bs.type === 'index' ? ['index', Number(bsSpec.index)]
    : bs.type === 'keyword' ? ['keyword', String(bsSpec.keyword), Number(bsSpec.startfrom)]
    : ['unknown']
  const find = fk.type === 'range' ? ['range', Number(fkSpec.lastkey), Number(fkSpec.keystep), Number(fkSpec.limit)]
    : fk.type === 'keynum' ? ['keynum', Number(fkSpec.keynumidx), Number(fkSpec.firstkey), Number(fkSpec.keystep)]
    : ['unknown']
  return [(m.flags as string[]).map(String), begin, find]
}

function entry(info: Raw, docs: Record<string, unknown>): [string, Record<string, unknown>] {
  const [name, arity, flags, first, last, step, acl, , specs, subs] = info as [string, number, string[], number, number, number, string[], unknown, unknown[], Raw[]]
  const doc = toMap(docs[String(name)] ?? [])
  const subDocs = toMap(doc.subcommands ?? [])
  const e: Record<string, unknown> = {
    arity: Number(arity),
    flags: flags.map(String),
    acl: acl.map(a => String(a).replace(/^@/, '')),
    group: doc.group ? String(doc.group) : undefined,
    first: Number(first), last: Number(last), step: Number(step),
  }
  if (specs?.length) e.keySpecs = specs.map(keySpec)
  if (subs?.length) {
    const sub: Record<string, unknown> = {}
    for (const s of subs) {
      const [n, v] = entry(s, subDocs)
      sub[n.split('|')[1] ?? n] = v
    }
    e.sub = sub
  }
  return [String(name).toLowerCase(), e]
}

const server = await startRedis()
const redis = new Redis({ host: server.host, port: server.port, lazyConnect: true })
try {
  await redis.connect()
  const infos = (await redis.call('COMMAND')) as Raw[]
  const docs = toMap(await redis.call('COMMAND', 'DOCS'))
  const version = String(((await redis.info('server')).match(/redis_version:(\S+)/) ?? [])[1])
  const table: Record<string, unknown> = {}
  for (const info of infos.sort((a, b) => String(a[0]).localeCompare(String(b[0])))) {
    const [name, e] = entry(info, docs)
    if ((e.flags as string[]).includes('module')) continue
    table[name] = e
  }
  const out = fileURLToPath(new URL('../src/commands.json', import.meta.url))
  writeFileSync(out, JSON.stringify({ source: `redis-server ${version} COMMAND + COMMAND DOCS`, commands: table }) + '\n')
  console.log(`${Object.keys(table).length} commands from redis ${version} → ${out}`)
} finally {
  redis.disconnect()
  await server.stop()
}
