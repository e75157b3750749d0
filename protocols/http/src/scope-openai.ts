// The scope on the OpenAI-compatible profile (`scope: { user: '${sub}' }`).
//
// Inference requests get `user` set from the identity. Stored objects belong to the upstream
// account, which every caller of the gateway shares, so under a scope they are usable only by the
// scope that created them through the gateway; the control store keeps who (Session.objects):
//   - files, uploads, vector stores and batches: a create is read back and its id recorded as the
//     scope's (a batch's output and error files too, when the upstream names them); every request
//     naming an id — in the path (GET, DELETE, content, a vector store's search, files, batches)
//     or in the body (`file_ids`, `file_id`, `files[].file_id`, `input_file_id`) — is refused
//     unless the scope owns every id it names. A foreign id and one that does not exist are
//     refused alike: the answer does not tell whether another tenant has it;
//   - lists (`GET /v1/files`, `/v1/vector_stores`, `/v1/batches`) are filtered to the scope's own
//     ids, `first_id` / `last_id` rewritten to them (another tenant's ids never show); a page
//     filtered down to nothing while the upstream has more is followed by the gateway (up to
//     FOLLOW_PAGES pages), since SDKs end their auto-pagination at an empty page;
//   - a successful delete forgets the id.
// Fine-tuning jobs and stored chat completions / responses are not tracked: refused under a scope.
import type { ScopedObjects } from '@portcullis/core'
import { httpError } from './errors.ts'
import type { ScopeOutcome, ScopeRequest, UpstreamCall } from './scope.ts'

type Json = any

const INFERENCE = new Set(['chat.completions', 'completions', 'responses', 'embeddings', 'moderations', 'images.generate', 'audio.speech'])
const UNTRACKED = /^(fine_tuning|chat\.completions\.(get|delete)|responses\.(get|delete))(\.|$)/
const STORED = new Set(['files', 'uploads', 'batches', 'vector_stores'])
/** upstream pages the gateway reads itself when a filtered page comes out empty */
export const FOLLOW_PAGES = 10

const KIND: Record<string, string> = { files: 'file', uploads: 'upload', batches: 'batch', vector_stores: 'vector_store' }

const refuse = (why: string): ScopeOutcome => ({ refuse: `scope: ${why}` })

export async function openaiScope(req: ScopeRequest, user: string, objects: ScopedObjects | undefined, call: UpstreamCall): Promise<ScopeOutcome> {
  const op = req.operation
  if (op !== undefined && UNTRACKED.test(op))
    return refuse(`${op}: fine-tuning jobs and stored completions / responses are shared by every caller of the upstream account and not tracked per scope; refused under a scope`)
  const q = req.path.indexOf('?')
  const raw = (q < 0 ? req.path : req.path.slice(0, q)).split('/').slice(1)
  let segments: string[]
  try {
    segments = raw.map(decodeURIComponent)
  } catch {
    return refuse('the path does not decode; refused under a scope')
  }
  // an upstream (or a proxy before it) may normalize `/v1/./files/x`, `/v1//files/x` or
  // `/V1/Files/x` into a stored-object route the scope would not have recognized: only the
  // canonical spelling passes
  if (segments.some((s, i) => s === '.' || s === '..' || (s === '' && i < segments.length - 1) || /[\/\\]/.test(s) || (STORED.has(s.toLowerCase()) && s !== s.toLowerCase())) || segments[0]?.toLowerCase() === 'v1' && segments[0] !== 'v1')
    return refuse('a path that is not in its canonical form is refused under a scope')
  if (segments.at(-1) === '') segments.pop()
  if (segments[0] === 'v1' && STORED.has(segments[1]!)) {
    if (!objects) return refuse('stored objects need the control store to know their owner; refused')
    return stored(req, segments.slice(1), objects, call)
  }
  if (op === undefined || !INFERENCE.has(op)) return undefined
  const body: Json = req.body
  if (body === null || typeof body !== 'object' || Array.isArray(body)) return undefined
  return { body: { ...body, user }, applied: `user ${JSON.stringify(user)}` }
}

