// One HTTP request → one Operation. The route (from the target's profile, or a route rule in the
// target's options) says the profile operation and class; the JSON body, when the route reads one,
// adds facts (model, maxTokens, stream, tools, topK…) and may make the class stricter.
import { hash } from 'node:crypto'
import { CLASSES, EMPTY_MASK_PLAN, type FactValue, type Operation, type OperationClass, type StatementInfo } from '@portcullis/core'
import { genericClass, matchRoute, PROFILES, ROUTES, type ProfileName, type Route } from './profiles.ts'
import { explainMcp } from './mcp/classify.ts'

export interface HttpRequestShape {
  method: string
  /** path, query string allowed (ignored for matching) */
  path: string
  /** parsed JSON body, when the route reads one */
  body?: unknown
  /** raw body bytes, hashed into the fingerprint so an approval covers exactly what was approved */
  rawBody?: Buffer
  profile?: string
  /** route rules from target.options.routes, checked before the profile's table */
  routes?: readonly Route[]
  /** findRoute()'s answer for this same request, when the caller already has it */
  found?: FoundRoute
}

export interface FoundRoute {
  route?: Route
  params: Readonly<Record<string, string>>
  profile: ProfileName
}

export function profileOf(name: unknown): ProfileName {
  return typeof name === 'string' && (PROFILES as readonly string[]).includes(name) ? (name as ProfileName) : 'generic'
}

/** route rules as written in config: { method, path, operation?, class? } */
export function routeRules(value: unknown): Route[] {
  if (!Array.isArray(value)) return []
  const out: Route[] = []
  for (const r of value) {
    if (!r || typeof r !== 'object' || typeof r.path !== 'string') continue
    const method = typeof r.method === 'string' ? r.method.toUpperCase() : Array.isArray(r.method) ? r.method.map((m: unknown) => String(m).toUpperCase()) : ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE']
    const cls = (CLASSES as readonly string[]).includes(r.class) ? (r.class as OperationClass) : 'admin'
    out.push({ method, path: r.path, operation: typeof r.operation === 'string' ? r.operation : 'route', class: cls, body: r.body === 'stream' ? 'stream' : r.body === 'json' ? 'json' : undefined })
  }
  return out
}

/**
 * The route a request takes: a route rule, the profile's route, or none (generic by method). The
 * answer is shared between requests to the same path (a client calls the same few paths again and
 * again): treat it as read-only.
 */
export function findRoute(req: Pick<HttpRequestShape, 'method' | 'path' | 'profile' | 'routes'>): FoundRoute {
  const profile = profileOf(req.profile)
  const path = canonicalPath(req.path) ?? pathOnly(req.path)
  const method = req.method.toUpperCase()
  const table = req.routes ?? NO_ROUTES
  let byPath = foundRoutes.get(table)
  if (!byPath) foundRoutes.set(table, (byPath = new Map()))
  const key = `${profile} ${method} ${path}`
  const known = byPath.get(key)
  if (known) return known
  const hit = (req.routes && matchRoute(req.routes, method, path)) || matchRoute(ROUTES[profile], method, path)
  const found: FoundRoute = hit ? { route: hit.route, params: Object.freeze(hit.params), profile } : { params: NO_PARAMS, profile }
  if (byPath.size >= MAX_CANONICAL_PATHS) byPath.clear()
  byPath.set(key, found)
  return found
}

const NO_ROUTES: readonly Route[] = []
const NO_PARAMS: Readonly<Record<string, string>> = Object.freeze({})
// per route table (target.options.routes lives as long as its config generation)
const foundRoutes = new WeakMap<readonly Route[], Map<string, FoundRoute>>()

export function pathOnly(path: string): string {
  const q = path.indexOf('?')
  return q === -1 ? path : path.slice(0, q)
}

/**
 * The path as the upstream will understand it: each segment percent-decoded. Classification runs on
 * this, so `/points/%64elete` is the delete it is. Paths that servers may read differently (dot
 * segments, empty segments, an encoded '/' or a backslash, bad escapes, not origin-form) are refused:
 * returns undefined.
 */
