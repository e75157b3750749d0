// An estimate of the heap an object graph holds, for the classifier caches' byte budget (index.ts):
// computed once, when an entry is cached (a miss, which has just parsed the text: the walk costs a
// fraction of that parse), never on a hit.
//
// The figures are V8's on 64-bit Node without pointer compression, rounded up so that the estimate
// is an upper figure for what the entry keeps alive (index.ts's test compares it with the heap):
// - a string: a 16-byte header and its characters at 2 bytes each (a one-byte string is half that;
//   a sliced string shares its parent's: counting each as its own copy over-counts, never under);
// - an object: a 24-byte header and 16 bytes a property (its slot and its share of the map and
//   descriptor array a dictionary-mode or shape-unique object carries);
// - an array: 32 bytes and 8 an element; a Map or Set: 64 bytes and 32 an entry (hash table slot,
//   chain, key and value);
// - a heap number: 16 bytes; small integers, booleans, null and undefined: the slot only;
// - a Proxy and an accessor (literal.ts's instruments of a watched tree): below.
// An object reached twice is counted once (parts[].info is also op.statements[i]); objects
// already counted by an earlier call are not skipped, so two entries sharing an Operation each count
// it (the skeleton cache's op is often the text cache's): an over-count again.

import { types } from 'node:util'

const STRING_HEADER = 16
const OBJECT_HEADER = 24
const PROPERTY = 16
const ARRAY_HEADER = 32
const ELEMENT = 8
const COLLECTION_HEADER = 64
const COLLECTION_ENTRY = 32
const HEAP_NUMBER = 16
const PROXY = 32 + 160
const DICTIONARY_PROPERTY = 40
const ACCESSOR = 136

// a parse tree nested deeper than this is not walked further: analyzeStatement refuses trees it
// cannot walk, so cached trees are shallower; the bound keeps the walk itself off the stack limit
const MAX_DEPTH = 10_000

/** Bytes of the heap `value` and everything reachable from it (own properties, symbols included) keep. */
export function estimateBytes(value: unknown): number {
  const seen = new Set<object>()
  let bytes = 0
  // an explicit stack: parse trees are deep (a long chain of ANDs), recursion would overflow
  const stack: { v: unknown; depth: number }[] = [{ v: value, depth: 0 }]
  while (stack.length > 0) {
    const { v, depth } = stack.pop()!
    if (typeof v === 'string') {
      bytes += STRING_HEADER + 2 * v.length
      continue
    }
    if (typeof v === 'number') {
      if (!Number.isInteger(v) || Math.abs(v) >= 2 ** 30) bytes += HEAP_NUMBER
      continue
    }
    if (typeof v === 'bigint') {
      bytes += HEAP_NUMBER + 8
      continue
    }
    if (v === null || typeof v !== 'object' || seen.has(v) || depth > MAX_DEPTH) continue
    seen.add(v)
    const next = depth + 1
    if (v instanceof Map) {
      bytes += COLLECTION_HEADER + COLLECTION_ENTRY * v.size
      for (const [k, e] of v) stack.push({ v: k, depth: next }, { v: e, depth: next })
      continue
    }
    if (v instanceof Set) {
      bytes += COLLECTION_HEADER + COLLECTION_ENTRY * v.size
      for (const e of v) stack.push({ v: e, depth: next })
      continue
    }
    if (v instanceof WeakMap || v instanceof WeakSet) {
      bytes += COLLECTION_HEADER
      continue
    }
    if (Array.isArray(v)) {
      bytes += ARRAY_HEADER + ELEMENT * v.length
      for (const e of v) stack.push({ v: e, depth: next })
      continue
    }
    if (ArrayBuffer.isView(v)) {
      bytes += OBJECT_HEADER + v.byteLength
      continue
    }
    // a Proxy (literal.ts wraps each A_Const of a watched tree in one): its traps mark the
    // constant as read, so it is not looked into; the body it wraps is a constant's node (a value
    // and a location), counted at a fixed weight
    if (types.isProxy(v)) {
      bytes += PROXY
      continue
    }
    bytes += OBJECT_HEADER
    const keys = Reflect.ownKeys(v)
    let accessors = 0
    for (const key of keys) {
      // the key itself is not counted: property names are internalized, shared by every object
      const d = Object.getOwnPropertyDescriptor(v, key)!
      if ('value' in d) stack.push({ v: d.value, depth: next })
      else accessors++
    }
    // literal.ts turns each `location` of a watched tree into a getter over a closure: the pair,
    // the function and its context each; and an object given one leaves its shared shape
    // (dictionary mode: a hash-table entry a property)
    bytes += accessors > 0 ? DICTIONARY_PROPERTY * keys.length + ACCESSOR * accessors : PROPERTY * keys.length
  }
  return bytes
}
