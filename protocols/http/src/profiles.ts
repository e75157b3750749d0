// API profiles as data: each profile is a route table (method + path pattern → profile operation, class,
// whether the body is JSON the gateway must read, and which facts to pull from it). A route's class may
// depend on the body (Qdrant delete by ids vs by filter), so `class` may be a small function of it.
import type { FactValue, OperationClass } from '@portcullis/core'

export type ProfileName = 'openai' | 'qdrant' | 'pinecone' | 'generic'
export const PROFILES: readonly ProfileName[] = ['openai', 'qdrant', 'pinecone', 'generic']

/** what a route's body tells the policy */
export interface RouteFacts {
  facts?: Record<string, FactValue>
  resources?: string[]
  class?: OperationClass
}

export interface Route {
  method: string | readonly string[]
  /** '/v1/files/:id' — ':name' is one path segment, a trailing '*' any rest */
  path: string
  operation: string
  class: OperationClass
  /** 'json': buffered (up to maxMessageBytes) and parsed; 'stream': passed through (uploads) */
  body?: 'json' | 'stream'
  /** facts, resources and a body-dependent class, from the parsed JSON body and path params */
  extract?: (body: any, params: Record<string, string>) => RouteFacts
  /** path params that name resources (collection, index, model) */
  resources?: readonly string[]
}

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined)
const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : undefined)

function clean(facts: Record<string, FactValue | undefined>): Record<string, FactValue> {
  const out: Record<string, FactValue> = {}
  for (const k in facts) if (facts[k] !== undefined) out[k] = facts[k] as FactValue
  return out
}

/** model, max tokens, stream and tools of an inference request */
function inference(maxKey: readonly string[]) {
  return (body: any): RouteFacts => {
    const model = str(body?.model)
    let maxTokens: number | undefined
    for (const k of maxKey) maxTokens ??= num(body?.[k])
    return {
      facts: clean({
        model,
        maxTokens,
        stream: body?.stream === true,
        tools: Array.isArray(body?.tools) ? body.tools.length : 0,
      }),
      resources: model ? [model] : [],
    }
  }
}

const modelOnly = (body: any): RouteFacts => {
  const model = str(body?.model)
  return { facts: clean({ model }), resources: model ? [model] : [] }
}

/** Qdrant search-like requests: `limit` is top-k; batches take the largest */
function qdrantSearch(body: any): RouteFacts {
  const one = (b: any) => num(b?.limit) ?? num(b?.top) ?? 10
  const topK = Array.isArray(body?.searches) ? Math.max(0, ...body.searches.map(one)) : one(body)
  return { facts: { vectorSearch: true, topK } }
}

/** size at or under which a scroll/query returning vectors is not an export */
export const EXPORT_LIMIT = 100

