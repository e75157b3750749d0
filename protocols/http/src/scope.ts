// A target's scope on the vector-database and LLM profiles, applied after the policy allowed a
// request and before it goes upstream. A refusal is 403 `scope_refused`.
//
// Qdrant (`scope: { filter: { key: tenant_id, value: '${claims.tenant}' } }`):
//   - every filter-bearing request (search, query, recommend, discover, their batch and group
//     forms, scroll, count, facet, delete / payload / vectors by filter) gets its filter wrapped:
//     `{ must: [ <scope condition>, <client filter> ] }`, so the client's `should` / `must_not`
//     live inside the AND and cannot widen it; Query API prefetches get the same;
//   - a request that names points by id (retrieve, GET a point, delete / payload / vectors by ids,
//     upsert, and ids used as query examples in recommend / discover / query) is checked first:
//     the gateway asks the upstream itself (a scroll with `has_id` and `must_not` the scope) and
//     refuses when any named id exists outside the scope. An id that does not exist is no one's;
//   - an upsert's points must carry the scoped payload value: set (`upsert: set`, default) or
//     refused (`upsert: refuse`); a different value is always refused. Payload changes may not
//     remove or change the scope key (overwrite without it, delete of it, clear);
//   - `lookup_from` / `with_lookup` (another collection, unfiltered), `points/batch`, deleting a collection and routes the
//     scope does not know are refused.
// Pinecone (`scope: { namespace: 'tenant-${claims.tenant}' }`): every data-plane request runs in
// that namespace: set when absent, refused when another one is named; describe_index_stats (every
// namespace's counts) and index / collection configuration are refused. deleteAll is thereby
// inside the namespace.
// OpenAI-compatible (`scope: { user: '${sub}' }`): scope-openai.ts.
import type { ScopedObjects, SessionScope } from '@portcullis/core'
import { openaiScope } from './scope-openai.ts'

type Json = any

export interface ScopeRequest {
  profile: string
  /** the route's operation (profiles.ts), undefined when no route matched */
  operation: string | undefined
  method: string
  /** the request path with its query string */
  path: string
  params: Readonly<Record<string, string>>
  body: unknown
}

/** Asks the upstream (through the gateway's own credential): a JSON body, a JSON answer. */
export type UpstreamCall = (method: 'GET' | 'POST', path: string, body?: unknown) => Promise<{ status: number; json: Json }>

export type ScopeOutcome =
  | { refuse: string }
  | {
      body?: unknown
      path?: string
      applied: string
      /**
       * the upstream's successful (2xx) JSON answer is read whole and given here before the client
       * sees it: to record what it created for the scope, or to answer something else instead (a
       * list filtered to the scope's own); undefined keeps the answer as it came
       */
      respond?: (json: Json) => Promise<Json | undefined>
    }
  | undefined

type UpstreamPost = (path: string, body: unknown) => Promise<{ status: number; json: Json }>

const refuse = (why: string): ScopeOutcome => ({ refuse: `scope: ${why}` })

/** Applies the session's scope to one request; may ask the upstream (id checks). */
export async function scopeHttp(req: ScopeRequest, scope: SessionScope | undefined, call: UpstreamCall, objects?: ScopedObjects): Promise<ScopeOutcome> {
  if (!scope) return undefined
  const post: UpstreamPost = (path, body) => call('POST', path, body)
  if (req.profile === 'qdrant' && scope.filter) return qdrantScope(req, scope, post)
  if (req.profile === 'pinecone' && scope.namespace !== undefined) return pineconeScope(req, scope.namespace)
  if (req.profile === 'openai' && scope.user !== undefined) return openaiScope(req, scope.user, objects, call)
  // a scope that says nothing this profile enforces (check-config refuses it): fail closed
  return refuse(`this target's scope enforces nothing for the ${req.profile} profile; refused`)
}

// ---- Qdrant --------------------------------------------------------------------------------------

const FILTERED_READS = new Set(['points.search', 'points.search.groups', 'points.query', 'points.query.groups', 'points.recommend', 'points.recommend.groups', 'points.discover', 'points.scroll', 'points.count', 'facet'])
const BATCHES = new Set(['points.search.batch', 'points.query.batch', 'points.recommend.batch', 'points.discover.batch'])
const INFO = new Set(['root', 'health', 'collections.list'])

function condition(scope: SessionScope): Json {
  return { key: scope.filter!.key, match: { value: scope.filter!.value } }
}

/** `{ must: [scope, client] }`: the client's filter whole, inside the AND */
export function wrapFilter(client: unknown, scope: SessionScope): Json {
  const cond = condition(scope)
  if (client === undefined || client === null) return { must: [cond] }
  return { must: [cond, client] }
}

