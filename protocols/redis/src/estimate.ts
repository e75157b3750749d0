// Blast radius of a Redis command, asked of the upstream on a short-lived connection of the
// gateway's own (its credential, never the client's connection or its lane):
//   DEL / UNLINK k1 … kn   → keys: how many of the (distinct) keys exist now (EXISTS), i.e. what the
//                            command would remove; keysTouched (from the classifier) stays n
//   FT.DROPINDEX idx DD    → documents: the index's num_docs (FT.INFO), the hashes/JSON it deletes
//   (FT.DROP idx, RediSearch 1.x: the same, unless KEEPDOCS)
// A session that SELECTed another database (or one we cannot follow) gets no estimate: the count
// would be of database 0, not of the keys the command deletes; its facts are unknown, and rules
// read them the stricter way.
import type { BlastRadius, Estimator, Session } from '@portcullis/core/types'
import { connectUpstream, loginRefusal, upstreamAuthCommand } from './lane.ts'
import { ReplyFramer, type RedisReply } from './reply-framer.ts'
import { decodeReply, plainValue } from './reply.ts'
import { encodeCommand } from './resp.ts'

export const KEYS_FACTS = ['keys'] as const
export const DOCUMENTS_FACTS = ['documents'] as const
/** more distinct keys than this are not counted (an EXISTS as big as the DEL itself is fine, this is a bound) */
const MAX_KEYS = 100_000
const MAX_REPLY_BYTES = 4 << 20

/** the commands on one connection of our own, each reply in order; the connection then closes */
async function ask(session: Session, commands: (string | Buffer)[][], signal: AbortSignal): Promise<RedisReply[]> {
  const auth = await upstreamAuthCommand(session)
  const { sock, ready } = connectUpstream(session.target)
  const framer = new ReplyFramer(MAX_REPLY_BYTES)
  const wanted = commands.length + (auth ? 1 : 0)
  try {
    return await new Promise<RedisReply[]>((resolve, reject) => {
      const replies: RedisReply[] = []
      const onAbort = () => reject(new Error('estimate aborted'))
      if (signal.aborted) return onAbort()
      signal.addEventListener('abort', onAbort, { once: true })
      sock.on('error', reject)
      sock.on('close', () => reject(new Error('upstream connection closed')))
      sock.on('data', (chunk: Buffer) => {
        try {
          for (const r of framer.push(chunk)) replies.push({ raw: Buffer.from(r.raw), type: r.type })
        } catch (err) {
          return reject(err)
        }
        if (replies.length >= wanted) {
          signal.removeEventListener('abort', onAbort)
          resolve(replies)
        }
      })
      sock.once(ready, () => {
        sock.write(Buffer.concat([...(auth ? [auth] : []), ...commands.map(c => encodeCommand(c))]))
      })
    }).then(replies => {
      if (auth && loginRefusal(replies[0]!, true) !== undefined) throw new Error('upstream login refused')
      return auth ? replies.slice(1) : replies
    })
  } finally {
    sock.destroy()
  }
}

function integer(r: RedisReply | undefined): number | undefined {
  if (!r || r.type !== 0x3a) return undefined
  const n = Number(r.raw.toString('latin1', 1, r.raw.length - 2))
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined
}

/** FT.INFO's num_docs, RESP2 (flat pairs) or RESP3 (map) */
function numDocs(r: RedisReply | undefined): number | undefined {
  if (!r || r.type === 0x2d) return undefined
  const v = plainValue(decodeReply(r.raw))
  if (!Array.isArray(v)) return undefined
  for (let i = 0; i + 1 < v.length; i += 2) {
    if (v[i] !== 'num_docs') continue
    const n = Number(v[i + 1])
    return Number.isFinite(n) && n >= 0 ? n : undefined
  }
  return undefined
}

export async function estimateKeys(session: Session, keys: Buffer[], signal: AbortSignal): Promise<BlastRadius | null> {
  const distinct = [...new Map(keys.map(k => [k.toString('latin1'), k])).values()]
  if (distinct.length === 0 || distinct.length > MAX_KEYS) return null
  const [r] = await ask(session, [['EXISTS', ...distinct]], signal)
  const n = integer(r)
  return n === undefined ? null : { keys: n, source: 'exists' }
}

export async function estimateDocuments(session: Session, index: Buffer, signal: AbortSignal): Promise<BlastRadius | null> {
  const [r] = await ask(session, [['FT.INFO', index]], signal)
  const n = numDocs(r)
  return n === undefined ? null : { documents: n, source: 'ft.info' }
}

/**
 * The estimator of one command, or undefined when the command has none. `dbMoved`: the session
 * is on another database than the one a fresh connection starts on.
 */
export function redisEstimator(session: Session, name: string, args: Buffer[], dbMoved: boolean): Estimator | undefined {
  if (name === 'DEL' || name === 'UNLINK') {
    if (args.length < 2) return undefined
    const keys = args.slice(1)
    return { facts: KEYS_FACTS, run: signal => (dbMoved ? Promise.resolve(null) : estimateKeys(session, keys, signal).catch(() => null)) }
  }
  if (name === 'FT.DROPINDEX' || name === 'FT.DROP') {
    // FT.DROPINDEX deletes documents only with DD; RediSearch 1.x's FT.DROP unless KEEPDOCS
    const flags = args.slice(2).map(a => a.toString('latin1').toUpperCase())
    const deletes = name === 'FT.DROPINDEX' ? flags.includes('DD') : !flags.includes('KEEPDOCS')
    if (args.length < 2 || !deletes) return undefined
    const index = args[1]!
    return { facts: DOCUMENTS_FACTS, run: signal => (dbMoved ? Promise.resolve(null) : estimateDocuments(session, index, signal).catch(() => null)) }
  }
  return undefined
}