const openai: Route[] = [
  { method: 'POST', path: '/v1/chat/completions', operation: 'chat.completions', class: 'read', body: 'json', extract: inference(['max_completion_tokens', 'max_tokens']) },
  { method: 'GET', path: '/v1/chat/completions*', operation: 'chat.completions.get', class: 'read' },
  { method: 'DELETE', path: '/v1/chat/completions/:id', operation: 'chat.completions.delete', class: 'delete' },
  { method: 'POST', path: '/v1/completions', operation: 'completions', class: 'read', body: 'json', extract: inference(['max_tokens']) },
  { method: 'POST', path: '/v1/responses', operation: 'responses', class: 'read', body: 'json', extract: inference(['max_output_tokens']) },
  { method: 'GET', path: '/v1/responses/*', operation: 'responses.get', class: 'read' },
  { method: 'DELETE', path: '/v1/responses/:id', operation: 'responses.delete', class: 'delete' },
  { method: 'POST', path: '/v1/embeddings', operation: 'embeddings', class: 'read', body: 'json', extract: modelOnly },
  { method: 'POST', path: '/v1/moderations', operation: 'moderations', class: 'read', body: 'json', extract: modelOnly },
  { method: 'POST', path: '/v1/images/generations', operation: 'images.generate', class: 'read', body: 'json', extract: modelOnly },
  { method: 'POST', path: '/v1/images/*', operation: 'images', class: 'read', body: 'stream' },
  { method: 'POST', path: '/v1/audio/speech', operation: 'audio.speech', class: 'read', body: 'json', extract: modelOnly },
  { method: 'POST', path: '/v1/audio/*', operation: 'audio', class: 'read', body: 'stream' },
  { method: 'GET', path: '/v1/models', operation: 'models.list', class: 'read' },
  { method: 'GET', path: '/v1/models/:model', operation: 'models.get', class: 'read', resources: ['model'] },
  // deleting a fine-tuned model removes a deployed program, not data
  { method: 'DELETE', path: '/v1/models/:model', operation: 'models.delete', class: 'admin', resources: ['model'] },
  { method: 'GET', path: '/v1/files*', operation: 'files.get', class: 'read' },
  { method: 'POST', path: '/v1/files', operation: 'files.create', class: 'write', body: 'stream' },
  { method: 'DELETE', path: '/v1/files/:id', operation: 'files.delete', class: 'delete' },
  { method: 'POST', path: '/v1/uploads', operation: 'uploads.create', class: 'write', body: 'json' },
  { method: 'POST', path: '/v1/uploads/:id/parts', operation: 'uploads.parts', class: 'write', body: 'stream' },
  { method: 'POST', path: '/v1/uploads/:id/*', operation: 'uploads.update', class: 'write', body: 'json' },
  { method: 'GET', path: '/v1/batches*', operation: 'batches.get', class: 'read' },
  { method: 'POST', path: '/v1/batches', operation: 'batches.create', class: 'write', body: 'json' },
  { method: 'POST', path: '/v1/batches/:id/cancel', operation: 'batches.cancel', class: 'write', body: 'json' },
  { method: 'GET', path: '/v1/fine_tuning/*', operation: 'fine_tuning.get', class: 'read' },
  // training produces a new model: acts outside the data model
  { method: ['POST', 'DELETE'], path: '/v1/fine_tuning/*', operation: 'fine_tuning', class: 'admin', body: 'json', extract: modelOnly },
  { method: 'GET', path: '/v1/vector_stores*', operation: 'vector_stores.get', class: 'read' },
  { method: 'POST', path: '/v1/vector_stores', operation: 'vector_stores.create', class: 'schema-change', body: 'json' },
  {
    method: 'POST', path: '/v1/vector_stores/:store/search', operation: 'vector_stores.search', class: 'read', body: 'json', resources: ['store'],
    extract: b => ({ facts: { vectorSearch: true, topK: num(b?.max_num_results) ?? 10 } }),
  },
  { method: 'POST', path: '/v1/vector_stores/:store/files*', operation: 'vector_stores.files.create', class: 'write', body: 'json', resources: ['store'] },
  { method: 'POST', path: '/v1/vector_stores/:store/file_batches*', operation: 'vector_stores.file_batches', class: 'write', body: 'json', resources: ['store'] },
  { method: 'DELETE', path: '/v1/vector_stores/:store/files/:file', operation: 'vector_stores.files.delete', class: 'delete', resources: ['store'] },
  { method: 'POST', path: '/v1/vector_stores/:store', operation: 'vector_stores.update', class: 'schema-change', body: 'json', resources: ['store'] },
  { method: 'DELETE', path: '/v1/vector_stores/:store', operation: 'vector_stores.delete', class: 'schema-change', resources: ['store'] },
]

