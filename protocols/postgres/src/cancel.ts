// Gateway-issued cancel keys. The client never learns the upstream backend's process id and
// secret: a CancelRequest naming a gateway key reaches only that client's upstream backend, or
// withdraws the statement that is waiting for approval.
import { randomInt } from 'node:crypto'
import type { TargetConfig } from '@portcullis/core/types'
import { serializeCancelRequest } from './frontend.ts'
import { openSocket } from './upstream.ts'

export interface CancelTarget {
  target: TargetConfig
  processId: number
  secretKey: number
  /** aborts a pending approval; true when there was one */
  withdraw(): boolean
}

const keys = new Map<string, CancelTarget>()

export function issueCancelKey(entry: CancelTarget): { processId: number; secretKey: number; release(): void } {
  for (;;) {
    const processId = randomInt(1, 2 ** 31 - 1)
    const secretKey = randomInt(-(2 ** 31), 2 ** 31 - 1)
    const k = `${processId}:${secretKey}`
    if (keys.has(k)) continue
    keys.set(k, entry)
    return { processId, secretKey, release: () => keys.delete(k) }
  }
}

/** handles a CancelRequest; an unknown key does nothing, as Postgres does */
export async function cancelRequest(processId: number, secretKey: number): Promise<void> {
  const entry = keys.get(`${processId}:${secretKey}`)
  if (!entry) return
  if (entry.withdraw()) return
  await cancelBackend(entry.target, entry.processId, entry.secretKey)
}

export async function cancelBackend(target: TargetConfig, processId: number, secretKey: number): Promise<void> {
  const entry = { target, processId, secretKey }
  const socket = await openSocket(entry.target, entry.target.limits?.handshakeTimeoutMs ?? 10_000)
  await new Promise<void>(resolve => {
    socket.on('error', () => resolve())
    socket.on('close', () => resolve())
    socket.end(serializeCancelRequest(entry.processId, entry.secretKey))
  })
}
