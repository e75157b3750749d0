// Which commands may run under a mask plan, decided before anything goes upstream. mask.ts masks
// the replies whose shape it knows; a command that would hand back masked data in a shape it does
// not know (DUMP of a masked key, LCS, a script, HVALS without field names, an FT.AGGREGATE APPLY
// over a masked field…) is refused here, so that nothing masked leaves unmasked (fail closed).
import type { MaskMethod, MaskPlan } from '@portcullis/core'
import { BUILTIN_COMMANDS, keyPositions, resolveCommand, specPositions, type CommandTable, type KeySpec, type Resolved } from './commands.ts'

/** replies mask.ts masks by key rule: the keys' data comes back only through these */
export const KEY_MASKED = new Set([
  // one key's value(s), every leaf
  'GET', 'GETEX', 'GETDEL', 'GETSET', 'GETRANGE', 'SUBSTR', 'SET', 'LINDEX', 'LPOP', 'RPOP', 'LRANGE', 'SMEMBERS',
  'SRANDMEMBER', 'SPOP', 'HVALS', 'HKEYS', 'HRANDFIELD', 'ZRANGE', 'ZRANGEBYSCORE', 'ZRANGEBYLEX', 'ZREVRANGE',
  'ZREVRANGEBYSCORE', 'ZREVRANGEBYLEX', 'ZRANDMEMBER', 'ZPOPMIN', 'ZPOPMAX', 'ZSCORE', 'ZMSCORE', 'INCR', 'INCRBY',
  'INCRBYFLOAT', 'DECR', 'DECRBY', 'HINCRBY', 'HINCRBYFLOAT', 'ZINCRBY', 'LMOVE', 'RPOPLPUSH', 'BLMOVE', 'BRPOPLPUSH',
  'GEOPOS', 'GEODIST', 'GEOHASH', 'GEOSEARCH', 'GEORADIUS', 'GEORADIUSBYMEMBER', 'GEORADIUS_RO', 'GEORADIUSBYMEMBER_RO',
  'SORT', 'SORT_RO', 'XCLAIM',
  'XAUTOCLAIM', 'VSIM', 'VEMB', 'VRANDMEMBER', 'VLINKS', 'VGETATTR',
  // several keys' members mixed: every leaf, by the strictest masked key
  'SUNION', 'SINTER', 'SDIFF', 'ZUNION', 'ZINTER', 'ZDIFF',
  // by position or by the key the reply names
  'MGET', 'HGET', 'HMGET', 'HGETALL', 'HGETDEL', 'HGETEX', 'HSCAN', 'SSCAN', 'ZSCAN', 'XRANGE', 'XREVRANGE', 'XREAD',
  'XREADGROUP', 'BLPOP', 'BRPOP', 'LMPOP', 'BLMPOP', 'ZMPOP', 'BZMPOP', 'BZPOPMIN', 'BZPOPMAX',
])

// use a masked key's data but hand none of it back (TTL's key-spec says "access": it reads the
// expiry); the copies among them are checked above
const KEY_HARMLESS = new Set(['TTL', 'PTTL', 'EXPIRETIME', 'PEXPIRETIME', 'RENAME', 'RENAMENX', 'COPY', 'MOVE', 'SMOVE',
  'SDIFFSTORE', 'SINTERSTORE', 'SUNIONSTORE', 'ZDIFFSTORE', 'ZINTERSTORE', 'ZUNIONSTORE', 'ZRANGESTORE', 'GEOSEARCHSTORE',
  'XINFO GROUPS', 'XINFO CONSUMERS', 'MEMORY USAGE'])

const SCRIPTS = new Set(['EVAL', 'EVALSHA', 'EVAL_RO', 'EVALSHA_RO', 'FCALL', 'FCALL_RO'])

const str = (b: Buffer | undefined): string => (b ? b.toString('utf8') : '')
const up = (b: Buffer | undefined): string => str(b).toUpperCase()

/** may the plan hold key / field rules? A plan that does not say is assumed to */
const keyRules = (p: MaskPlan): boolean => p.hasKeyRules !== false
const fieldRules = (p: MaskPlan): boolean => p.hasFieldRules !== false

/**
 * Why this command cannot run under this mask plan, or undefined when its reply can be masked.
 * `name` is the upper-case command name; keys are those the command's metadata names.
 */