/** one search-like request body with its filter (and its prefetches') scoped; ids it names as examples */
function scopeSearch(body: Json, scope: SessionScope, ids: Set<string | number>): Json | string {
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return 'the request body is not an object'
  if (body.lookup_from !== undefined) return 'lookup_from reads another collection; refused under a scope'
  if (body.with_lookup !== undefined) return 'with_lookup reads another collection unfiltered; refused under a scope'
  const out = { ...body, filter: wrapFilter(body.filter, scope) }
  for (const key of ['positive', 'negative']) for (const v of Array.isArray(body[key]) ? body[key] : []) exampleId(v, ids)
  exampleId(body.target, ids)
  for (const pair of Array.isArray(body.context) ? body.context : []) {
    exampleId(pair?.positive, ids)
    exampleId(pair?.negative, ids)
  }
  const q = body.query
  exampleId(q, ids)
  if (q && typeof q === 'object' && !Array.isArray(q)) {
    exampleId(q.nearest, ids)
    for (const key of ['positive', 'negative']) for (const v of Array.isArray(q.recommend?.[key]) ? q.recommend[key] : []) exampleId(v, ids)
    exampleId(q.discover?.target, ids)
    exampleId(q.context, ids)
  }
  if (body.prefetch !== undefined) {
    const list = Array.isArray(body.prefetch) ? body.prefetch : [body.prefetch]
    const scoped: Json[] = []
    for (const p of list) {
      const s = scopeSearch(p, scope, ids)
      if (typeof s === 'string') return s
      scoped.push(s)
    }
    out.prefetch = Array.isArray(body.prefetch) ? scoped : scoped[0]
  }
  return out
}

/** a point id used as an example (a number, or a string that is not a vector) */
function exampleId(v: unknown, ids: Set<string | number>): void {
  if (typeof v === 'number' || typeof v === 'string') ids.add(v)
}

function pointIds(list: unknown): Array<string | number> | undefined {
  if (!Array.isArray(list)) return undefined
  const out: Array<string | number> = []
  for (const v of list) {
    if (typeof v === 'number' || typeof v === 'string') out.push(v)
    else if (v && typeof v === 'object' && (typeof (v as Json).id === 'number' || typeof (v as Json).id === 'string')) out.push((v as Json).id)
    else return undefined
  }
  return out
}

/** undefined when none of `ids` exists outside the scope; else why not */
async function idsInScope(collection: string, ids: Array<string | number>, scope: SessionScope, post: UpstreamPost): Promise<string | undefined> {
  if (ids.length === 0) return undefined
  const { status, json } = await post(`/collections/${encodeURIComponent(collection)}/points/scroll`, {
    filter: { must: [{ has_id: ids }], must_not: [condition(scope)] },
    limit: 1,
    with_payload: false,
    with_vector: false,
  })
  if (status !== 200 || !Array.isArray(json?.result?.points)) return `the gateway could not check the points' scope (upstream answered ${status}); refused`
  const other = json.result.points[0]
  return other === undefined ? undefined : `point ${JSON.stringify(other.id)} is outside this session's scope`
}

async function qdrantScope(req: ScopeRequest, scope: SessionScope, post: UpstreamPost): Promise<ScopeOutcome> {
  const op = req.operation
  const collection = req.params.collection
  const body: Json = req.body ?? {}
  const key = scope.filter!.key
  const value = scope.filter!.value
  const summary = `filter ${key}=${JSON.stringify(value)}`
  if (op === undefined) return refuse(`${req.method} ${req.path.split('?')[0]} is not a route the scope knows; refused`)
  if (INFO.has(op)) return undefined
  if (collection === undefined) return refuse(`${op} is refused under a scope`)

  if (FILTERED_READS.has(op)) {
    const ids = new Set<string | number>()
    const scoped = scopeSearch(body, scope, ids)
    if (typeof scoped === 'string') return refuse(scoped)
    const why = await idsInScope(collection, [...ids], scope, post)
    return why ? refuse(why) : { body: scoped, applied: summary }
  }
  if (BATCHES.has(op)) {
    if (!Array.isArray(body.searches)) return refuse('a batch without searches')
    const ids = new Set<string | number>()
    const searches: Json[] = []
    for (const s of body.searches) {
      const scoped = scopeSearch(s, scope, ids)
      if (typeof scoped === 'string') return refuse(scoped)
      searches.push(scoped)
    }
    const why = await idsInScope(collection, [...ids], scope, post)
    return why ? refuse(why) : { body: { ...body, searches }, applied: summary }
  }
  if (op === 'collections.get') {
    // GET /collections/:c (info) passes; GET /collections/:c/points/:id names a point
    const m = /\/points\/([^/?]+)/.exec(req.path)
    if (!m) return undefined
    const raw = decodeURIComponent(m[1]!)
    const id = /^\d+$/.test(raw) ? Number(raw) : raw
    const why = await idsInScope(collection, [id], scope, post)
    return why ? refuse(why) : { applied: summary }
  }
  if (op === 'points.retrieve') {
    const ids = pointIds(body.ids)
    if (!ids) return refuse('points are retrieved by a list of ids')
    const why = await idsInScope(collection, ids, scope, post)
    return why ? refuse(why) : { applied: summary }
  }
  if (op === 'points.delete' || op === 'points.vectors' || op === 'points.payload') return selectorScope(req, body, collection, scope, post, summary)
  if (op === 'points.upsert') {
    const points: Json[] | undefined = Array.isArray(body.points) ? body.points : undefined
    if (!points) return refuse('an upsert is a list of points (the batch form is refused under a scope)')
    const out: Json[] = []
    for (const p of points) {
      if (p === null || typeof p !== 'object') return refuse('a point is not an object')
      const payload = p.payload ?? {}
      if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) return refuse('a payload is not an object')
      if (payload[key] === undefined) {
        if (scope.upsert === 'refuse') return refuse(`point ${JSON.stringify(p.id)} has no ${key}; this scope refuses points without ${key}=${JSON.stringify(value)}`)
        out.push({ ...p, payload: { ...payload, [key]: value } })
      } else if (payload[key] !== value) return refuse(`point ${JSON.stringify(p.id)} names ${key}=${JSON.stringify(payload[key])}, outside this session's scope`)
      else out.push(p)
    }
    const ids = pointIds(points)
    if (!ids) return refuse('every point needs an id')
    // an upsert of an id that exists in another scope would overwrite that tenant's point
    const why = await idsInScope(collection, ids, scope, post)
    return why ? refuse(why) : { body: { ...body, points: out }, applied: summary }
  }
  return refuse(`${op} is refused under a scope (it reaches beyond one tenant's points)`)
}

