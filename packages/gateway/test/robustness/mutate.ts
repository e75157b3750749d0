// Structure-aware mutation of captured messages, from a seeded PRNG so a failing case can be replayed
// (`pnpm fuzz --seed S`). A case is a run of consecutive messages from one captured connection, changed
// by one to three mutations, written in random chunks, and sometimes ended by a FIN or an RST.
import type { LengthField, Message } from './frames.ts'

/** mulberry32: small, fast, seedable */
export { mulberry32 as prng } from '@portcullis/fixtures/random'

export type Rand = () => number
export const int = (r: Rand, n: number) => Math.floor(r() * n)
export const pick = <T>(r: Rand, xs: readonly T[]): T => xs[int(r, xs.length)]!

export const MUTATIONS = ['bitflip', 'payload-bitflip', 'length-extreme', 'garbage', 'replace-garbage', 'drop', 'duplicate', 'swap', 'truncate'] as const
export type Mutation = (typeof MUTATIONS)[number]
/** mutations that keep the protocol's framing: the session goes on and the codec's state machine is tried */
export const GENTLE: readonly Mutation[] = ['payload-bitflip', 'drop', 'duplicate', 'swap']

export interface Case {
  bytes: Buffer
  /** how the bytes are cut into writes */
  chunks: number[]
  /** the connection ends after this case: FIN after the bytes, or RST after `cutAt` bytes */
  end: 'keep' | 'fin' | 'rst'
  cutAt: number
  mutations: Mutation[]
}

const BE32_EXTREMES = [0, 3, 4, 0x7fffffff, -1, -0x80000000, 5, 0x7ffffff0]
const DEC_EXTREMES = ['0', '3', '4', '2147483647', '-1', '-2147483648', '2147483648', '99999999999999999999', '', '+5', '1e3']
const HEX_EXTREMES = ['0', '3', '4', '7fffffff', '-1', 'ffffffffffffffff', '', 'g', '0x10', '1;ext=1']

function setLength(r: Rand, m: Message, f: LengthField): Message {
  if (f.kind === 'be32') {
    const bytes = Buffer.from(m.bytes)
    bytes.writeInt32BE(pick(r, BE32_EXTREMES) | 0, f.at)
    return { ...m, bytes }
  }
  const value = Buffer.from(pick(r, f.kind === 'dec' ? DEC_EXTREMES : HEX_EXTREMES), 'latin1')
  const bytes = Buffer.concat([m.bytes.subarray(0, f.at), value, m.bytes.subarray(f.at + f.size)])
  const shift = value.length - f.size
  return {
    bytes,
    lengths: m.lengths.filter((x) => x !== f).map((x) => (x.at > f.at ? { ...x, at: x.at + shift } : x)),
    payload: m.payload.filter(([a]) => a < f.at).concat(m.payload.filter(([a]) => a > f.at).map(([a, b]) => [a + shift, b + shift] as [number, number])),
  }
}

function garbage(r: Rand, n: number): Buffer {
  const b = Buffer.allocUnsafe(n)
  for (let i = 0; i < n; i++) b[i] = int(r, 256)
  // now and then something that looks like protocol: a CRLF, a type letter, a huge decimal
  if (n > 4 && r() < 0.3) b.write(pick(r, ['\r\n', '*9', '$-1', 'Q\x00\x00', '\x7f\xff\xff\xff', '\x00\x00\x00\x08']), int(r, n - 3), 'latin1')
  return b
}

/**
 * A case from one captured connection's traffic. `terminal` lets the caller decide how often a case
 * may end its connection (a new connection is a new upstream login: the expensive part of a case).
 */