const qdrant: Route[] = [
  { method: 'GET', path: '/', operation: 'root', class: 'read' },
  { method: 'GET', path: '/healthz', operation: 'health', class: 'read' },
  { method: 'GET', path: '/collections', operation: 'collections.list', class: 'read' },
  { method: 'POST', path: '/collections/aliases', operation: 'collections.aliases', class: 'schema-change', body: 'json' },
  { method: 'GET', path: '/collections/:collection*', operation: 'collections.get', class: 'read', resources: ['collection'] },
  { method: 'PUT', path: '/collections/:collection', operation: 'collections.create', class: 'schema-change', body: 'json', resources: ['collection'] },
  { method: 'PATCH', path: '/collections/:collection', operation: 'collections.update', class: 'schema-change', body: 'json', resources: ['collection'] },
  { method: 'DELETE', path: '/collections/:collection', operation: 'collections.delete', class: 'schema-change', resources: ['collection'] },
  { method: ['PUT', 'DELETE'], path: '/collections/:collection/index*', operation: 'collections.index', class: 'schema-change', body: 'json', resources: ['collection'] },
  { method: 'PUT', path: '/collections/:collection/points', operation: 'points.upsert', class: 'write', body: 'json', resources: ['collection'], extract: b => ({ facts: { points: Array.isArray(b?.points) ? b.points.length : 0 } }) },
  { method: 'POST', path: '/collections/:collection/points/batch', operation: 'points.batch', class: 'write', body: 'json', resources: ['collection'], extract: b => qdrantBatch(b) },
  {
    method: 'POST', path: '/collections/:collection/points/delete', operation: 'points.delete', class: 'delete', body: 'json', resources: ['collection'],
    // anything but a plain list of ids (a filter, both, an unknown shape) is the strict reading
    extract: (b): RouteFacts => (Array.isArray(b?.points) && b?.filter === undefined ? { facts: { points: b.points.length } } : { class: 'bulk-delete', facts: { filter: true } }),
  },
  { method: ['POST', 'PUT'], path: '/collections/:collection/points/payload*', operation: 'points.payload', class: 'write', body: 'json', resources: ['collection'] },
  { method: ['POST', 'PUT'], path: '/collections/:collection/points/vectors*', operation: 'points.vectors', class: 'write', body: 'json', resources: ['collection'] },
  ...['search', 'search/batch', 'search/groups', 'query', 'query/batch', 'query/groups', 'recommend', 'recommend/batch', 'recommend/groups', 'discover', 'discover/batch'].map(
    (op): Route => ({ method: 'POST', path: `/collections/:collection/points/${op}`, operation: `points.${op.replace('/', '.')}`, class: 'read', body: 'json', resources: ['collection'], extract: qdrantSearch }),
  ),
  {
    method: 'POST', path: '/collections/:collection/points/scroll', operation: 'points.scroll', class: 'read', body: 'json', resources: ['collection'],
    extract: b => {
      const limit = num(b?.limit)
      return { facts: clean({ limit, embeddingExport: limit === undefined || limit > EXPORT_LIMIT }) }
    },
  },
  { method: 'POST', path: '/collections/:collection/points/count', operation: 'points.count', class: 'read', body: 'json', resources: ['collection'] },
  { method: 'POST', path: '/collections/:collection/facet', operation: 'facet', class: 'read', body: 'json', resources: ['collection'] },
  { method: 'POST', path: '/collections/:collection/points', operation: 'points.retrieve', class: 'read', body: 'json', resources: ['collection'] },
  // snapshots copy whole collections off the server; cluster and telemetry reach outside the data model
  { method: ['GET', 'POST', 'PUT', 'DELETE'], path: '/collections/:collection/snapshots*', operation: 'snapshots', class: 'admin', resources: ['collection'] },
  { method: ['GET', 'POST', 'PUT', 'DELETE'], path: '/snapshots*', operation: 'snapshots', class: 'admin' },
  { method: ['GET', 'POST', 'PUT', 'DELETE', 'PATCH'], path: '/cluster*', operation: 'cluster', class: 'admin' },
  { method: ['GET', 'POST'], path: '/telemetry', operation: 'telemetry', class: 'admin' },
  { method: ['GET', 'POST'], path: '/locks', operation: 'locks', class: 'admin' },
]

function qdrantBatch(body: any): RouteFacts {
  const ops: any[] = Array.isArray(body?.operations) ? body.operations : []
  let cls: OperationClass = 'write'
  for (const op of ops) {
    if (op?.delete?.filter || op?.delete_payload?.filter || op?.clear_payload?.filter) cls = 'bulk-delete'
    else if (op?.delete && cls === 'write') cls = 'delete'
  }
  return { class: cls, facts: { operations: ops.length } }
}

