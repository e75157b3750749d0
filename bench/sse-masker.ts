// The SSE masker in process, without sockets or the recording: the bench's stream (bench/lib/
// upstream-child.ts: 2,000 chat-completion chunks, every delta with an email address) fed to an
// SseMasker in the upstream's 16 KB pieces, each batch out of it encoded as the gateway sends it, under the bench's inspect plan (a field rule that
// matches nothing) and its mask plan (the email detector and a field rule), rounds interleaved
// (inspect, mask, inspect, …) so that the load on the machine falls on both alike. Prints CPU µs
// per event and events per CPU-second per mode (median of the rounds) and their ratio.
//   node --import tsx bench/sse-masker.ts [rounds=15] [events=20000]
import { compileMaskPlan, type MaskPlan } from '@portcullis/core'
import { SseMasker } from '@portcullis/http'

const rounds = Number(process.argv[2] ?? 15)
const EVENTS = Number(process.argv[3] ?? 20000)
const DELTA = 'Contact alice.smith@example.com for the quarterly numbers. '
const base = { id: 'chatcmpl-bench', created: 1700000000, model: 'gpt-4o-mini' }
const chunk = (delta: Record<string, unknown>, finish: string | null) =>
  `data: ${JSON.stringify({ ...base, object: 'chat.completion.chunk', choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }] })}\n\n`
const stream = Buffer.from([chunk({ role: 'assistant', content: '' }, null), ...Array.from({ length: EVENTS }, () => chunk({ content: DELTA }, null)), chunk({}, 'stop'), 'data: [DONE]\n\n'].join(''))
const pieces: Buffer[] = []
for (let off = 0; off < stream.length; off += 16384) pieces.push(stream.subarray(off, Math.min(stream.length, off + 16384)))

const scope = { target: 'bench-http', subject: 's', groups: [] }
const hashKey = Buffer.alloc(32, 7)
const plans: Record<string, MaskPlan> = {
  inspect: compileMaskPlan([{ id: 'bench-nohit', fields: ['nomatch'], method: 'redact' }], scope, { hashKey }),
  mask: compileMaskPlan([{ id: 'bench-pii', fields: ['user.email'], detectors: ['email'], method: 'redact' }], scope, { hashKey }),
}
// each mode twice: events masked as the last event's shape (sse-shape.ts) and every event through JSON.parse
// (shapes: false: parsed and walked, the path before), so that one run is an interleaved A/B of the two
const runs: { name: string; plan: MaskPlan; shapes: boolean }[] = []
for (const [k, plan] of Object.entries(plans)) for (const shapes of [true, false]) runs.push({ name: shapes ? k : `${k} (JSON.parse)`, plan, shapes })
// SSE_MASKER_ONLY=mask: the runs whose name starts so (for a CPU profile of one)
const only = process.env.SSE_MASKER_ONLY
if (only !== undefined) runs.splice(0, runs.length, ...runs.filter(r => r.name === only))

function once(plan: MaskPlan, shapes: boolean): { us: number; bytes: number; masked: number } {
  let bytes = 0
  const m = new SseMasker(plan, { maxEventBytes: 1 << 20, shapes })
  const t0 = process.cpuUsage()
  // each batch as the gateway's SseSink sends it (Buffer.from: a rope of rebuilt events is
  // flattened there, a slice of the input is not)
  for (const p of pieces) bytes += Buffer.from(m.maskChunk(p), 'utf8').length
  bytes += Buffer.from(m.maskEnd(), 'utf8').length
  const d = process.cpuUsage(t0)
  return { us: d.user + d.system, bytes, masked: m.masked }
}

const per = new Map<string, number[]>(runs.map(r => [r.name, []]))
for (let i = 0; i < 3; i++) for (const r of runs) once(r.plan, r.shapes)
for (let round = 0; round < rounds; round++) {
  for (const r of runs) {
    const o = once(r.plan, r.shapes)
    per.get(r.name)!.push(o.us / (EVENTS + 3))
    if (r.plan === plans.mask && o.masked < EVENTS) throw new Error(`${r.name} masked ${o.masked} of ${EVENTS} addresses`)
  }
}
const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1]
console.log(`events ${EVENTS}, rounds ${rounds}, load ${(await import('node:os')).loadavg()[0].toFixed(1)}`)
const us = new Map([...per].map(([k, v]) => [k, median(v)]))
for (const [k, v] of us) console.log(`${k.padEnd(22)} ${v.toFixed(2)} µs/event (${Math.round(1e6 / v).toLocaleString('en')} events/CPU-s)`)
for (const suffix of ['', ' (JSON.parse)']) {
  const i = us.get('inspect' + suffix)
  const m = us.get('mask' + suffix)
  if (i !== undefined && m !== undefined) console.log(`mask ÷ inspect${suffix} (events per CPU-second) ${(i / m).toFixed(2)}×`)
}
