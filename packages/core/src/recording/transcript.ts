// formatTranscript: a recording as a person reads it (portcullis replay). Payload shapes belong to
// the codecs, so known fields are shown first and anything else follows as compact JSON.
import type { RecordingHeader, SealPayload } from './format.ts'
import { readRecording } from './reader.ts'
import { verifyRecording, type VerifyOptions, type VerifyResult } from './verify.ts'
import { describePostgresBackend, describeResp, printableOrHex } from './wire.ts'

const MAX_ROWS = 50
const MAX_TEXT = 2000

function time(ms: number): string {
  return new Date(ms).toISOString().slice(11, 23)
}

/** JSON with Buffers shown as text (or hex when binary) */
function json(v: unknown): string {
  return JSON.stringify(v, function (this: unknown, key: string, value: unknown) {
    const raw = (this as Record<string, unknown>)[key]
    if (raw instanceof Uint8Array) return printableOrHex(raw)
    if (typeof value === 'bigint') return value.toString()
    return value
  })
}

function clip(s: string): string {
  return s.length > MAX_TEXT ? s.slice(0, MAX_TEXT) + `… (${s.length - MAX_TEXT} more characters)` : s
}

function text(v: unknown): string | undefined {
  if (v === undefined || v === null) return undefined
  if (typeof v === 'string') return v
  if (v instanceof Uint8Array) return printableOrHex(v)
  if (Array.isArray(v)) return v.map(x => text(x) ?? String(x)).join(' ')
  return json(v)
}

function rest(p: Record<string, unknown>, used: string[]): string {
  const extra: Record<string, unknown> = {}
  let any = false
  for (const [k, v] of Object.entries(p)) {
    if (!used.includes(k) && v !== undefined) {
      extra[k] = v
      any = true
    }
  }
  return any ? ' ' + clip(json(extra)) : ''
}

const REQUEST_TEXT = ['statement', 'sql', 'query', 'command', 'text']

/**
 * A `decision` record's `runs` (FORMAT.md: stretches of one round trip's commands that got the same
 * answer, their operations' fields in columns) as the one decision per command they stand for
 */
export function decisionsOfRuns(runs: Record<string, unknown>[]): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = []
  for (const run of runs) {
    const { action, rule, reason, approvalId, scope, statements, classes, fingerprints, resources, ...other } = run
    const n = Array.isArray(statements) ? statements.length : 0
    const at = (col: unknown, i: number): unknown => (Array.isArray(col) ? col[i] : undefined)
    for (let i = 0; i < n; i++) {
      // the fields in the order a decision record of its own has them
      const op = { statement: at(statements, i), class: at(classes, i), fingerprint: at(fingerprints, i), resources: at(resources, i) }
      const d: Record<string, unknown> = scope === undefined
        ? { action, rule, reason, ...(approvalId !== undefined ? { approvalId } : {}), ...op }
        : { action, rule, reason, ...op, scope, ...(approvalId !== undefined ? { approvalId } : {}) }
      out.push(Object.assign(d, other))
    }
  }
  return out
}

function line(type: string, p: Record<string, unknown>, protocol: string): string[] {
  switch (type) {
    case 'request': {
      const key = REQUEST_TEXT.find(k => p[k] !== undefined)
      if (key !== undefined) return [clip(text(p[key])!) + rest(p, [key])]
      if (p.method !== undefined || p.path !== undefined) return [`${p.method ?? ''} ${p.path ?? ''}`.trim() + rest(p, ['method', 'path'])]
      return [clip(json(p))]
    }
    case 'decision': {
      // one record per round trip: a line per decision
      if (Array.isArray(p.decisions)) return (p.decisions as Record<string, unknown>[]).flatMap(d => line('decision', d, protocol))
      if (Array.isArray(p.runs)) return decisionsOfRuns(p.runs as Record<string, unknown>[]).flatMap(d => line('decision', d, protocol))
      let s = String(p.action ?? p.decision ?? '?')
      if (p.rule !== undefined && p.rule !== null) s += ` by rule ${p.rule}`
      if (p.reason !== undefined) s += ` (${p.reason})`
      if (p.approvalId !== undefined) s += ` approval ${p.approvalId}`
      // the request it answers, when the record holds it, is an entry of its own (readTranscript)
      return [s + rest(p, ['action', 'decision', 'rule', 'reason', 'approvalId', 'request'])]
    }
    case 'response': {
      const head = p.status !== undefined ? `${p.status} ` : ''
      const rows = p.rows
      if (Array.isArray(rows)) {
        const out = [`${head}${rows.length} row${rows.length === 1 ? '' : 's'}` + rest(p, ['rows', 'status'])]
        for (const row of rows.slice(0, MAX_ROWS)) out.push('  ' + clip(json(row)))
        if (rows.length > MAX_ROWS) out.push(`  … ${rows.length - MAX_ROWS} more rows`)
        return out
      }
      // wire bytes as sent to the client (after masking): decode what a reader wants to see
      const wire = [p.bytes, p.raw].find(v => v instanceof Uint8Array) as Uint8Array | undefined
      if (wire !== undefined && (protocol === 'postgres' || protocol === 'redis')) {
        const lines = protocol === 'postgres' ? describePostgresBackend(wire) : describeResp(wire)
        const summary = `${head}${typeof rows === 'number' ? `${rows} row${rows === 1 ? '' : 's'} ` : ''}(${wire.byteLength} bytes)`
        return [summary + rest(p, ['bytes', 'raw', 'rows', 'status']), ...lines.map(l => '  ' + clip(l))]
      }
      const key = ['text', 'body', 'batch', 'reply', 'data'].find(k => p[k] !== undefined)
      if (key !== undefined) return [head + clip(text(p[key])!) + rest(p, [key, 'status'])]
      return [head + clip(json(p))]
    }
    case 'error':
      return [`${p.code !== undefined ? `${p.code}: ` : ''}${p.message ?? ''}` + rest(p, ['code', 'message'])]
    default:
      return [clip(json(p))]
  }
}

