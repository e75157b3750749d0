// From one command to what the policy sees: class, resources (keys, index names), a normalized
// statement with values left out, and facts. Based on Redis's own metadata (flags, ACL categories,
// key-specs) with our classes on top; RediSearch FT.* and Redis 8 vector sets by name.
import { hash } from 'node:crypto'
import type { Operation, OperationClass, StatementInfo, VectorFacts } from '@portcullis/core'
import { BUILTIN_COMMANDS, keyPositions, resolveCommand, type CommandTable } from './commands.ts'

export interface ClassifyOptions {
  /** DEL/UNLINK over this many keys is bulk-delete (target.options.bulkDeleteKeys, default 100) */
  bulkDeleteKeys?: number
  /** 'write': scripts and functions count as writes instead of admin (target.options.scripts) */
  scripts?: 'admin' | 'write'
  /** command metadata (the upstream's overlay); the built-in table otherwise */
  table?: CommandTable
}

type Arg = Buffer | string

const ADMIN = new Set(['config', 'debug', 'shutdown', 'module', 'acl', 'replicaof', 'slaveof', 'migrate', 'save', 'bgsave',
  'bgrewriteaof', 'monitor', 'swapdb', 'failover', 'sync', 'psync', 'replconf', 'restore-asking', 'cluster', 'latency',
  'memory', 'slowlog', 'lastsave', 'object'])
// container commands whose read-only subcommands are not admin
const ADMIN_READ_SUBS = new Set(['acl whoami', 'acl cat', 'memory usage', 'object encoding', 'object freq', 'object idletime',
  'object refcount', 'cluster keyslot', 'cluster info', 'cluster myid', 'cluster nodes', 'cluster slots', 'cluster shards'])
const SCRIPTS = new Set(['eval', 'evalsha', 'eval_ro', 'evalsha_ro', 'fcall', 'fcall_ro', 'script', 'function'])
const SCRIPT_READS = new Set(['EVAL_RO', 'EVALSHA_RO', 'FCALL_RO', 'SCRIPT EXISTS', 'FUNCTION LIST', 'FUNCTION DUMP', 'FUNCTION STATS'])
const SESSION_GROUPS = new Set(['connection', 'transactions'])
const PUBSUB_READS = new Set(['subscribe', 'psubscribe', 'ssubscribe', 'unsubscribe', 'punsubscribe', 'sunsubscribe', 'pubsub'])

const text = (a: Arg | undefined): string => (a === undefined ? '' : typeof a === 'string' ? a : a.toString('utf8'))
const upper = (a: Arg | undefined): string => text(a).toUpperCase()

/** a value fit to be shown: printable UTF-8, bounded */
function shown(a: Arg): string {
  const s = text(a)
  if (typeof a !== 'string' && Buffer.byteLength(s) !== a.length) return '?'
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x08\x0e-\x1f\x7f\ufffd]/.test(s)) return '?'
  const cut = s.length > 120 ? s.slice(0, 120) + '…' : s
  return /[\s"]/.test(cut) || cut === '' ? JSON.stringify(cut) : cut
}

function statementOf(name: string, shownArgs: string[]): string {
  const max = 24
  const parts = shownArgs.length > max ? [...shownArgs.slice(0, max), `… (+${shownArgs.length - max})`] : shownArgs
  return [name, ...parts].join(' ')
}

// whitespace that trim() and the collapse to single spaces would change: a run, a tab or another
// space character, or whitespace at either end
const NOT_NORMAL = /\s\s|[^\S ]|^\s|\s$/

export function fingerprintOf(statement: string): string {
  // one-shot: no Hash object per command; the text is normalized only when that changes it
  return hash('sha256', NOT_NORMAL.test(statement) ? statement.trim().replace(/\s+/g, ' ') : statement, 'hex').slice(0, 16)
}

/**
 * What a command's class and key positions are when they follow from its name and argument count
 * alone (no subcommand, keys at fixed index ranges, a class no argument changes): worked out once
 * per table, name and count, so that classifying it costs the keys and the statement only.
 */
