// Recordings on this host's recording.dir, for the admin API and the web console: a list with each
// file's verify status, and one recording as transcript entries. Verify results are cached by file
// size and mtime (a sealed recording does not change; a live one grows, and is verified again).
import { readdir, stat } from 'node:fs/promises'
import { createPublicKey, type KeyObject } from 'node:crypto'
import { join } from 'node:path'
import { readTranscript, verifyRecording, type Core, type Transcript, type VerifyOptions, type VerifyResult } from '@portcullis/core'

export interface RecordingSummary {
  day: string
  id: string
  target?: string
  protocol?: string
  subject?: string
  groups?: string[]
  start?: string
  bytes: number
  status: VerifyResult['status']
  signature?: VerifyResult['signature']
  records: number
  problem?: VerifyResult['problem']
}

export interface RecordingFilter {
  day?: string
  target?: string
  principal?: string
  /** at most this many, newest day first (default 200) */
  limit?: number
}

const DAY = /^\d{4}-\d{2}-\d{2}$/
const ID = /^[A-Za-z0-9_][A-Za-z0-9._-]*$/
const MAX_CACHE = 10_000
/** entries a replay shows; the rest are counted */
export const MAX_REPLAY_ENTRIES = 5_000

export interface Recordings {
  list(filter: RecordingFilter): Promise<RecordingSummary[]>
  /** undefined when no such recording (or the day/id are not names a recorder writes) */
  replay(day: string, id: string): Promise<Transcript | undefined>
}

export function recordings(core: Core): Recordings {
  const cache = new Map<string, { size: number; mtime: number; result: VerifyResult }>()
  const dir = () => core.config.recording.dir

  async function verifyOptions(): Promise<VerifyOptions> {
    const sign = core.config.recording.sign
    const opts: VerifyOptions = {}
    if (sign?.hmacKey) opts.hmacKey = Buffer.from(await core.secrets.get(sign.hmacKey), 'utf8')
    if (sign?.ed25519Key) opts.publicKey = createPublicKey(await core.secrets.get(sign.ed25519Key)) as KeyObject
    return opts
  }

  async function verified(file: string, size: number, mtime: number, opts: VerifyOptions): Promise<VerifyResult> {
    const hit = cache.get(file)
    if (hit && hit.size === size && hit.mtime === mtime) return hit.result
    const result = await verifyRecording(file, opts)
    if (cache.size >= MAX_CACHE) cache.delete(cache.keys().next().value!)
    cache.set(file, { size, mtime, result })
    return result
  }

  return {
    async list(filter) {
      const limit = Math.min(filter.limit ?? 200, 1000)
      const days = (await readdir(dir()).catch(() => [] as string[])).filter((d) => DAY.test(d) && (!filter.day || d === filter.day)).sort().reverse()
      const out: RecordingSummary[] = []
      const opts = await verifyOptions()
      for (const day of days) {
        const names = (await readdir(join(dir(), day)).catch(() => [] as string[])).filter((n) => n.endsWith('.pcr')).sort().reverse()
        for (const name of names) {
          const file = join(dir(), day, name)
          const st = await stat(file).catch(() => undefined)
          if (!st?.isFile()) continue
          const v = await verified(file, st.size, st.mtimeMs, opts)
          const h = v.header
          if (filter.target && h?.target !== filter.target) continue
          if (filter.principal && h?.principal.subject !== filter.principal) continue
          out.push({
            day,
            id: name.slice(0, -'.pcr'.length),
            ...(h ? { target: h.target, protocol: h.protocol, subject: h.principal.subject, groups: h.principal.groups, start: h.start } : {}),
            bytes: st.size,
            status: v.status,
            ...(v.signature ? { signature: v.signature } : {}),
            records: v.records,
            ...(v.problem ? { problem: v.problem } : {}),
          })
          if (out.length >= limit) return out
        }
      }
      return out
    },
    async replay(day, id) {
      // names only as the recorder writes them: no path can be made of them
      if (!DAY.test(day) || !ID.test(id)) return undefined
      const file = join(dir(), day, `${id}.pcr`)
      const st = await stat(file).catch(() => undefined)
      if (!st?.isFile()) return undefined
      return readTranscript(file, { maxEntries: MAX_REPLAY_ENTRIES, verify: await verifyOptions() })
    },
  }
}