/** one stored-object request: [collection, id?, ...rest] */
async function stored(req: ScopeRequest, seg: string[], objects: ScopedObjects, call: UpstreamCall): Promise<ScopeOutcome> {
  const [collection, id, ...rest] = seg as [string, string | undefined, ...string[]]
  const kind = KIND[collection]!
  const body: Json = req.body ?? {}
  const m = req.method
  const needed: Array<[string, unknown[]]> = []
  let respond: ((json: Json) => Promise<Json | undefined>) | undefined

  if (id === undefined) {
    if (m === 'GET') return { applied: `${collection} listed: the scope's own only`, respond: json => filterList(req, json, kind, objects, call) }
    if (m !== 'POST') return refuse(`${m} /v1/${collection} is refused under a scope`)
    // a create: what it names must be the scope's, what it makes becomes the scope's
    if (collection === 'vector_stores') needed.push(['file', list(body.file_ids)])
    if (collection === 'batches') needed.push(['file', [body.input_file_id]])
    respond = async json => {
      await objects.put(kind, [idOf(json)])
      if (collection === 'batches') await trackBatchFiles(json, objects)
      return undefined
    }
  } else {
    needed.push([kind, [id]])
    if (collection === 'files' && !(rest.length === 0 || (rest.length === 1 && rest[0] === 'content' && m === 'GET')))
      return refuse(`/v1/files/{id}/${rest.join('/')} is refused under a scope`)
    if (collection === 'uploads' && !(m === 'POST' && rest.length === 1 && ['parts', 'complete', 'cancel'].includes(rest[0]!)))
      return refuse(`${m} /v1/uploads/{id}/${rest.join('/')} is refused under a scope`)
    if (collection === 'uploads' && rest[0] === 'complete') {
      respond = async json => {
        if (json?.file?.id !== undefined) await objects.put('file', [idOf(json.file)])
        return undefined
      }
    }
    if (collection === 'batches') {
      if (!(rest.length === 0 ? m === 'GET' : rest.length === 1 && rest[0] === 'cancel' && m === 'POST')) return refuse(`${m} /v1/batches/{id}/${rest.join('/')} is refused under a scope`)
      // the batch's results are files the upstream made for it: the batch's owner's
      respond = async json => (await trackBatchFiles(json, objects), undefined)
    }
    if (collection === 'vector_stores') {
      if (rest[0] === 'files' && rest[1] !== undefined) needed.push(['file', [rest[1]]])
      if (rest[0] === 'files' && rest.length === 1 && m === 'POST') needed.push(['file', [body.file_id]])
      if (rest[0] === 'file_batches' && rest.length === 1 && m === 'POST')
        needed.push(['file', [...list(body.file_ids), ...list(body.files).map((f: Json) => (f && typeof f === 'object' ? f.file_id : f))]])
    }
    if (m === 'DELETE' && rest.length === 0 && collection !== 'uploads') {
      respond = async json => {
        if (json?.deleted === true) await objects.drop(kind, [id])
        return undefined
      }
    }
  }

  for (const [k, ids] of needed) {
    if (ids.some(v => typeof v !== 'string' || v === '')) return refuse(`a ${k} is named by a string id`)
    const mine = new Set(await objects.owned(k, ids as string[]))
    const other = (ids as string[]).find(v => !mine.has(v))
    if (other !== undefined) return refuse(`${k} ${JSON.stringify(other)} was not created through the gateway under this session's scope`)
  }
  const named = needed.flatMap(([k, ids]) => ids.map(v => `${k} ${v}`))
  return { applied: named.length > 0 ? `owned: ${named.join(', ')}` : `${kind} created: the scope's`, ...(respond ? { respond } : {}) }
}

function list(v: unknown): unknown[] {
  return v === undefined || v === null ? [] : Array.isArray(v) ? v : [v]
}

/** the id of an object the upstream answered with; without one the object cannot be tracked */
function idOf(json: Json): string {
  const id = json?.id
  if (typeof id !== 'string' || id === '') throw httpError(502, 'upstream_unreadable', "the upstream's answer names no object id, so the scope cannot own it; refused")
  return id
}

async function trackBatchFiles(batch: Json, objects: ScopedObjects): Promise<void> {
  const files = [batch?.output_file_id, batch?.error_file_id].filter((f): f is string => typeof f === 'string' && f !== '')
  await objects.put('file', files)
}

/** a list answer with only the scope's own objects; empty pages with more behind them followed */
async function filterList(req: ScopeRequest, first: Json, kind: string, objects: ScopedObjects, call: UpstreamCall): Promise<Json> {
  let page = first
  for (let n = 0; ; n++) {
    if (page === null || typeof page !== 'object' || !Array.isArray(page.data)) throw httpError(502, 'upstream_unreadable', 'the upstream answered a list without data; refused under a scope')
    const ids = (page.data as Json[]).map(o => o?.id).filter((v): v is string => typeof v === 'string')
    const mine = new Set(await objects.owned(kind, ids))
    const kept = (page.data as Json[]).filter(o => mine.has(o?.id))
    if (kind === 'batch') for (const b of kept) await trackBatchFiles(b, objects)
    const last = ids.at(-1)
    if (kept.length > 0 || page.has_more !== true || last === undefined || n + 1 >= FOLLOW_PAGES) {
      const out: Json = { ...page, data: kept }
      if ('first_id' in page) out.first_id = kept[0]?.id ?? null
      if ('last_id' in page) out.last_id = kept.at(-1)?.id ?? null
      return out
    }
    const path = req.path.split('?')[0]!
    const params = new URLSearchParams(req.path.includes('?') ? req.path.slice(req.path.indexOf('?') + 1) : '')
    params.set('after', last)
    const next = await call('GET', `${path}?${params.toString()}`)
    if (next.status !== 200) throw httpError(502, 'upstream_unavailable', `the upstream answered ${next.status} to the next page of a scoped list`)
    page = next.json
  }
}
