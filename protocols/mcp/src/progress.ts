// MCP progress notifications while a call waits (held for approval in wait mode): one at once when
// the target says the statement is held (Postgres sends a NoticeResponse with the request id), and
// one every PROGRESS_MS while the call has not answered, so the client knows it is alive.
import type { RequestHandlerExtra } from '@modelcontextprotocol/sdk/shared/protocol.js'
import type { ServerNotification, ServerRequest } from '@modelcontextprotocol/sdk/types.js'
import { PROGRESS_MS } from './context.ts'

export type Extra = RequestHandlerExtra<ServerRequest, ServerNotification>

export interface Progress {
  /** the target said the call is held, with this request id */
  held(approvalId: string): void
  stop(): void
}

export function progressOf(extra: Extra, target: string): Progress {
  const token = extra._meta?.progressToken
  if (token === undefined) return { held: () => {}, stop: () => {} }
  let n = 0
  let heldId: string | undefined
  let stopped = false
  const send = () => {
    if (stopped) return
    n++
    const message = heldId ? `held for approval: request ${heldId} on ${target}` : `waiting for ${target}`
    extra.sendNotification({ method: 'notifications/progress', params: { progressToken: token, progress: n, message } }).catch(() => {})
  }
  const timer = setInterval(send, PROGRESS_MS)
  timer.unref()
  return {
    held(id) {
      heldId = id
      send()
    },
    stop() {
      stopped = true
      clearInterval(timer)
    },
  }
}