export function makeCase(r: Rand, traffic: Message[], terminal: number, gentle = 0): Case {
  const start = int(r, traffic.length)
  let msgs = traffic.slice(start, start + 1 + int(r, 4))
  const mutations: Mutation[] = []
  let truncate = false
  const n = 1 + int(r, 3)
  const kinds = r() < gentle ? GENTLE : MUTATIONS
  for (let k = 0; k < n; k++) {
    const m = pick(r, kinds)
    mutations.push(m)
    const i = int(r, msgs.length)
    const msg = msgs[i]!
    switch (m) {
      case 'bitflip': {
        const bytes = Buffer.from(msg.bytes)
        for (let j = 1 + int(r, 3); j > 0; j--) bytes[int(r, bytes.length)]! ^= 1 << int(r, 8)
        msgs[i] = { ...msg, bytes }
        break
      }
      case 'payload-bitflip': {
        if (msg.payload.length === 0) break
        const [a, b] = pick(r, msg.payload)
        if (b <= a) break
        const bytes = Buffer.from(msg.bytes)
        bytes[a + int(r, b - a)]! ^= 1 << int(r, 8)
        msgs[i] = { ...msg, bytes }
        break
      }
      case 'length-extreme':
        if (msg.lengths.length > 0) msgs[i] = setLength(r, msg, pick(r, msg.lengths))
        break
      case 'garbage': {
        const at = int(r, msg.bytes.length + 1)
        msgs[i] = { bytes: Buffer.concat([msg.bytes.subarray(0, at), garbage(r, 1 + int(r, 64)), msg.bytes.subarray(at)]), lengths: [], payload: [] }
        break
      }
      case 'replace-garbage':
        msgs[i] = { bytes: garbage(r, 1 + int(r, 200)), lengths: [], payload: [] }
        break
      case 'drop':
        if (msgs.length > 1) msgs.splice(i, 1)
        break
      case 'duplicate':
        msgs.splice(i, 0, msg)
        break
      case 'swap': {
        const j = int(r, msgs.length)
        ;[msgs[i], msgs[j]] = [msgs[j]!, msgs[i]!]
        break
      }
      case 'truncate':
        truncate = true
        break
    }
    msgs = msgs.slice()
  }
  let bytes = Buffer.concat(msgs.map((m) => m.bytes))
  let end: Case['end'] = 'keep'
  if (truncate) {
    bytes = bytes.subarray(0, int(r, bytes.length))
    end = r() < 0.5 ? 'fin' : 'rst'
  } else if (r() < terminal) end = r() < 0.5 ? 'fin' : 'rst'
  return { bytes, chunks: split(r, bytes.length), end, cutAt: end === 'rst' ? int(r, bytes.length + 1) : bytes.length, mutations }
}

/** bytes of a case written 1-7 at a time when only a window of it is (split's second mode) */
export const TINY_WINDOW = 64

/**
 * Random write sizes summing to n: half the cases in one write, the rest cut into pieces. One case
 * in five has a run of 1-7-byte pieces: one in ten of those over the whole case, the others over a
 * window of TINY_WINDOW bytes at a random offset (the bytes before and after it in one write each).
 * Every byte offset of every message is still a write boundary many times over a run, and a codec
 * still sees whole messages arrive a few bytes at a time, but such a case no longer costs a write
 * in the fuzzer and a read in the gateway per 2-3 bytes of all of it: with the whole case cut that
 * way, a 1 KB HTTP case was ~490 writes and that mode 97% of the HTTP fuzzer's writes. Writes per
 * case over 20,000 cases of the captured corpus, before → now: HTTP 107 → 22, Postgres 15 → 8.7,
 * Redis 13 → 9.3. The other cases are cut at random sizes up to a random maximum.
 */
export function split(r: Rand, n: number): number[] {
  if (n === 0) return []
  const mode = r()
  if (mode < 0.5) return [n]
  const out: number[] = []
  // `length` bytes in pieces of 1 to `max`
  const pieces = (length: number, max: number) => {
    for (let left = length; left > 0; ) {
      const c = Math.min(left, 1 + int(r, max))
      out.push(c)
      left -= c
    }
  }
  if (mode < 0.7) {
    const max = 1 + int(r, 7)
    if (mode < 0.52 || n <= TINY_WINDOW) {
      pieces(n, max)
      return out
    }
    const at = int(r, n - TINY_WINDOW + 1)
    if (at > 0) out.push(at)
    pieces(TINY_WINDOW, max)
    if (n > at + TINY_WINDOW) out.push(n - at - TINY_WINDOW)
    return out
  }
  pieces(n, 1 + int(r, Math.max(1, n)))
  return out
}