export interface Shape {
  cls: OperationClass
  name: string
  keyIdx: number[]
  /** DEL / UNLINK: bulk-delete past ClassifyOptions.bulkDeleteKeys keys */
  countsKeys: boolean
}
const SHAPE_ARGC = 64
const VECTOR_SET_COMMAND = /^v(add|rem|sim|emb|getattr|setattr|card|dim|info|links|randmember)$/
const shapes = new WeakMap<CommandTable, Map<string, (Shape | null)[]>>()

function shapeOf(table: CommandTable, base: string, args: Arg[], opts: ClassifyOptions): Shape | null {
  // only names the table knows are kept (a client's made-up names must not grow the cache)
  const meta = table.get(base) ?? BUILTIN_COMMANDS.get(base)
  if (meta === undefined || meta.sub !== undefined) return null
  let byName = shapes.get(table)
  if (byName === undefined) shapes.set(table, (byName = new Map()))
  let byArgc = byName.get(base)
  if (byArgc === undefined) byName.set(base, (byArgc = []))
  const known = byArgc[args.length]
  if (known !== undefined) return known
  let shape: Shape | null = null
  const fixed = (meta.keySpecs ?? []).every(([, begin, find]) => begin[0] === 'index' && find[0] === 'range')
  // RediSearch and vector sets have rules of their own (classifyFull); SORT's and scripts' class
  // depends on their arguments
  const own = base.startsWith('ft.') || VECTOR_SET_COMMAND.test(base) || SCRIPTS.has(base) || base === 'sort'
  if (fixed && !own) {
    const countsKeys = base === 'del' || base === 'unlink'
    // the class as the full path gives it, for these very arguments; DEL/UNLINK's bulk threshold
    // is applied per call
    const full = classifyFull(args, countsKeys ? { ...opts, bulkDeleteKeys: Infinity } : opts)
    shape = { cls: full.class, name: String(full.facts?.command), keyIdx: keyPositions(meta, args), countsKeys }
  }
  byArgc[args.length] = shape
  return shape
}

/** `shown` for a value that is printable ASCII without a quote (most keys): its bytes as they are */
function shownKey(a: Arg): string {
  if (typeof a === 'string' || a.length === 0 || a.length > 120) return shown(a)
  for (let i = 0; i < a.length; i++) {
    const c = a[i]!
    if (c <= 0x20 || c >= 0x7f || c === 0x22) return shown(a)
  }
  return a.toString('latin1')
}

/**
 * A key under which to cache this command's classification: two commands with the same key (the
 * same table, as the caller's cache is per table; the same name, argument count and keys) classify
 * alike whatever their other arguments, since their shape fixes the class and key positions and
 * the statement shows only the keys. Undefined when the command has no shape (its arguments
 * matter), or its keys come to more than `maxKeyBytes`.
 */
export function operationKey(args: Buffer[], opts: ClassifyOptions, maxKeyBytes: number): string | undefined {
  const shape = commandShape(args, opts)
  if (shape === null) return undefined
  const keys = shapeKeys(shape, args, maxKeyBytes)
  return keys === undefined ? undefined : shape.name + ' ' + args.length + ' ' + keys
}

/**
 * The first part of operationKey: the shape (one object per table, name and argument count) of a
 * command whose shape fixes its class, else null. `base`: the lower-case name, when the caller has it.
 */
export function commandShape(args: Arg[], opts: ClassifyOptions, base?: string): Shape | null {
  if (args.length >= SHAPE_ARGC || args.length === 0) return null
  // a name the table knows is ASCII: its latin1 text is the UTF-8 text classifyCommand reads
  return shapeOf(opts.table ?? BUILTIN_COMMANDS, base ?? (typeof args[0] === 'string' ? args[0] : args[0]!.toString('latin1')).toLowerCase(), args, opts)
}

/**
 * The second part of operationKey: the command's keys as one text, which tells any two sets of
 * keys of one shape apart (a single key as it is, several each length-prefixed, so that a key's
 * bytes cannot be read as the next key's); undefined past `maxKeyBytes`
 */
export function shapeKeys(shape: Shape, args: Buffer[], maxKeyBytes: number): string | undefined {
  const idx = shape.keyIdx
  if (idx.length === 1) {
    const a = args[idx[0]!]!
    return a.length > maxKeyBytes ? undefined : a.toString('latin1')
  }
  let key = ''
  let bytes = 0
  for (let k = 0; k < idx.length; k++) {
    const a = args[idx[k]!]!
    bytes += a.length
    if (bytes > maxKeyBytes) return undefined
    key += (k === 0 ? '' : ' ') + a.length + ':' + a.toString('latin1')
  }
  return key
}

