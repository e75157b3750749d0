// A target's scope on Redis: `scope: { keys: ['tenant:${claims.tenant}:*'], indexes: [...], tag: {...} }`.
// Checked after the policy allowed a command, before it goes upstream; a refusal is -NOPERM.
//
// Under a key scope a command runs only when the gateway can name every key it touches:
//   - commands with key-specs: every key argument (keyPositions, the same code classification
//     uses) must match a scope pattern; a command with a key-spec Redis itself marks unknown or
//     incomplete (SORT/SORT_RO with BY or GET patterns, MIGRATE) is refused;
//   - scripts and functions (EVAL*, FCALL*, SCRIPT, FUNCTION) are refused: a script reaches keys it
//     does not declare;
//   - commands without keys run only when they do not read the keyspace (PING, ECHO, MULTI/EXEC,
//     CLIENT SETNAME…, INFO — see KEYLESS); RANDOMKEY, DBSIZE, FLUSHDB, SWAPDB, PUBSUB, … are refused;
//   - SCAN without MATCH gets `MATCH <scope>` appended (one scope pattern of the form `prefix*`);
//     SCAN … MATCH p and KEYS p run when p can only match inside the scope (its literal prefix
//     starts with the scope's); anything else is refused;
//   - SUBSCRIBE / SSUBSCRIBE / PUBLISH / SPUBLISH: every channel must match `channels` (default:
//     the key patterns); PSUBSCRIBE patterns must lie inside them like a SCAN MATCH;
//   - FT.SEARCH / FT.AGGREGATE / FT.INFO / FT.EXPLAIN only on an index matching `indexes`; with
//     `tag`, the query becomes `@field:{value} (<query>)` (the client's query parenthesised, and
//     refused unless its parentheses balance, so `|` cannot escape the AND); a KNN query keeps its
//     `=>[KNN …]` part after the filter. Other FT.* commands are refused (FT.CREATE could index
//     another tenant's prefix, FT.TAGVALS lists every tenant's tags).
import type { SessionScope } from '@portcullis/core'
import { BUILTIN_COMMANDS, keyPositions, resolveCommand, type CommandTable } from './commands.ts'
import { splitCommandLine } from './split-args.ts'

type Arg = Buffer | string
const text = (a: Arg | undefined): string => (a === undefined ? '' : typeof a === 'string' ? a : a.toString('utf8'))

/** refused; or run `args` instead (`applied`: what the scope changed, for the recording) */
export type ScopeVerdict = { refuse: string } | { args: Buffer[]; applied: string } | undefined

// ---- Redis glob (stringmatchlen) ---------------------------------------------------------------------

const globs = new Map<string, RegExp>()

/** Redis's glob: `*`, `?`, `[abc]`, `[^a-z]`, `\x` literal. */
export function globRegExp(glob: string): RegExp {
  let re = globs.get(glob)
  if (re) return re
  let src = ''
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]!
    if (c === '\\' && i + 1 < glob.length) src += escapeRe(glob[++i]!)
    else if (c === '*') src += '[\\s\\S]*'
    else if (c === '?') src += '[\\s\\S]'
    else if (c === '[') {
      const end = glob.indexOf(']', i + 2)
      if (end < 0) src += '\\['
      else {
        let body = glob.slice(i + 1, end)
        const neg = body.startsWith('^')
        if (neg) body = body.slice(1)
        src += `[${neg ? '^' : ''}${body.replace(/[\]\\^]/g, '\\$&')}]`
        i = end
      }
    } else src += escapeRe(c)
  }
  re = new RegExp(`^${src}$`)
  if (globs.size > 10_000) globs.clear()
  globs.set(glob, re)
  return re
}

function escapeRe(c: string): string {
  return c.replace(/[\\^$.*+?()[\]{}|/-]/g, '\\$&')
}

/** Redis matches bytes: names and patterns compared as their bytes (latin1 strings of them) */
function bytes(a: Arg): string {
  return (typeof a === 'string' ? Buffer.from(a, 'utf8') : a).toString('latin1')
}

function matchesAny(patterns: readonly string[], name: Arg): boolean {
  const n = bytes(name)
  for (const p of patterns) if (globRegExp(bytes(p)).test(n)) return true
  return false
}