/** the request a decision record holds (Session.holdRequest), if it holds one */
export function heldRequest(payload: Record<string, unknown>): Record<string, unknown> | undefined {
  const r = payload.request
  return r !== null && typeof r === 'object' && !Array.isArray(r) && !(r instanceof Uint8Array) ? (r as Record<string, unknown>) : undefined
}

/**
 * One record of a transcript: its place in the file, and the lines a person reads for it. A
 * decision record that holds its request gives two entries of one index: 'request', 'decision'.
 */
export interface TranscriptEntry {
  /** record number (0 is the header), as verify's problem.record counts */
  index: number
  time: number
  type: string
  lines: string[]
}

export interface Transcript {
  header?: RecordingHeader
  entries: TranscriptEntry[]
  seal?: { time: number; payload: SealPayload }
  /** entries left out past `maxEntries` */
  more: number
  verify: VerifyResult
}

/**
 * A recording as readable entries (what `portcullis replay` and the web console show): responses as
 * recorded, which is after masking. Reads at most `maxEntries` entries; verifies the whole file.
 */
export async function readTranscript(file: string, opts: { maxEntries?: number; verify?: VerifyOptions } = {}): Promise<Transcript> {
  const max = opts.maxEntries ?? Infinity
  const t: Transcript = { entries: [], more: 0, verify: { status: 'unsealed', records: 0 } }
  let protocol = ''
  for await (const r of readRecording(file)) {
    if (r.type === 'session-start' && r.index === 0 && r.payload.undecodable === undefined) {
      t.header = r.payload as unknown as RecordingHeader
      protocol = t.header.protocol
      continue
    }
    if (r.type === 'seal' && r.payload.undecodable === undefined) {
      t.seal = { time: r.time, payload: r.payload as unknown as SealPayload }
      continue
    }
    if (t.entries.length >= max) {
      t.more++
      continue
    }
    // a decision that holds the request it answers (FORMAT.md) reads as the two records it replaces
    const request = r.type === 'decision' ? heldRequest(r.payload) : undefined
    if (request !== undefined) t.entries.push({ index: r.index, time: r.time, type: 'request', lines: line('request', request, protocol) })
    t.entries.push({ index: r.index, time: r.time, type: r.type, lines: line(r.type, r.payload, protocol) })
  }
  t.verify = await verifyRecording(file, opts.verify)
  return t
}

/** A readable transcript: time, principal, statements, decisions, (masked) results, and integrity. */
export async function formatTranscript(file: string): Promise<string> {
  const out: string[] = []
  const t = await readTranscript(file)
  const h = t.header
  if (h) {
    out.push(`recording  ${h.sessionId}`)
    out.push(`target     ${h.target} (${h.protocol})`)
    out.push(`principal  ${h.principal.subject}${h.principal.groups.length ? ` [${h.principal.groups.join(', ')}]` : ''} from ${h.principal.issuer}`)
    out.push(`started    ${h.start}`)
    out.push('')
  }
  for (const e of t.entries) {
    const [first, ...more] = e.lines
    out.push(`${time(e.time)}  ${e.type.padEnd(13)} ${first}`)
    for (const m of more) out.push(`${' '.repeat(14)}${' '.repeat(13)} ${m}`)
  }
  if (t.seal) {
    const s = t.seal.payload
    out.push('')
    out.push(`sealed     ${new Date(t.seal.time).toISOString()} after ${s.records} records${s.reason ? ` (${s.reason})` : ''}`)
    if (s.dropped) out.push(`dropped    ${s.dropped} records the recorder could not keep${s.failed ? `: ${s.failed}` : ''}`)
  }
  const v = t.verify
  if (!t.seal) out.push('')
  out.push(`integrity  ${v.status}${v.problem ? `: ${v.problem.message} (record ${v.problem.record}, byte ${v.problem.offset})` : ''}`)
  return out.join('\n') + '\n'
}
