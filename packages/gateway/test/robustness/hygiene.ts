// Secret hygiene, checked after a file's work on everything the gateway wrote: its log (stderr), the
// audit file, every recording as raw bytes and as decoded records (core's reader; Buffers read as text).
// Searched for: the upstream passwords, the API key, the recording seal key, and every token minted in
// the suite — each whole, and each token's signature on its own (a token cut or re-encoded still
// leaks its signature).
import { readFile } from 'node:fs/promises'
import type { Test } from 'tap'
import { readRecording } from '@portcullis/core'
import { recordingFiles, type World } from './env.ts'

export interface Leak {
  secret: string
  where: string
  context: string
}

function needles(w: World): Array<{ name: string; value: string }> {
  const out = Object.entries(w.secrets).map(([name, value]) => ({ name: `secret ${name}`, value }))
  w.tokens.forEach((t, i) => {
    out.push({ name: `token #${i}`, value: t })
    out.push({ name: `token #${i} signature`, value: t.slice(t.lastIndexOf('.') + 1) })
  })
  return out
}

function scan(text: string, where: string, ns: Array<{ name: string; value: string }>, leaks: Leak[]): void {
  for (const n of ns) {
    const at = text.indexOf(n.value)
    if (at >= 0) leaks.push({ secret: n.name, where, context: text.slice(Math.max(0, at - 120), at).replace(/[^\x20-\x7e]/g, '.') })
  }
}

/** Buffers in decoded payloads as latin1 text, so a secret inside raw bytes is found too */
function asText(v: unknown): string {
  return JSON.stringify(v, (_k, x) => {
    if (x && typeof x === 'object' && (x as { type?: unknown }).type === 'Buffer' && Array.isArray((x as { data?: unknown }).data)) return Buffer.from((x as { data: number[] }).data).toString('latin1')
    if (x instanceof Uint8Array) return Buffer.from(x).toString('latin1')
    return x
  })
}

export async function findLeaks(w: World): Promise<{ leaks: Leak[]; searched: { logs: number; auditBytes: number; recordings: number; records: number; needles: number } }> {
  const ns = needles(w)
  const leaks: Leak[] = []
  w.logs.forEach((l, i) => scan(l, `gateway log #${i}`, ns, leaks))
  let audit = ''
  try {
    audit = await readFile(w.auditFile, 'latin1')
  } catch {}
  scan(audit, 'audit log', ns, leaks)
  const files = await recordingFiles(w.recordingsDir)
  let records = 0
  for (const f of files) {
    const name = f.split('/').pop()!
    scan((await readFile(f)).toString('latin1'), `recording ${name} (raw)`, ns, leaks)
    try {
      for await (const e of readRecording(f)) {
        records++
        scan(asText(e.payload), `recording ${name} record ${e.index} (${e.type})`, ns, leaks)
      }
    } catch (err) {
      leaks.push({ secret: '-', where: `recording ${name}`, context: `unreadable: ${(err as Error).message}` })
    }
  }
  return { leaks, searched: { logs: w.logs.length, auditBytes: audit.length, recordings: files.length, records, needles: ns.length } }
}

/** the tap subtest every robustness file ends with */
export async function hygieneTest(t: Test, w: World): Promise<void> {
  const { leaks, searched } = await findLeaks(w)
  t.ok(searched.recordings > 0 && searched.auditBytes > 0 && searched.needles > 8, `searched ${searched.recordings} recordings (${searched.records} records), ${searched.auditBytes} audit bytes, ${searched.logs} logs for ${searched.needles} secrets and tokens`)
  t.same(
    leaks.slice(0, 10).map((l) => `${l.secret} in ${l.where} after …${l.context}`),
    [],
    `no secret or token appears in logs, audit lines or recordings (${leaks.length} found)`,
  )
}
