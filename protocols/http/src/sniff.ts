// An HTTP/1.x connection opens with a method token and a space ("POST /v1/…"). Bytes that are still a
// prefix of some method need more input; anything else is not HTTP.
const METHODS = ['GET ', 'HEAD ', 'POST ', 'PUT ', 'PATCH ', 'DELETE ', 'OPTIONS ', 'TRACE ', 'CONNECT ']

export function sniffHttp(first: Buffer): boolean | undefined {
  const head = first.subarray(0, 8).toString('latin1')
  let prefix = false
  for (const m of METHODS) {
    if (head.startsWith(m)) return true
    if (m.startsWith(head)) prefix = true
  }
  return prefix ? undefined : false
}