const pinecone: Route[] = [
  { method: 'POST', path: '/vectors/upsert', operation: 'vectors.upsert', class: 'write', body: 'json', extract: b => pineconeNs(b, { vectors: Array.isArray(b?.vectors) ? b.vectors.length : 0 }) },
  { method: 'POST', path: '/vectors/update', operation: 'vectors.update', class: 'write', body: 'json', extract: b => pineconeNs(b, {}) },
  {
    method: 'POST', path: '/vectors/delete', operation: 'vectors.delete', class: 'delete', body: 'json',
    extract: b => {
      const r = pineconeNs(b, {})
      if (b?.deleteAll === true || (b?.filter && typeof b.filter === 'object')) r.class = 'bulk-delete'
      else if (!Array.isArray(b?.ids)) r.class = 'bulk-delete' // unknown shape: the strict reading
      return r
    },
  },
  {
    method: 'POST', path: '/query', operation: 'query', class: 'read', body: 'json',
    extract: b => {
      const topK = num(b?.topK) ?? 10
      return pineconeNs(b, { vectorSearch: true, topK, embeddingExport: b?.includeValues === true && topK > EXPORT_LIMIT })
    },
  },
  { method: 'GET', path: '/vectors/fetch', operation: 'vectors.fetch', class: 'read' },
  { method: 'GET', path: '/vectors/list', operation: 'vectors.list', class: 'read' },
  { method: ['GET', 'POST'], path: '/describe_index_stats', operation: 'describe_index_stats', class: 'read', body: 'json' },
  { method: 'POST', path: '/records/namespaces/:namespace/upsert', operation: 'records.upsert', class: 'write', body: 'stream', resources: ['namespace'] },
  { method: 'POST', path: '/records/namespaces/:namespace/search', operation: 'records.search', class: 'read', body: 'json', resources: ['namespace'], extract: b => ({ facts: { vectorSearch: true, topK: num(b?.query?.top_k) ?? 10 } }) },
  { method: 'GET', path: '/indexes*', operation: 'indexes.get', class: 'read' },
  { method: ['POST', 'PATCH'], path: '/indexes*', operation: 'indexes.configure', class: 'schema-change', body: 'json' },
  { method: 'DELETE', path: '/indexes/:index', operation: 'indexes.delete', class: 'schema-change', resources: ['index'] },
  { method: 'GET', path: '/collections*', operation: 'collections.get', class: 'read' },
  { method: ['POST', 'DELETE'], path: '/collections*', operation: 'collections.configure', class: 'schema-change', body: 'json' },
]

function pineconeNs(body: any, facts: Record<string, FactValue | undefined>): RouteFacts {
  const ns = str(body?.namespace)
  return { facts: clean(facts), resources: ns ? [ns] : [] }
}

export const ROUTES: Record<ProfileName, readonly Route[]> = { openai, qdrant, pinecone, generic: [] }

/** generic: GET/HEAD read, POST/PUT/PATCH write, DELETE delete; anything else (CONNECT, TRACE…) admin */
export function genericClass(method: string): OperationClass {
  switch (method) {
    case 'GET':
    case 'HEAD':
    case 'OPTIONS':
      return 'read'
    case 'POST':
    case 'PUT':
    case 'PATCH':
      return 'write'
    case 'DELETE':
      return 'delete'
    default:
      return 'admin'
  }
}

interface Compiled {
  route: Route
  methods: ReadonlySet<string>
  re: RegExp
  names: string[]
}

const compiledCache = new WeakMap<readonly Route[], Compiled[]>()

function compile(routes: readonly Route[]): Compiled[] {
  let c = compiledCache.get(routes)
  if (c) return c
  c = routes.map(route => {
    const names: string[] = []
    let src = ''
    for (const part of route.path.split(/(:[a-zA-Z_]+|\*)/)) {
      if (part === '*') src += src.endsWith('/') ? '.*' : '(?:/.*)?'
      else if (part.startsWith(':')) {
        names.push(part.slice(1))
        src += '([^/]+)'
      } else src += part.replace(/[.+?^${}()|[\]\\]/g, '\\$&')
    }
    const methods = new Set(typeof route.method === 'string' ? [route.method] : route.method)
    return { route, methods, re: new RegExp(`^${src}/?$`), names }
  })
  compiledCache.set(routes, c)
  return c
}

export function matchRoute(routes: readonly Route[], method: string, path: string): { route: Route; params: Record<string, string> } | undefined {
  for (const c of compile(routes)) {
    if (!c.methods.has(method) && !(method === 'HEAD' && c.methods.has('GET'))) continue
    const m = c.re.exec(path)
    if (!m) continue
    // segments arrive percent-decoded (canonicalPath)
    const params: Record<string, string> = {}
    c.names.forEach((n, i) => (params[n] = m[i + 1]))
    return { route: c.route, params }
  }
  return undefined
}