/** delete / payload / vectors: by ids (checked) or by filter (wrapped); payload edits keep the scope key */
async function selectorScope(req: ScopeRequest, body: Json, collection: string, scope: SessionScope, post: UpstreamPost, summary: string): Promise<ScopeOutcome> {
  const key = scope.filter!.key
  const value = scope.filter!.value
  const tail = req.path.split('?')[0]!.replace(/^.*\/points\//, '')
  const out = { ...body }
  if (req.operation === 'points.payload') {
    if (tail === 'payload/clear') return refuse(`clearing a payload removes ${key}; refused under a scope`)
    if (tail === 'payload/delete') {
      if (!Array.isArray(body.keys) || body.keys.includes(key)) return refuse(`deleting ${key} from a payload is refused under a scope`)
    } else if (tail === 'payload') {
      const payload = body.payload
      if (payload === null || typeof payload !== 'object' || Array.isArray(payload)) return refuse('a payload is not an object')
      if (body.key !== undefined) return refuse('a nested payload key is refused under a scope')
      if (payload[key] !== undefined && payload[key] !== value) return refuse(`${key}=${JSON.stringify(payload[key])} is outside this session's scope`)
      // PUT overwrites the whole payload: without the scope key the point would leave every scope
      if (req.method === 'PUT' && payload[key] === undefined) out.payload = { ...payload, [key]: value }
    } else return refuse(`points/${tail} is refused under a scope`)
  }
  const byIds = body.points !== undefined
  const byFilter = body.filter !== undefined
  if (byIds === byFilter) return refuse('points are chosen by ids or by a filter (one of them)')
  if (byFilter) {
    out.filter = wrapFilter(body.filter, scope)
    return { body: out, applied: summary }
  }
  const ids = pointIds(body.points)
  if (!ids) return refuse('points are named by a list of ids')
  const why = await idsInScope(collection, ids, scope, post)
  return why ? refuse(why) : { body: out, applied: summary }
}

// ---- Pinecone --------------------------------------------------------------------------------------

const PINECONE_BODY = new Set(['vectors.upsert', 'vectors.update', 'vectors.delete', 'query'])
const PINECONE_QUERY = new Set(['vectors.fetch', 'vectors.list'])

function pineconeScope(req: ScopeRequest, namespace: string): ScopeOutcome {
  const op = req.operation
  const applied = `namespace ${JSON.stringify(namespace)}`
  if (op !== undefined && PINECONE_BODY.has(op)) {
    const body: Json = req.body ?? {}
    if (body === null || typeof body !== 'object' || Array.isArray(body)) return refuse('the request body is not an object')
    if (body.namespace !== undefined && body.namespace !== namespace) return refuse(`namespace ${JSON.stringify(body.namespace)} is outside this session's scope`)
    return { body: { ...body, namespace }, applied }
  }
  if (op !== undefined && PINECONE_QUERY.has(op)) {
    const q = req.path.indexOf('?')
    const params = new URLSearchParams(q < 0 ? '' : req.path.slice(q + 1))
    const named = params.getAll('namespace')
    if (named.some(n => n !== namespace)) return refuse(`namespace ${JSON.stringify(named.find(n => n !== namespace))} is outside this session's scope`)
    params.delete('namespace')
    params.set('namespace', namespace)
    return { path: `${q < 0 ? req.path : req.path.slice(0, q)}?${params.toString()}`, applied }
  }
  if (op === 'records.upsert' || op === 'records.search')
    return req.params.namespace === namespace ? undefined : refuse(`namespace ${JSON.stringify(req.params.namespace)} is outside this session's scope`)
  if (op === 'indexes.get') return undefined
  return refuse(`${op ?? `${req.method} ${req.path.split('?')[0]}`} is refused under a namespace scope (it reaches every namespace)`)
}
