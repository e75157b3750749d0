// A target's `scope`: what a principal may see, from its claims, enforced by the codec on every
// request. The core expands the templates once per principal (at authentication) into a
// SessionScope; each codec applies it in its own protocol (protocols/*/src/scope.ts). Patterns are
// expanded glob-quoted (a claim value is literal text in them); single values are expanded as they
// are and quoted by the codec for the place they land in (a StartupMessage parameter, a JSON value,
// a RediSearch tag).
import type { Principal } from '../types.ts'
import { expandAll, expandOne, globQuote, hasTemplate, parseTemplate } from './templates.ts'

export interface ScopeConfig {
  /** postgres: session settings the gateway sets (for Row-Level Security) and nobody may change */
  settings?: Record<string, string>
  /** postgres: DO blocks and CREATE/ALTER FUNCTION|PROCEDURE may run under the scope (default false) */
  allowCode?: boolean
  /** redis: every key a command names must match one of these globs */
  keys?: string[]
  /** redis: pub/sub channels (SUBSCRIBE, PUBLISH, PSUBSCRIBE patterns); absent: the key patterns */
  channels?: string[]
  /** redis: FT.* index names (globs) */
  indexes?: string[]
  /** redis: a TAG field AND-ed onto every FT.SEARCH / FT.AGGREGATE query: @field:{value} */
  tag?: { field: string; value: string }
  /** qdrant: a payload condition AND-ed into every filter; points by id are checked against it */
  filter?: { key: string; value: string }
  /** qdrant: an upsert without the scoped payload value gets it set (`set`, default) or is refused (`refuse`) */
  upsert?: 'set' | 'refuse'
  /** pinecone: the only namespace this principal may use */
  namespace?: string
  /** OpenAI-compatible: the `user` field of every request */
  user?: string
}

/** A scope expanded for one principal. */
export interface SessionScope {
  settings?: Record<string, string>
  allowCode: boolean
  /** glob patterns with the claim values quoted */
  keys?: string[]
  channels?: string[]
  indexes?: string[]
  tag?: { field: string; value: string }
  filter?: { key: string; value: string }
  upsert: 'set' | 'refuse'
  namespace?: string
  user?: string
  /** one line for recordings, audit and `explain`: what this session is held to */
  readonly summary: string
}

const all = (patterns: string[] | undefined, p: Principal) => patterns?.flatMap(t => expandAll(t, p, globQuote))

/** Expands a target's scope for a principal; throws TemplateError (AUTH_FAILED) on a missing claim. */
export function expandScope(config: ScopeConfig, principal: Principal): SessionScope {
  const s: Omit<SessionScope, 'summary'> = { allowCode: config.allowCode === true, upsert: config.upsert ?? 'set' }
  if (config.settings) {
    s.settings = {}
    for (const [name, value] of Object.entries(config.settings)) s.settings[name.toLowerCase()] = expandOne(value, principal)
  }
  const keys = all(config.keys, principal)
  if (keys) s.keys = keys
  const channels = all(config.channels, principal) ?? keys
  if (channels) s.channels = channels
  const indexes = all(config.indexes, principal)
  if (indexes) s.indexes = indexes
  if (config.tag) s.tag = { field: config.tag.field, value: expandOne(config.tag.value, principal) }
  if (config.filter) s.filter = { key: config.filter.key, value: expandOne(config.filter.value, principal) }
  if (config.namespace !== undefined) s.namespace = expandOne(config.namespace, principal)
  if (config.user !== undefined) s.user = expandOne(config.user, principal)
  return { ...s, summary: summarize(s) }
}

function summarize(s: Omit<SessionScope, 'summary'>): string {
  const parts: string[] = []
  if (s.settings) for (const [k, v] of Object.entries(s.settings)) parts.push(`${k}=${JSON.stringify(v)}`)
  if (s.keys) parts.push(`keys=${s.keys.join('|')}`)
  if (s.channels && s.channels !== s.keys) parts.push(`channels=${s.channels.join('|')}`)
  if (s.indexes) parts.push(`indexes=${s.indexes.join('|')}`)
  if (s.tag) parts.push(`@${s.tag.field}:{${s.tag.value}}`)
  if (s.filter) parts.push(`${s.filter.key}=${JSON.stringify(s.filter.value)}`)
  if (s.namespace !== undefined) parts.push(`namespace=${JSON.stringify(s.namespace)}`)
  if (s.user !== undefined) parts.push(`user=${JSON.stringify(s.user)}`)
  return parts.join(' ')
}

