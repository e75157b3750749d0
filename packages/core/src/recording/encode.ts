// A record body, [index, time, payload] as plain msgpack, written straight into the recorder's batch
// buffer: no intermediate buffer to copy from, no encoder state to set up per record. It covers what
// codecs record (plain objects, arrays, strings, numbers, booleans, null, undefined, Buffers) and
// answers BAIL for anything else, which then goes through msgpackr (packTransient) as before. Both
// write plain msgpack that any reader decodes to the same values.

/** the value holds something this encoder leaves to msgpackr (a Date, a Map, a class instance, a cycle) */
export const BAIL = -1
/** the body does not fit before `limit` */
export const FULL = -2

const MAX_DEPTH = 32

class Full extends Error {}
class Bail extends Error {}
const full = new Full()
const bail = new Bail()

let buf: Buffer
let pos = 0
let limit = 0

/**
 * Writes the msgpack array [index, time, payload] at `at`, stopping before `end`; returns where the
 * body ends, FULL when it does not fit, or BAIL for a payload this encoder leaves to msgpackr.
 * On FULL or BAIL the bytes from `at` on are garbage.
 */
export function encodeBody(target: Buffer, at: number, end: number, index: number, time: number, payload: Record<string, unknown>): number {
  buf = target
  pos = at
  limit = end
  try {
    room(1)
    buf[pos++] = 0x93 // fixarray of 3
    number(index)
    number(time)
    object(payload, 0)
    return pos
  } catch (err) {
    if (err === full) return FULL
    if (err === bail) return BAIL
    // a stack overflow or a throwing getter: msgpackr will say what it makes of it
    return BAIL
  } finally {
    buf = undefined as unknown as Buffer
  }
}

function room(n: number): void {
  if (pos + n > limit) throw full
}

function value(v: unknown, depth: number): void {
  switch (typeof v) {
    case 'string':
      return string(v)
    case 'number':
      return number(v)
    case 'boolean':
      room(1)
      buf[pos++] = v ? 0xc3 : 0xc2
      return
    case 'undefined':
      // as msgpackr writes it: fixext 1, type 0, data 0
      room(3)
      buf[pos++] = 0xd4
      buf[pos++] = 0
      buf[pos++] = 0
      return
    case 'object':
      if (v === null) {
        room(1)
        buf[pos++] = 0xc0
        return
      }
      if (v instanceof Uint8Array) return bin(v)
      if (Array.isArray(v)) return array(v, depth)
      return object(v as Record<string, unknown>, depth)
    default:
      throw bail
  }
}

function number(n: number): void {
  room(9)
  if (n >>> 0 === n) {
    if (n < 0x80) buf[pos++] = n
    else if (n < 0x100) {
      buf[pos++] = 0xcc
      buf[pos++] = n
    } else if (n < 0x10000) {
      buf[pos++] = 0xcd
      buf[pos++] = n >> 8
      buf[pos++] = n & 0xff
    } else {
      buf[pos++] = 0xce
      buf.writeUInt32BE(n, pos)
      pos += 4
    }
  } else if (n >> 0 === n) {
    if (n >= -0x20) buf[pos++] = n & 0xff
    else if (n >= -0x80) {
      buf[pos++] = 0xd0
      buf[pos++] = n & 0xff
    } else if (n >= -0x8000) {
      buf[pos++] = 0xd1
      buf.writeInt16BE(n, pos)
      pos += 2
    } else {
      buf[pos++] = 0xd2
      buf.writeInt32BE(n, pos)
      pos += 4
    }
  } else {
    // times in ms, fractions, -0, NaN: a float64, exact for every integer up to 2^53
    buf[pos++] = 0xcb
    buf.writeDoubleBE(n, pos)
    pos += 8
  }
}

function string(s: string): void {
  const n = s.length
  if (n < 32) {
    // short text is mostly ASCII: byte by byte beats a call into the UTF-8 encoder (in locals: the
    // module's `buf` and `pos` are context slots, a load and a store each per byte)
    room(1 + n)
    const b = buf
    let p = pos + 1
    for (let i = 0; i < n; i++) {
      const c = s.charCodeAt(i)
      if (c >= 0x80) return longString(s)
      b[p++] = c
    }
    b[pos] = 0xa0 | n
    pos = p
    return
  }
  longString(s)
}

function longString(s: string): void {
  // the header is chosen for the largest the text can be in UTF-8 (3 bytes per UTF-16 unit); a
  // longer header than needed is still plain msgpack
  const max = s.length * 3
  const head = max < 32 ? 1 : max < 0x100 ? 2 : max < 0x10000 ? 3 : 5
  room(head + max)
  const start = pos
  const written = buf.write(s, start + head, max, 'utf8')
  if (head === 1) buf[start] = 0xa0 | written
  else if (head === 2) {
    buf[start] = 0xd9
    buf[start + 1] = written
  } else if (head === 3) {
    buf[start] = 0xda
    buf.writeUInt16BE(written, start + 1)
  } else {
    buf[start] = 0xdb
    buf.writeUInt32BE(written, start + 1)
  }
  pos = start + head + written
}

function bin(b: Uint8Array): void {
  const n = b.byteLength
  room(5 + n)
  if (n < 0x100) {
    buf[pos++] = 0xc4
    buf[pos++] = n
  } else if (n < 0x10000) {
    buf[pos++] = 0xc5
    buf.writeUInt16BE(n, pos)
    pos += 2
  } else {
    buf[pos++] = 0xc6
    buf.writeUInt32BE(n, pos)
    pos += 4
  }
  buf.set(b, pos)
  pos += n
}

function array(a: unknown[], depth: number): void {
  if (depth >= MAX_DEPTH) throw bail
  const n = a.length
  room(5)
  if (n < 16) buf[pos++] = 0x90 | n
  else if (n < 0x10000) {
    buf[pos++] = 0xdc
    buf.writeUInt16BE(n, pos)
    pos += 2
  } else {
    buf[pos++] = 0xdd
    buf.writeUInt32BE(n, pos)
    pos += 4
  }
  for (let i = 0; i < n; i++) value(a[i], depth + 1)
}

function object(o: Record<string, unknown>, depth: number): void {
  if (depth >= MAX_DEPTH) throw bail
  const proto = Object.getPrototypeOf(o)
  // a Date, a Map, a class instance: msgpackr has its own ways with those
  if (proto !== Object.prototype && proto !== null) throw bail
  // one pass: a fixmap header on the guess of fewer than 16 keys (what codecs record), the entries,
  // then the count; a larger map moves its entries up to make room for a longer header
  room(1)
  const headAt = pos++
  let n = 0
  for (const k in o) {
    if (!Object.hasOwn(o, k)) continue
    string(k)
    value(o[k], depth + 1)
    n++
  }
  if (n < 16) {
    buf[headAt] = 0x80 | n
    return
  }
  const wide = n < 0x10000 ? 2 : 4
  room(wide)
  buf.copyWithin(headAt + 1 + wide, headAt + 1, pos)
  pos += wide
  if (wide === 2) {
    buf[headAt] = 0xde
    buf.writeUInt16BE(n, headAt + 1)
  } else {
    buf[headAt] = 0xdf
    buf.writeUInt32BE(n, headAt + 1)
  }
}