/** The literal text a glob starts with (escapes resolved), and whether the glob is just that followed by `*`. */
export function literalPrefix(glob: string): { prefix: string; prefixStar: boolean } {
  let prefix = ''
  let i = 0
  for (; i < glob.length; i++) {
    const c = glob[i]!
    if (c === '\\' && i + 1 < glob.length) prefix += glob[++i]
    else if (c === '*' || c === '?' || c === '[') break
    else prefix += c
  }
  return { prefix, prefixStar: i === glob.length - 1 && glob[i] === '*' }
}

/** Whether every name `pattern` matches is inside one of the scope patterns (conservative). */
export function patternWithin(pattern: Arg, scope: readonly string[]): boolean {
  const p = literalPrefix(bytes(pattern)).prefix
  for (const s of scope) {
    const sp = literalPrefix(bytes(s))
    // `tenant:acme:*`: anything starting with `tenant:acme:` is inside
    if (sp.prefixStar && p.startsWith(sp.prefix)) return true
  }
  return false
}

// ---- commands ------------------------------------------------------------------------------------

/** keyless commands that read nothing of the keyspace */
const KEYLESS = new Set([
  'PING', 'ECHO', 'MULTI', 'EXEC', 'DISCARD', 'UNWATCH', 'RESET', 'TIME', 'SELECT', 'INFO', 'COMMAND', 'COMMAND COUNT', 'COMMAND INFO',
  'COMMAND DOCS', 'COMMAND LIST', 'CLIENT SETNAME', 'CLIENT GETNAME', 'CLIENT ID', 'CLIENT INFO', 'CLIENT SETINFO', 'CLIENT NO-EVICT',
  'CLIENT NO-TOUCH', 'LOLWUT', 'READONLY', 'READWRITE', 'UNSUBSCRIBE', 'PUNSUBSCRIBE', 'SUNSUBSCRIBE', 'WAIT', 'WAITAOF',
])
const SCRIPTS = new Set(['eval', 'evalsha', 'eval_ro', 'evalsha_ro', 'fcall', 'fcall_ro', 'script', 'function'])
const CHANNEL_COMMANDS = new Set(['SUBSCRIBE', 'SSUBSCRIBE'])
const PUBLISH = new Set(['PUBLISH', 'SPUBLISH'])
const FT_ALLOWED = new Set(['FT.SEARCH', 'FT.AGGREGATE', 'FT.INFO', 'FT.EXPLAIN', 'FT.EXPLAINCLI'])
const FT_KEYED = new Set(['FT.SUGADD', 'FT.SUGGET', 'FT.SUGDEL', 'FT.SUGLEN'])
const VECTOR_SET = /^V(ADD|REM|SIM|EMB|GETATTR|SETATTR|CARD|DIM|INFO|LINKS|RANDMEMBER)$/

const refuse = (why: string): ScopeVerdict => ({ refuse: `scope: ${why}` })