/** which scope fields each protocol (and HTTP profile) enforces */
const FIELDS: Record<string, (keyof ScopeConfig)[]> = {
  postgres: ['settings', 'allowCode'],
  redis: ['keys', 'channels', 'indexes', 'tag'],
  'http:qdrant': ['filter', 'upsert'],
  'http:pinecone': ['namespace'],
  'http:openai': ['user'],
  'http:generic': [],
}
/** the fields that make a scope enforce anything */
const ENFORCING = new Set<keyof ScopeConfig>(['settings', 'keys', 'channels', 'indexes', 'filter', 'namespace', 'user'])

/**
 * check-config: every template of a scope parses, and the scope says something the target's
 * protocol (profile) enforces: a field another protocol reads would be silently ignored, and a
 * scope that enforces nothing would let every caller see everything. [path, message] per problem.
 */
export function scopeIssues(config: ScopeConfig, target?: { protocol: string; options?: Record<string, unknown> }): Array<[string[], string]> {
  const out: Array<[string[], string]> = []
  if (target) {
    const profile = target.protocol === 'http' ? `http:${['qdrant', 'pinecone', 'openai'].includes(String(target.options?.profile)) ? String(target.options?.profile) : 'generic'}` : target.protocol
    const mine = FIELDS[profile] ?? []
    for (const k of Object.keys(config) as (keyof ScopeConfig)[])
      if (!mine.includes(k)) out.push([[k], `is not enforced on a ${profile.replace(':', ' target with profile ')}${profile.includes(':') ? '' : ' target'} (it takes ${mine.join(', ') || 'no scope'})`])
    if (!mine.some(k => ENFORCING.has(k) && config[k] !== undefined)) out.push([[], `enforces nothing on this target: give it ${mine.filter(k => ENFORCING.has(k)).join(' or ') || '(no scope is supported here)'}`])
    if (target.protocol === 'redis' && config.tag && !config.indexes) out.push([['tag'], 'needs indexes: the tag filter applies to FT.* on the scope\'s indexes'])
  }
  const check = (v: string, path: string[]) => {
    if (!hasTemplate(v)) return
    try {
      parseTemplate(v)
    } catch (err) {
      out.push([path, (err as Error).message])
    }
  }
  for (const [k, v] of Object.entries(config.settings ?? {})) {
    check(v, ['settings', k])
    // a custom setting needs a dot (`app.tenant`): a built-in one is the server's, not a scope
    if (!k.includes('.')) out.push([['settings', k], 'scope settings must be custom settings with a prefix (app.tenant): a built-in setting is not a scope'])
  }
  for (const key of ['keys', 'channels', 'indexes'] as const) config[key]?.forEach((v, i) => check(v, [key, String(i)]))
  if (config.tag) check(config.tag.value, ['tag', 'value'])
  if (config.filter) check(config.filter.value, ['filter', 'value'])
  if (config.namespace !== undefined) check(config.namespace, ['namespace'])
  if (config.user !== undefined) check(config.user, ['user'])
  return out
}

export const scopeSchema = {
  type: 'object',
  additionalProperties: false,
  properties: {
    settings: { type: 'object', additionalProperties: { type: 'string' } },
    allowCode: { type: 'boolean' },
    keys: { type: 'array', items: { type: 'string', minLength: 1 } },
    channels: { type: 'array', items: { type: 'string', minLength: 1 } },
    indexes: { type: 'array', items: { type: 'string', minLength: 1 } },
    tag: { type: 'object', additionalProperties: false, required: ['field', 'value'], properties: { field: { type: 'string', pattern: '^[A-Za-z_][A-Za-z0-9_]*$' }, value: { type: 'string' } } },
    filter: { type: 'object', additionalProperties: false, required: ['key', 'value'], properties: { key: { type: 'string', minLength: 1 }, value: { type: 'string' } } },
    upsert: { enum: ['set', 'refuse'] },
    namespace: { type: 'string' },
    user: { type: 'string' },
  },
}

/** check-config warnings: a scope the upstream cannot enforce */
export function scopeWarnings(target: { name: string; protocol: string; upstream: { user?: string }; scope?: ScopeConfig }): string[] {
  const s = target.scope
  if (!s) return []
  const out: string[] = []
  // (a field another protocol enforces is an error: scopeIssues)
  if (target.protocol === 'postgres' && s.settings) {
    const user = target.upstream.user ?? 'postgres'
    // Row-Level Security never holds a superuser (or a BYPASSRLS role); `postgres` is the usual one
    if (user === 'postgres')
      out.push(`target ${target.name}: the upstream role is '${user}', usually a superuser: Row-Level Security does not apply to superusers or BYPASSRLS roles, so scope.settings would scope nothing (use a plain role that does not own the tables, or FORCE ROW LEVEL SECURITY)`)
  }
  return out
}
