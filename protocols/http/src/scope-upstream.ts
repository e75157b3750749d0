// The gateway's own requests to the upstream for the scope's id checks (scope.ts): the target's
// pool and credential, a JSON body, and an answer read up to a bound (it asked for one point).
import type { Session } from '@portcullis/core'
import { upstreamFor } from './upstream.ts'
import type { UpstreamPost } from './scope.ts'

const MAX_ANSWER = 1 << 20

export function upstreamPost(session: Session): UpstreamPost {
  const target = session.target
  return async (path, body) => {
    const upstream = upstreamFor(target)
    const headers: Record<string, string> = { 'content-type': 'application/json' }
    const auth = target.upstream.auth
    if (auth) headers[auth.header.toLowerCase()] = auth.value.replace('{secret}', await session.secret(auth.secret))
    const res = await upstream.pool.request({ method: 'POST', path: upstream.prefix + path, headers, body: JSON.stringify(body) })
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
