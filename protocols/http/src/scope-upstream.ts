// The gateway's own requests to the upstream for the scope (scope.ts): Qdrant's id checks, the next
// page of a filtered OpenAI list. The target's pool and credential, a JSON body, and an answer read
// up to a bound.
import type { Session } from '@portcullis/core'
import { upstreamFor } from './upstream.ts'
import type { UpstreamCall } from './scope.ts'

const MAX_ANSWER = 1 << 20

export function upstreamCall(session: Session): UpstreamCall {
  const target = session.target
  return async (method, path, body) => {
    const upstream = upstreamFor(target)
    const headers: Record<string, string> = body === undefined ? {} : { 'content-type': 'application/json' }
    const auth = target.upstream.auth
    if (auth) headers[auth.header.toLowerCase()] = auth.value.replace('{secret}', await session.secret(auth.secret))
    const res = await upstream.pool.request({ method, path: upstream.prefix + path, headers, ...(body === undefined ? {} : { body: JSON.stringify(body) }) })
    const parts: Buffer[] = []
    let n = 0
    for await (const chunk of res.body) {
      n += (chunk as Buffer).length
      if (n > MAX_ANSWER) {
        res.body.destroy()
        return { status: 502, json: undefined }
      }
      parts.push(chunk as Buffer)
    }
    let json: unknown
    try {
      json = JSON.parse(Buffer.concat(parts).toString('utf8'))
    } catch {
      json = undefined
    }
    return { status: res.statusCode, json }
  }
}
