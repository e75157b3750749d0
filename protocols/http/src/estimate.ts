// Blast radius of a vector-database request, asked of the upstream with the gateway's own
// credential before anyone decides:
//   Qdrant   POST /collections/:c/points/delete with a filter → points: POST /collections/:c/points/count
//            with the same filter (and shard_key), exact: true
//   Pinecone POST /vectors/delete with deleteAll (or a filter) → vectors: POST /describe_index_stats
//            (with the filter) → the namespace's vectorCount
// A Qdrant batch holding a delete by filter is not counted: its facts are unknown (stricter reading).
import type { BlastRadius, Estimator, Operation, Session } from '@portcullis/core'
import { upstreamFor } from './upstream.ts'

export const POINTS_FACTS = ['points'] as const
export const VECTORS_FACTS = ['vectors'] as const
const MAX_REPLY_BYTES = 1 << 20

async function post(session: Session, path: string, body: unknown, signal: AbortSignal): Promise<any> {
  const target = session.target
  const upstream = upstreamFor(target)
  const headers: Record<string, string> = { 'content-type': 'application/json', accept: 'application/json' }
  const auth = target.upstream.auth
  if (auth) headers[auth.header.toLowerCase()] = auth.value.replace('{secret}', await session.secret(auth.secret))
  const res = await upstream.pool.request({ method: 'POST', path: upstream.prefix + path, headers, body: JSON.stringify(body), signal })
  let text = ''
  for await (const chunk of res.body) {
    text += chunk.toString('utf8')
    if (text.length > MAX_REPLY_BYTES) {
      res.body.destroy()
      throw new Error('estimate reply too large')
    }
  }
  if (res.statusCode !== 200) throw new Error(`upstream answered ${res.statusCode}`)
  return JSON.parse(text)
}

const count = (v: unknown) => (typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? v : undefined)

export async function qdrantCount(session: Session, collection: string, body: any, signal: AbortSignal): Promise<BlastRadius | null> {
  const ask: Record<string, unknown> = { filter: body.filter, exact: true }
  if (body.shard_key !== undefined) ask.shard_key = body.shard_key
  const r = await post(session, `/collections/${encodeURIComponent(collection)}/points/count`, ask, signal)
  const n = count(r?.result?.count)
  return n === undefined ? null : { points: n, source: 'qdrant-count' }
}

export async function pineconeCount(session: Session, body: any, signal: AbortSignal): Promise<BlastRadius | null> {
  const ns = typeof body.namespace === 'string' ? body.namespace : ''
  const r = await post(session, '/describe_index_stats', body.deleteAll === true ? {} : { filter: body.filter }, signal)
  const namespaces = r?.namespaces
  if (!namespaces || typeof namespaces !== 'object') return null
  // a namespace the index does not have holds no vectors
  const n = Object.hasOwn(namespaces, ns) ? count(namespaces[ns]?.vectorCount) : 0
  return n === undefined ? null : { vectors: n, source: 'pinecone-stats' }
}

/** the estimator of one request, or undefined when it has none */
export function httpEstimator(session: Session, op: Operation, body: unknown): Estimator | undefined {
  const operation = op.facts.operation
  if (operation !== 'points.delete' && operation !== 'points.batch' && operation !== 'vectors.delete') return undefined
  const b = body as any
  if (operation === 'points.delete') {
    if (!b || typeof b !== 'object' || b.filter === undefined || op.resources.length === 0) return undefined
    const collection = op.resources[0]!
    return { facts: POINTS_FACTS, run: signal => qdrantCount(session, collection, b, signal).catch(() => null) }
  }
  if (operation === 'points.batch') {
    const ops: any[] = Array.isArray(b?.operations) ? b.operations : []
    if (!ops.some(o => o?.delete?.filter !== undefined)) return undefined
    return { facts: POINTS_FACTS, run: async () => null }
  }
  if (!b || typeof b !== 'object' || (b.deleteAll !== true && (b.filter === undefined || b.filter === null))) return undefined
  return { facts: VECTORS_FACTS, run: signal => pineconeCount(session, b, signal).catch(() => null) }
}