/** one command → one statement */
export function classifyCommand(args: Arg[], opts: ClassifyOptions = {}): StatementInfo {
  if (args.length >= SHAPE_ARGC || args.length === 0) return classifyFull(args, opts)
  const base = text(args[0]).toLowerCase()
  const shape = shapeOf(opts.table ?? BUILTIN_COMMANDS, base, args, opts)
  if (shape === null) return classifyFull(args, opts)
  const keyIdx = shape.keyIdx
  const keys: string[] = []
  let statement = shape.name
  let k = 0
  for (let i = 1; i < args.length; i++) {
    if (keyIdx[k] === i) {
      keys.push(text(args[i]))
      k++
      // the statement shows 24 arguments at most (statementOf)
      if (i <= 24) statement += ' ' + shownKey(args[i]!)
    } else if (i <= 24) statement += ' ?'
  }
  if (args.length - 1 > 24) statement += ` … (+${args.length - 1 - 24})`
  const cls = shape.countsKeys && keys.length > (opts.bulkDeleteKeys ?? 100) ? 'bulk-delete' : shape.cls
  return { class: cls, resources: keys, statement, facts: { command: shape.name, keysTouched: keys.length } }
}

/** classifyCommand without the per-shape shortcut: every check, from the arguments */
export function classifyFull(args: Arg[], opts: ClassifyOptions = {}): StatementInfo {
  const base = text(args[0]).toLowerCase()
  if (base.startsWith('ft.')) return classifySearch(args, opts.table)
  if (VECTOR_SET_COMMAND.test(base)) return classifyVectorSet(args)

  const res = resolveCommand(opts.table ?? BUILTIN_COMMANDS, args)
  const nameWords = res.sub ? 2 : 1
  if (!res.meta) {
    // unknown to Redis's metadata: only a rule that names it (facts.command) lets it through
    return {
      class: 'admin',
      resources: [],
      statement: statementOf(res.name, args.slice(1).map(() => '?')),
      facts: { command: res.name, unknownCommand: true },
    }
  }
  const meta = res.meta
  const keyIdx = keyPositions(meta, args)
  const keys = keyIdx.map(i => text(args[i]))
  const keySet = new Set(keyIdx)
  const facts: Record<string, string | number | boolean> = { command: res.name, keysTouched: keys.length }
  let cls: OperationClass
  const flags = meta.flags
  const ks = meta.keySpecs ?? []

  if (SCRIPTS.has(res.base)) {
    cls = opts.scripts === 'write' ? (SCRIPT_READS.has(res.name) ? 'read' : 'write') : 'admin'
  } else if (res.base === 'flushall' || res.base === 'flushdb') {
    cls = 'bulk-delete'
  } else if ((res.base === 'del' || res.base === 'unlink') && keys.length > (opts.bulkDeleteKeys ?? 100)) {
    cls = 'bulk-delete'
  } else if ((ADMIN.has(res.base) && !ADMIN_READ_SUBS.has(res.name.toLowerCase())) || flags.includes('admin')) {
    cls = 'admin'
  } else if (res.base === 'getdel' || ks.some(([f]) => f.includes('delete') && !f.includes('access'))) {
    // removes without handing the data back (DEL, HDEL, ZREM…); pops and moves are writes
    cls = 'delete'
  } else if (res.base === 'sort') {
    cls = args.some((a, i) => i > 1 && upper(a) === 'STORE') ? 'write' : 'read'
  } else if (flags.includes('write') || res.base === 'publish' || res.base === 'spublish') {
    cls = 'write'
  } else if (flags.includes('readonly') || PUBSUB_READS.has(res.base)) {
    cls = 'read'
  } else if (SESSION_GROUPS.has(meta.group ?? '') || res.base === 'client' || res.base === 'hello' || res.base === 'auth') {
    cls = 'session'
  } else {
    cls = 'read'
  }

  const shownArgs = args.slice(nameWords).map((a, j) => (keySet.has(j + nameWords) ? shown(a) : '?'))
  return { class: cls, resources: keys, statement: statementOf(res.name, shownArgs), facts }
}