export function canonicalPath(raw: string): string | undefined {
  // a client calls the same few paths again and again, and each request asks up to three times
  const known = canonicalPaths.get(raw)
  if (known !== undefined) return known ?? undefined
  const path = decodePath(raw)
  if (canonicalPaths.size >= MAX_CANONICAL_PATHS) canonicalPaths.clear()
  canonicalPaths.set(raw, path ?? null)
  return path
}

const MAX_CANONICAL_PATHS = 1024
const canonicalPaths = new Map<string, string | null>()

function decodePath(raw: string): string | undefined {
  const path = pathOnly(raw)
  if (!path.startsWith('/')) return undefined
  const parts = path.slice(1).split('/')
  const out: string[] = []
  for (let i = 0; i < parts.length; i++) {
    let seg: string
    try {
      seg = decodeURIComponent(parts[i])
    } catch {
      return undefined
    }
    if (seg === '' && i < parts.length - 1) return undefined
    if (seg === '.' || seg === '..' || seg.includes('/') || seg.includes('\\')) return undefined
    out.push(seg)
  }
  return '/' + out.join('/')
}

const rank = (c: OperationClass) => CLASSES.indexOf(c)

export function classifyHttp(req: HttpRequestShape): Operation {
  const method = req.method.toUpperCase()
  const decoded = canonicalPath(req.path)
  const path = decoded ?? pathOnly(req.path)
  const { route, params, profile } = req.found ?? findRoute(req)
  let cls: OperationClass = route ? route.class : genericClass(method)
  const resources: string[] = []
  for (const name of route?.resources ?? []) if (params[name] !== undefined) resources.push(params[name])
  const facts: Record<string, FactValue> = { method, path, operation: route ? route.operation : 'unknown', profile }
  if (route?.extract && req.body !== undefined) {
    const extra = route.extract(req.body, params)
    // a body may only make the class stricter than the route's
    if (extra.class && rank(extra.class) > rank(cls)) cls = extra.class
    for (const r of extra.resources ?? []) if (!resources.includes(r)) resources.push(r)
    Object.assign(facts, extra.facts)
  }
  const statement = `${method} ${path}`
  const info: StatementInfo = { class: cls, resources, statement, facts: { ...facts } }
  if (facts.vectorSearch !== undefined || facts.embeddingExport !== undefined) {
    info.vector = {}
    if (facts.vectorSearch === true) info.vector.search = true
    if (typeof facts.topK === 'number') info.vector.topK = facts.topK
    if (facts.embeddingExport === true) info.vector.export = true
  }
  // one-shot hash: no Hash object per request
  const head = `http\0${cls}\0${statement}\0${canonical(facts)}`
  const raw = req.rawBody
  const fingerprint = hash('sha256', raw && raw.length > 0 ? Buffer.concat([Buffer.from(head + '\0'), raw]) : head, 'hex').slice(0, 32)
  const op: Operation = {
    protocol: 'http',
    class: cls,
    resources,
    statement,
    fingerprint,
    statements: [info],
    facts,
  }
  if (decoded === undefined) op.error = 'request path is ambiguous (dot or empty segments, encoded slash, bad escape)'
  return op
}

function canonical(facts: Record<string, FactValue>): string {
  return Object.keys(facts)
    .sort()
    .map(k => `${k}=${String(facts[k])}`)
    .join('&')
}

/** for `portcullis explain --protocol http --request 'METHOD /path' [--body JSON] [--profile NAME]` */
export function explainHttp(req: { method: string; path: string; body?: unknown; profile?: string }): Operation {
  let body = req.body
  if (req.profile === 'mcp') {
    if (typeof body === 'string') {
      try {
        body = JSON.parse(body)
      } catch {
        return { ...classifyHttp({ method: req.method, path: req.path }), error: 'request body is not valid JSON' }
      }
    }
    return explainMcp(req.method.toUpperCase(), pathOnly(req.path), body, EMPTY_MASK_PLAN)
  }
  if (typeof body === 'string') {
    try {
      body = JSON.parse(body)
    } catch {
      const op = classifyHttp({ method: req.method, path: req.path, profile: req.profile })
      return { ...op, error: 'request body is not valid JSON' }
    }
  }
  return classifyHttp({ method: req.method, path: req.path, body, profile: req.profile })
}