export function maskRefusal(name: string, args: Buffer[], keys: readonly string[], plan: MaskPlan, table: CommandTable | undefined): string | undefined {
  if (plan.empty) return undefined
  if (SCRIPTS.has(name) && (keyRules(plan) || fieldRules(plan))) {
    return `${name} under a mask plan: a script can return any key's data in any shape, so it cannot be masked`
  }
  if (name.startsWith('FT.')) return searchRefusal(name, args, plan)
  if (name === 'SORT' || name === 'SORT_RO') {
    for (let i = 2; i + 1 < args.length; i++) {
      const word = up(args[i])
      if (word === 'STORE') {
        // SORT's key-specs cannot say where STORE writes
        const m = plan.forKey(str(args[1]))
        if (m !== undefined && plan.forKey(str(args[i + 1])) !== m) return `SORT would copy masked key ${str(args[1])} into ${str(args[i + 1])}, which is not masked the same way`
      }
      if (word !== 'GET') continue
      const pattern = str(args[++i])
      if (pattern === '#') continue
      if (keyRules(plan) || (fieldRules(plan) && pattern.includes('->'))) return `${name} … GET ${pattern} under a mask plan: values of other keys cannot be masked`
    }
  }
  if (fieldRules(plan)) {
    if (name === 'HVALS') return 'HVALS returns hash values without their field names, so field masking cannot apply: use HGETALL or HMGET'
    if (name === 'DUMP') return 'DUMP returns a serialized value that cannot be masked'
    if (name === 'XINFO' && up(args[1]) === 'STREAM') return 'XINFO STREAM returns stream entries that cannot be masked'
    if (name.startsWith('JSON.') && !name.startsWith('JSON.SET') && !name.startsWith('JSON.DEL')) return `${name} returns JSON documents that field masking does not read`
    if (name === 'SLOWLOG' || (name === 'DEBUG' && up(args[1]) !== 'PROTOCOL')) return `${name} under a mask plan: it shows other commands' values`
  }
  if (!keyRules(plan)) return undefined
  if (name === 'SLOWLOG' || (name === 'DEBUG' && up(args[1]) !== 'PROTOCOL')) return `${name} under a mask plan: it shows other commands' values`
  let masked: string | undefined
  for (const k of keys) if (plan.forKey(k) !== undefined) { masked = k; break }
  if (masked === undefined) return undefined
  const res = resolvedOf(table ?? BUILTIN_COMMANDS, name, args)
  const meta = res.meta
  // Redis's key-specs say whether a command hands back or uses the data of a key ("access") and
  // which keys it writes. Data read from a masked key must not land in a key masked otherwise
  // (COPY, RENAME, LMOVE, SUNIONSTORE, SORT … STORE): a plain GET would then show it.
  const specs = meta?.keySpecs
  if (meta && specs) {
    for (const spec of specs) {
      if (!spec[0].includes('access')) continue
      for (const i of positionsOf(spec, args)) {
        const m = plan.forKey(str(args[i]))
        if (m === undefined) continue
        for (const w of specs) {
          if (!w[0].some(f => f === 'OW' || f === 'RW' || f === 'insert' || f === 'update')) continue
          for (const j of positionsOf(w, args)) {
            if (j !== i && plan.forKey(str(args[j])) !== m) return `${res.name} would copy masked key ${str(args[i])} into ${str(args[j])}, which is not masked the same way`
          }
        }
      }
    }
  }
  if (KEY_MASKED.has(name) || KEY_HARMLESS.has(res.name)) return undefined
  // without key-specs (a module command) a command is taken to hand back its keys' data
  const access = specs === undefined || specs.some(([flags]) => flags.includes('access'))
  if (!access) return undefined
  return `key ${masked} is masked and the reply of ${res.name} cannot be masked`
}

// (a function of its own, not a closure in maskRefusal: the build keeps function names, and a
// named closure made per call cost a defineProperty of its name per masked command)
function positionsOf(spec: KeySpec, args: Buffer[]): number[] {
  const out: number[] = []
  specPositions(spec, args, out)
  return out
}