// ---- RediSearch ----------------------------------------------------------------------------------

const FT_SCHEMA = new Set(['FT.CREATE', 'FT.ALTER', 'FT.ALIASADD', 'FT.ALIASUPDATE', 'FT.ALIASDEL', 'FT._ALTERIFNX', 'FT._CREATEIFNX'])
const FT_WRITE = new Set(['FT.ADD', 'FT.ADDHASH', 'FT.SUGADD', 'FT.SYNUPDATE', 'FT.SYNADD', 'FT.DICTADD', 'FT.DICTDEL', 'FT.SUGDEL'])
const FT_READ = new Set(['FT.SEARCH', 'FT.AGGREGATE', 'FT.INFO', 'FT.EXPLAIN', 'FT.EXPLAINCLI', 'FT.PROFILE', 'FT.TAGVALS', 'FT.SPELLCHECK',
  'FT.SYNDUMP', 'FT.DICTDUMP', 'FT._LIST', 'FT.GET', 'FT.MGET', 'FT.SUGGET', 'FT.SUGLEN', 'FT.CURSOR'])
// FT.SUG* name a key, not an index
const FT_KEYED = new Set(['FT.SUGADD', 'FT.SUGGET', 'FT.SUGDEL', 'FT.SUGLEN'])
// no index argument at all
const FT_NO_INDEX = new Set(['FT._LIST', 'FT.DICTADD', 'FT.DICTDEL', 'FT.DICTDUMP', 'FT.CONFIG'])