/** Whether `args` may run under `scope`, or the args to run instead (SCAN MATCH, FT.SEARCH tag). */
export function scopeVerdict(args: readonly Arg[], scope: SessionScope | undefined, table: CommandTable | undefined): ScopeVerdict {
  // a scope without key patterns names no key: every keyed command is refused (fail closed)
  if (!scope) return undefined
  const keys = scope.keys ?? []
  const base = text(args[0]).toUpperCase()
  if (base.startsWith('FT.')) return searchVerdict(base, args, scope)
  if (VECTOR_SET.test(base)) {
    const key = text(args[1])
    return args.length > 1 && matchesAny(keys, args[1]!) ? undefined : refuse(`key ${JSON.stringify(key)} is outside this session's scope`)
  }
  const res = resolveCommand(table ?? BUILTIN_COMMANDS, args)
  if (SCRIPTS.has(res.base)) return refuse(`${res.name} is refused under a key scope: a script reaches keys it does not declare`)
  if (CHANNEL_COMMANDS.has(res.name) || PUBLISH.has(res.name)) {
    const channels = scope.channels ?? []
    const named = PUBLISH.has(res.name) ? args.slice(1, 2) : args.slice(1)
    for (const c of named) if (!matchesAny(channels, c)) return refuse(`channel ${JSON.stringify(text(c))} is outside this session's scope`)
    return undefined
  }
  if (res.name === 'PSUBSCRIBE') {
    for (const p of args.slice(1)) if (!patternWithin(p, scope.channels ?? [])) return refuse(`channel pattern ${JSON.stringify(text(p))} reaches outside this session's scope`)
    return undefined
  }
  if (res.name === 'SCAN') return scanVerdict(args, keys)
  if (res.name === 'KEYS') {
    return args.length === 2 && patternWithin(args[1]!, keys) ? undefined : refuse(`KEYS ${JSON.stringify(text(args[1]))} reaches outside this session's scope (use a pattern inside ${keys.join(', ')})`)
  }
  const meta = res.meta
  if (!meta) return refuse(`${res.name} is unknown: its keys cannot be named`)
  if (meta.keySpecs?.some(([flags, begin, find]) => begin[0] === 'unknown' || find[0] === 'unknown' || flags.includes('incomplete'))) {
    // SORT key with no BY / GET pattern names only its key (and STORE's destination)
    if (!(res.base === 'sort' || res.base === 'sort_ro') || args.some((a, i) => i > 1 && /^(BY|GET)$/i.test(text(a))))
      return refuse(`${res.name} may reach keys it does not name (BY / GET patterns, MIGRATE); refused under a key scope`)
  }
  const positions = keyPositions(meta, args)
  if (res.base === 'sort' || res.base === 'sort_ro') {
    // STORE destination: a key like any other
    for (let i = 2; i + 1 < args.length; i++) if (/^STORE$/i.test(text(args[i]))) positions.push(i + 1)
  }
  if (positions.length === 0) return KEYLESS.has(res.name) ? undefined : refuse(`${res.name} names no key, and reads or changes the keyspace beyond this session's scope`)
  for (const i of positions) {
    const key = text(args[i])
    if (!matchesAny(keys, args[i]!)) return refuse(`key ${JSON.stringify(key)} is outside this session's scope`)
  }
  return undefined
}

function scanVerdict(args: readonly Arg[], keys: readonly string[]): ScopeVerdict {
  let match = -1
  for (let i = 2; i + 1 < args.length; i += 2) if (/^MATCH$/i.test(text(args[i]))) match = i + 1
  if (match >= 0) {
    // a second MATCH: Redis takes the last one, and so does this check (the loop keeps the last)
    return patternWithin(args[match]!, keys) ? undefined : refuse(`SCAN MATCH ${JSON.stringify(text(args[match]))} reaches outside this session's scope`)
  }
  const prefixed = keys.filter(k => literalPrefix(k).prefixStar)
  if (prefixed.length !== 1 || keys.length !== 1)
    return refuse('SCAN without MATCH under a scope of several patterns: give a MATCH inside one of them')
  // SCAN cursor → SCAN cursor … MATCH <scope>: Redis filters, and a cursor's pages stay the same
  return { args: [...args.map(a => (typeof a === 'string' ? Buffer.from(a) : a)), Buffer.from('MATCH'), Buffer.from(keys[0]!)], applied: `MATCH ${keys[0]}` }
}

// ---- RediSearch ----------------------------------------------------------------------------------

function searchVerdict(name: string, args: readonly Arg[], scope: SessionScope): ScopeVerdict {
  if (FT_KEYED.has(name)) {
    const key = text(args[1])
    return matchesAny(scope.keys ?? [], args[1] ?? '') ? undefined : refuse(`key ${JSON.stringify(key)} is outside this session's scope`)
  }
  if (!FT_ALLOWED.has(name)) return refuse(`${name} is refused under a scope (it can read or index beyond one tenant)`)
  const index = text(args[1])
  if (!scope.indexes || !matchesAny(scope.indexes, args[1] ?? '')) return refuse(`index ${JSON.stringify(index)} is outside this session's scope`)
  if (!scope.tag || (name !== 'FT.SEARCH' && name !== 'FT.AGGREGATE' && name !== 'FT.EXPLAIN' && name !== 'FT.EXPLAINCLI')) return undefined
  if (args.length < 3) return refuse(`${name} without a query`)
  const query = scopedQuery(text(args[2]), scope.tag)
  if ('refuse' in query) return refuse(query.refuse)
  const out = args.map(a => (typeof a === 'string' ? Buffer.from(a) : a))
  out[2] = Buffer.from(query.query)
  return { args: out, applied: `query ${query.query}` }
}