// resolveCommand by the upper-case name the serve loop has, for the commands it resolves without
// their arguments (no subcommands): resolveCommand decodes, lower-cases and upper-cases the name
// and builds its answer per call, ~1 µs of every command under a key rule. Only a name of the
// frame's own length: a Latin-1 byte whose upper case is longer (ß → SS) must not pass for another
// command's name ("\xdfcan" is not SSCAN), and every other Latin-1 letter's upper case is not ASCII.
const resolvedByName = new WeakMap<CommandTable, Map<string, Resolved>>()
export function resolvedOf(table: CommandTable, name: string, args: Buffer[]): Resolved {
  if (args[0] === undefined || args[0].length !== name.length) return resolveCommand(table, args)
  let byName = resolvedByName.get(table)
  if (byName === undefined) resolvedByName.set(table, (byName = new Map()))
  let res = byName.get(name)
  if (res === undefined) {
    res = resolveCommand(table, args)
    // a table knows a bounded number of names; an unknown one is not kept
    if (res.meta === undefined || res.meta.sub !== undefined || res.name !== name) return res
    byName.set(name, res)
  }
  return res
}

/** FT.*: the masked fields must come back under their own names, or the command is refused */
function searchRefusal(name: string, args: Buffer[], plan: MaskPlan): string | undefined {
  if (name === 'FT.PROFILE') return 'FT.PROFILE under a mask plan: its reply is not masked; run the query without it'
  if (name === 'FT.AGGREGATE' && keyRules(plan)) return 'FT.AGGREGATE under key masking: its rows do not say which keys they come from'
  if (name === 'FT.SEARCH' || name === 'FT.AGGREGATE') {
    const masked = (f: string): boolean => plan.forField(f.replace(/^@/, '')) !== undefined
    for (let i = 3; i < args.length; i++) {
      const a = up(args[i])
      if (a === 'APPLY' || a === 'FILTER') {
        // an expression over a masked field can return its value under another name
        const expr = str(args[i + 1])
        for (const m of expr.matchAll(/@([A-Za-z0-9_:.$-]+)/g)) if (a === 'APPLY' && masked(m[1]!)) return `${name} APPLY over masked field ${m[1]} cannot be masked`
        i++
      } else if (a === 'REDUCE') {
        const fn = up(args[i + 1])
        const n = Number(str(args[i + 2]))
        if (fn !== 'COUNT' && fn !== 'COUNT_DISTINCT' && fn !== 'COUNT_DISTINCTISH') {
          for (let j = i + 3; j < i + 3 + n && j < args.length; j++) if (masked(str(args[j]))) return `${name} REDUCE ${fn} over masked field ${str(args[j])} cannot be masked`
        }
      } else if (a === 'WITHSORTKEYS') {
        const by = args.findIndex((x, j) => j > 2 && up(x) === 'SORTBY')
        if (by < 0 || masked(str(args[by + 1]))) return `${name} WITHSORTKEYS returns the values of the sort field, which is masked`
      }
    }
  }
  return undefined
}

/** aliases that carry a masked field under another name: FT.SEARCH RETURN … AS, FT.AGGREGATE LOAD … AS */
export function searchAliases(name: string, args: Buffer[], plan: MaskPlan): Map<string, MaskMethod> | undefined {
  if (name !== 'FT.SEARCH' && name !== 'FT.AGGREGATE') return undefined
  let out: Map<string, MaskMethod> | undefined
  for (let i = 3; i < args.length; i++) {
    const a = up(args[i])
    if (a !== 'RETURN' && a !== 'LOAD' && a !== 'GROUPBY') continue
    const n = Number(str(args[i + 1]))
    if (!Number.isInteger(n) || n < 0) continue
    const end = Math.min(args.length, i + 2 + n)
    for (let j = i + 2; j < end; j++) {
      const field = str(args[j]).replace(/^@/, '').replace(/^\$\.?/, '')
      const m = plan.forField(field)
      if (up(args[j + 1]) === 'AS' && j + 2 < end) {
        if (m) (out ??= new Map()).set(str(args[j + 2]), m)
        j += 2
      }
    }
    i = end - 1
  }
  return out
}

/** the keys of a command by its metadata (for replies that mix several keys' members) */
export function commandKeys(args: Buffer[], table: CommandTable | undefined): string[] {
  const meta = resolveCommand(table ?? BUILTIN_COMMANDS, args).meta
  return meta ? keyPositions(meta, args).map(i => str(args[i])) : []
}