const KNN = /=>\s*\[\s*KNN\s+(\$?[\w]+)\s+@[\w]+\s+\$[\w]+/i
const VECTOR_RANGE = /\[\s*VECTOR_RANGE\b/i

function classifySearch(args: Arg[], table: CommandTable | undefined): StatementInfo {
  const name = upper(args[0])
  const facts: Record<string, string | number | boolean> = { command: name }
  let cls: OperationClass
  let vector: VectorFacts | undefined
  const resources: string[] = []
  const shownArgs: string[] = args.slice(1).map(() => '?')
  if (!FT_NO_INDEX.has(name) && args.length > 1) {
    resources.push(text(args[name === 'FT.CURSOR' ? 2 : 1]))
    shownArgs[name === 'FT.CURSOR' ? 1 : 0] = shown(args[name === 'FT.CURSOR' ? 2 : 1]!)
    if (name === 'FT.CURSOR') shownArgs[0] = shown(args[1]!)
  }

  if (FT_SCHEMA.has(name)) cls = 'schema-change'
  else if (name === 'FT.DROPINDEX') cls = args.slice(2).some(a => upper(a) === 'DD') ? 'bulk-delete' : 'schema-change'
  else if (name === 'FT.DROP') cls = args.slice(2).some(a => upper(a) === 'KEEPDOCS') ? 'schema-change' : 'bulk-delete'
  else if (name === 'FT.DEL') cls = 'delete'
  else if (name === 'FT.CONFIG') cls = upper(args[1]) === 'SET' ? 'admin' : 'read'
  else if (FT_WRITE.has(name)) cls = 'write'
  else if (FT_READ.has(name)) cls = 'read'
  else if (table?.has(name.toLowerCase())) {
    // a module command we have no rule for: its own flags, as the upstream reports them
    const flags = table.get(name.toLowerCase())!.flags
    cls = flags.includes('admin') ? 'admin' : flags.includes('write') ? 'write' : flags.includes('readonly') ? 'read' : 'admin'
  } else {
    return { class: 'admin', resources, statement: statementOf(name, shownArgs), facts: { command: name, unknownCommand: true } }
  }
  if (name === 'FT.SEARCH' || name === 'FT.AGGREGATE' || name === 'FT.PROFILE') {
    const qi = name === 'FT.PROFILE' ? args.findIndex((a, i) => i > 1 && upper(a) === 'QUERY') + 1 : 2
    const query = qi > 0 ? text(args[qi]) : ''
    if (qi > 0 && args[qi] !== undefined) shownArgs[qi - 1] = shown(args[qi]!)
    const knn = KNN.exec(query)
    if (knn) {
      let k = Number(knn[1])
      if (knn[1]!.startsWith('$')) k = Number(text(paramValue(args, knn[1]!.slice(1))))
      vector = { search: true, topK: Number.isFinite(k) && k >= 0 ? k : undefined }
    } else if (VECTOR_RANGE.test(query)) {
      const limit = limitOf(args)
      vector = { search: true, topK: limit }
    }
    if (vector) {
      facts.vectorSearch = true
      if (vector.topK !== undefined) facts.topK = vector.topK
    }
  }
  if (FT_KEYED.has(name)) facts.keysTouched = 1
  const out: StatementInfo = { class: cls, resources, statement: statementOf(name, shownArgs), facts }
  if (vector) out.vector = vector
  return out
}

function paramValue(args: Arg[], param: string): Arg | undefined {
  for (let i = 3; i < args.length; i++) {
    if (upper(args[i]) !== 'PARAMS') continue
    const n = Number(text(args[i + 1]))
    for (let j = i + 2; j < i + 2 + n && j + 1 < args.length; j += 2) if (text(args[j]) === param) return args[j + 1]
  }
  return undefined
}

function limitOf(args: Arg[]): number | undefined {
  for (let i = 3; i + 2 < args.length; i++) if (upper(args[i]) === 'LIMIT') return Number(text(args[i + 2]))
  return 10
}

// ---- Redis 8 vector sets ---------------------------------------------------------------------------

function classifyVectorSet(args: Arg[]): StatementInfo {
  const name = upper(args[0])
  const key = args[1] !== undefined ? text(args[1]) : undefined
  const facts: Record<string, string | number | boolean> = { command: name, keysTouched: key === undefined ? 0 : 1 }
  let cls: OperationClass = 'read'
  let vector: VectorFacts | undefined
  if (name === 'VADD' || name === 'VSETATTR') cls = 'write'
  else if (name === 'VREM') cls = 'delete'
  else if (name === 'VSIM') {
    let topK = 10
    for (let i = 2; i + 1 < args.length; i++) {
      const w = upper(args[i])
      // skip the FP32 blob / VALUES list so a blob byte pattern is never read as an option
      if (w === 'FP32') { i++; continue }
      if (w === 'VALUES') { i += 1 + Number(text(args[i + 1])); continue }
      if (w === 'COUNT') { topK = Number(text(args[i + 1])); break }
    }
    vector = { search: true, topK: Number.isFinite(topK) ? topK : undefined }
    facts.vectorSearch = true
    if (vector.topK !== undefined) facts.topK = vector.topK
  } else if (name === 'VEMB') {
    vector = { export: true }
  }
  const shownArgs = args.slice(1).map((a, j) => (j === 0 ? shown(a) : '?'))
  const out: StatementInfo = { class: cls, resources: key === undefined ? [] : [key], statement: statementOf(name, shownArgs), facts }
  if (vector) out.vector = vector
  return out
}

// ---- operations ------------------------------------------------------------------------------------

const RANK: Record<OperationClass, number> = { session: 0, read: 1, write: 2, delete: 3, 'bulk-delete': 4, 'schema-change': 5, admin: 6 }

/** one or more commands (a MULTI block) → one operation */
export function toOperation(statements: StatementInfo[]): Operation {
  let cls: OperationClass = 'session'
  const resources: string[] = []
  const facts: Record<string, string | number | boolean> = {}
  for (const s of statements) {
    if (RANK[s.class] > RANK[cls]) cls = s.class
    for (const r of s.resources) if (!resources.includes(r)) resources.push(r)
  }
  const first = statements[0]
  if (statements.length === 1 && first?.facts) Object.assign(facts, first.facts)
  else {
    let keys = 0
    for (const s of statements) keys += Number(s.facts?.keysTouched ?? 0)
    facts.keysTouched = keys
  }
  const statement = statements.length === 1 ? first!.statement : statements.map(s => s.statement).join('; ')
  return { protocol: 'redis', class: cls, resources, statement, fingerprint: fingerprintOf(statement), statements, facts }
}

export function classifyToOperation(args: Arg[], opts?: ClassifyOptions): Operation {
  return toOperation([classifyCommand(args, opts)])
}
