// Redis's own command metadata (COMMAND INFO/DOCS of redis-server 7, checked in as commands.json;
// regenerate with scripts/generate-commands.ts), overlaid per target with what the upstream itself
// reports, and the key positions that metadata describes.
import { createRequire } from 'node:module'

/** [flags, beginSearch, findKeys] — see scripts/generate-commands.ts */
export type KeySpec = [string[], ['index', number] | ['keyword', string, number] | ['unknown'], ['range', number, number, number] | ['keynum', number, number, number] | ['unknown']]

export interface CommandMeta {
  arity: number
  flags: string[]
  acl: string[]
  group?: string
  first: number
  last: number
  step: number
  keySpecs?: KeySpec[]
  sub?: Record<string, CommandMeta>
}

export type CommandTable = Map<string, CommandMeta>

const require = createRequire(import.meta.url)
const builtin = require('./commands.json') as { source: string; commands: Record<string, CommandMeta> }

export const BUILTIN_COMMANDS: CommandTable = new Map(Object.entries(builtin.commands))
export const BUILTIN_SOURCE = builtin.source

export interface Resolved {
  /** upper-case name, with the subcommand for container commands: 'GET', 'CONFIG SET' */
  name: string
  base: string
  sub?: string
  meta?: CommandMeta
}

/** finds a command (and its subcommand) in a table; args[0] is the command name */
export function resolveCommand(table: CommandTable, args: readonly (Buffer | string)[]): Resolved {
  const base = String(args[0] ?? '').toLowerCase()
  const meta = table.get(base) ?? BUILTIN_COMMANDS.get(base)
  if (meta?.sub && args.length > 1) {
    const sub = String(args[1]).toLowerCase()
    const subMeta = meta.sub[sub]
    if (subMeta) return { name: `${base} ${sub}`.toUpperCase(), base, sub, meta: subMeta }
  }
  return { name: base.toUpperCase(), base, meta }
}

/** the key arguments of a command, by its key-specs (falling back to first/last/step) */
export function keyPositions(meta: CommandMeta, args: readonly (Buffer | string)[]): number[] {
  const argc = args.length
  if (meta.keySpecs?.length) {
    const out: number[] = []
    for (const spec of meta.keySpecs) specPositions(spec, args, out)
    return meta.keySpecs.length === 1 ? out : [...new Set(out)].sort((a, b) => a - b)
  }
  const out: number[] = []
  if (meta.first > 0) {
    const last = meta.last < 0 ? argc + meta.last : meta.last
    for (let i = meta.first; i <= last && i < argc; i += Math.max(meta.step, 1)) out.push(i)
  }
  return out
}

/** the key arguments one key-spec names, in order, pushed onto `out` */
export function specPositions(spec: KeySpec, args: readonly (Buffer | string)[], out: number[]): void {
  const argc = args.length
  const [, begin, find] = spec
  let first: number
  if (begin[0] === 'index') first = begin[1]
  else if (begin[0] === 'keyword') {
    const kw = begin[1].toLowerCase()
    first = -1
    const startfrom = begin[2]
    if (startfrom >= 0) {
      for (let i = startfrom; i < argc; i++) if (String(args[i]).toLowerCase() === kw) { first = i + 1; break }
    } else {
      for (let i = argc + startfrom; i > 0; i--) if (String(args[i]).toLowerCase() === kw) { first = i + 1; break }
    }
    if (first < 0) return
  } else return
  let last: number
  let step: number
  if (find[0] === 'range') {
    const [, lastkey, keystep, limit] = find
    step = keystep
    if (lastkey >= 0) last = first + lastkey
    else if (!limit) last = argc + lastkey
    else last = first + Math.floor((argc - first) / limit) + lastkey
  } else if (find[0] === 'keynum') {
    const [, keynumidx, firstkey, keystep] = find
    const numkeys = Number(String(args[first + keynumidx] ?? ''))
    if (!Number.isInteger(numkeys) || numkeys <= 0) return
    step = keystep
    first = first + firstkey
    last = first + (numkeys - 1) * step
  } else return
  for (let i = first; i <= last && i < argc; i += Math.max(step, 1)) out.push(i)
}

/**
 * The upstream's own COMMAND reply as a table of what the built-in one lacks (module commands, newer
 * commands), so that they are classified by their real flags and key positions.
 */
export function tableFromCommandReply(infos: unknown[]): CommandTable {
  const table: CommandTable = new Map()
  for (const info of infos) {
    if (!Array.isArray(info)) continue
    const [name, arity, flags, first, last, step, acl] = info as [unknown, unknown, unknown[], unknown, unknown, unknown, unknown[]]
    const base = String(name).toLowerCase()
    if (BUILTIN_COMMANDS.has(base)) continue
    table.set(base, {
      arity: Number(arity),
      flags: (flags ?? []).map(String),
      acl: (acl ?? []).map(a => String(a).replace(/^@/, '')),
      first: Number(first),
      last: Number(last),
      step: Number(step),
    })
  }
  return table
}