/** A TAG value as RediSearch reads it literally: every punctuation and space character escaped. */
export function escapeTag(value: string): string {
  return value.replace(/[^\p{L}\p{N}_]/gu, '\\$&')
}

/**
 * The client's query with the scope's tag filter AND-ed on: `@f:{v} (<query>)`, or for a vector
 * query `<filter> =>[KNN …]` with the filter scoped the same way. Refused when the query's
 * parentheses, brackets, braces or quotes do not balance (a `)` could close our parenthesis).
 */
export function scopedQuery(query: string, tag: { field: string; value: string }): { query: string } | { refuse: string } {
  const filter = `@${tag.field}:{${escapeTag(tag.value)}}`
  const arrow = topLevelArrow(query)
  if (arrow === undefined) return { refuse: 'the query does not parse (unbalanced parentheses, brackets, braces or quotes); refused under a tag scope' }
  const head = arrow < 0 ? query : query.slice(0, arrow)
  const tail = arrow < 0 ? '' : query.slice(arrow)
  // after the vector clause only its attributes may follow: no more query text outside the filter
  if (tail && !/^=>\s*\[[^\]]*\]\s*(=>\s*\{[^}]*\}\s*)?$/.test(tail))
    return { refuse: 'query text after the vector clause (=>[KNN …]) is refused under a tag scope' }
  const trimmed = head.trim()
  // `*` alone is every document: the filter alone is the tenant's documents
  const scoped = trimmed === '*' || trimmed === '' ? filter : `${filter} (${head})`
  return { query: tail ? `(${scoped})${tail}` : scoped }
}

/**
 * Where the `=>[KNN …]` part starts (-1: none), or undefined when the query does not balance or
 * has more than one `=>` at the top level. Escapes (`\x`), "quoted phrases" and {tag lists} are
 * skipped as RediSearch's lexer does.
 */
function topLevelArrow(q: string): number | undefined {
  let depth = 0
  let bracket = 0
  let arrow = -1
  for (let i = 0; i < q.length; i++) {
    const c = q[i]
    if (c === '\\') {
      i++
      continue
    }
    if (c === '"') {
      const end = closing(q, i + 1, '"')
      if (end < 0) return undefined
      i = end
      continue
    }
    if (c === '{') {
      const end = closing(q, i + 1, '}')
      if (end < 0) return undefined
      i = end
      continue
    }
    if (c === '}') return undefined
    if (c === '(') depth++
    else if (c === ')') {
      if (--depth < 0) return undefined
    } else if (c === '[') bracket++
    else if (c === ']') {
      if (--bracket < 0) return undefined
    } else if (c === '=' && q[i + 1] === '>' && depth === 0 && bracket === 0) {
      // attributes (`=>{$weight: 2}`) stay where they are; a vector clause starts `=>[`
      if (/^=>\s*\[/.test(q.slice(i))) {
        if (arrow >= 0) return undefined
        arrow = i
      }
    }
  }
  if (depth !== 0 || bracket !== 0) return undefined
  return arrow
}

function closing(q: string, from: number, ch: string): number {
  for (let i = from; i < q.length; i++) {
    if (q[i] === '\\') i++
    else if (q[i] === ch) return i
  }
  return -1
}

/** `portcullis explain`: whether this command line would be refused or rewritten under `scope` */
export function explainScope(commandLine: string, scope: SessionScope): { refuse?: string; rewritten?: string; applied?: string } {
  const args = splitCommandLine(commandLine)
  if (!args || args.length === 0) return { refuse: 'scope: the command line does not parse' }
  const v = scopeVerdict(args, scope, undefined)
  if (!v) return {}
  if ('refuse' in v) return { refuse: v.refuse }
  return { rewritten: v.args.map(a => a.toString()).join(' '), applied: v.applied }
}
