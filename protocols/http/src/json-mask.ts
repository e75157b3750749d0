// Masks a parsed JSON value in place: field rules by path (masks.forField), then detectors over the
// remaining string values (masks.scan). Paths are dotted with array indexes ('data.0.email'); a rule
// may also name the path without indexes ('data.email') or the bare key ('email').
import type { MaskMethod, MaskPlan } from '@portcullis/core'

// Responses of one API have the same shape request after request (and the events of one stream,
// event after event): the rule each path resolves to is kept per plan (a plan lives for one
// principal and config generation) in a tree of path segments, so a known path costs one Map lookup
// per segment and no path string. Bounded, because array indexes make paths unbounded: past the
// bound, new paths are worked out on each visit and not kept.
const MAX_CACHED_PATHS = 4096

interface PathNode {
  /** dotted path with indexes ('data.0.email') */
  readonly full: string
  /** the same without index segments ('data.email'), and how many segments that has */
  readonly named: string
  readonly namedDepth: number
  /** the last segment */
  readonly key: string
  /** the field rule for this path; undefined for the root and index segments */
  readonly method: MaskMethod | undefined
  kids: Map<string, PathNode> | undefined
  /** the keys of the last object met at this path, in order: the next one of the same shape is read
   * by comparing its key text in place (no key string, no lookup) */
  order: PathNode[] | undefined
  /** the key needs no escape in JSON: its text stands as it is between the quotes */
  readonly plainKey: boolean
  /** the last short string scanned at this path and what the detectors made of it: ids, models and
   * object types repeat at the same path event after event */
  seen: string | undefined
  seenText: string
  seenCount: number
  /** the key as detectors leave it (a map keyed by email addresses), worked out on first visit */
  keyText: string | undefined
  keyCount: number
}

/** strings up to this long are remembered per path (see PathNode.seen) */
const MAX_SEEN = 64

interface PathTree {
  root: PathNode
  size: number
}

const trees = new WeakMap<MaskPlan, PathTree>()

function isIndex(key: string): boolean {
  const c = key.charCodeAt(0)
  return c >= 48 && c <= 57 && /^\d+$/.test(key)
}

/** one walk's state: module-level functions over it, no closures per call */
interface Walk {
  plan: MaskPlan
  tree: PathTree
  detectors: boolean
  count: number
}

export function maskJson(root: unknown, plan: MaskPlan): { value: unknown; count: number } {
  let tree = trees.get(plan)
  const w: Walk = { plan, tree: treeOf(plan), detectors: plan.hasDetectors, count: 0 }
  const value = visit(w, root, w.tree.root)
  return { value, count: w.count }
}

function treeOf(plan: MaskPlan): PathTree {
  let tree = trees.get(plan)
  if (!tree) trees.set(plan, (tree = { root: newNode('', '', 0, '', undefined), size: 0 }))
  return tree
}

function newNode(full: string, named: string, namedDepth: number, key: string, method: MaskMethod | undefined): PathNode {
  return { full, named, namedDepth, key, method, kids: undefined, order: undefined, plainKey: !/["\\\u0000-\u001f]/.test(key), seen: undefined, seenText: '', seenCount: 0, keyText: undefined, keyCount: 0 }
}

/** the key of `node` after the detectors (counted once per visit when they changed it) */
function maskedKey(w: Walk, node: PathNode): string {
  if (node.keyText === undefined) {
    const r = w.plan.scan(node.key)
    node.keyText = r.text
    node.keyCount = r.count
  }
  w.count += node.keyCount
  return node.keyText
}

/** the rule for a path: by the full path, then without indexes, then by the bare key */
function fieldRule(plan: MaskPlan, full: string, named: string, key: string): MaskMethod | undefined {
  let m = plan.forField(full)
  if (!m && named !== full) m = plan.forField(named)
  if (!m && named !== key) m = plan.forField(key)
  return m
}

function childOf(w: Walk, parent: PathNode, k: string, index: boolean): PathNode {
  const known = parent.kids?.get(k)
  if (known) return known
  const full = parent === w.tree.root ? k : parent.full + '.' + k
  const named = index ? parent.named : parent.namedDepth === 0 ? k : parent.named + '.' + k
  const node = newNode(full, named, index ? parent.namedDepth : parent.namedDepth + 1, k, index || k === '' ? undefined : fieldRule(w.plan, full, named, k))
  if (w.tree.size < MAX_CACHED_PATHS) {
    w.tree.size++
    ;(parent.kids ??= new Map()).set(k, node)
  }
  return node
}

function visit(w: Walk, value: unknown, node: PathNode): unknown {
  const method = node.method
  if (method && value !== null && value !== undefined) {
    w.count++
    return w.plan.apply(method, typeof value === 'string' ? value : JSON.stringify(value))
  }
  if (typeof value === 'string') {
    // a base64 embedding is numbers, not text: a detector hit there would only corrupt the vector
    if (!w.detectors || node.key === 'embedding') return value
    if (node.seen === value) {
      w.count += node.seenCount
      return node.seenText
    }
    const r = w.plan.scan(value)
    w.count += r.count
    if (value.length <= MAX_SEEN) {
      node.seen = value
      node.seenText = r.text
      node.seenCount = r.count
    }
    return r.text
  }
  if (value === null || typeof value !== 'object') return value
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const v = visit(w, value[i], childOf(w, node, String(i), true))
      if (v !== value[i]) value[i] = v
    }
    return value
  }
  const obj = value as Record<string, unknown>
  let renamed = false
  for (const k of Object.keys(obj)) {
    const child = childOf(w, node, k, isIndex(k))
    const v = visit(w, obj[k], child)
    if (v !== obj[k]) obj[k] = v
    if (w.detectors && maskedKey(w, child) !== k) renamed = true
  }
  if (!renamed) return obj
  // a key the detectors changed: the object is rebuilt in its order with the masked keys
  const out: Record<string, unknown> = {}
  for (const k of Object.keys(obj)) out[childOf(w, node, k, isIndex(k)).keyText ?? k] = obj[k]
  return out
}

/**
 * Masks a JSON text where it stands: only the values (and keys) that change are rewritten, every
 * other byte stays as the upstream sent it: numbers beyond double precision (ids, 1e400), number
 * spellings (1.0), escapes and whitespace are not re-serialized. Fails closed (throws) when the text
 * is not JSON.
 */
export function maskJsonText(text: string, plan: MaskPlan, parsed = false, replacements?: readonly Replacement[], mark?: Mark): { text: string; count: number } {
  // validates (unless the caller has parsed it already): the scanner below reads well-formed JSON only
  if (!parsed) JSON.parse(text)
  const s: Scan = { w: { plan, tree: treeOf(plan), detectors: plan.hasDetectors, count: 0 }, text, pos: 0, out: '', copied: 0, replacements, mark }
  try {
    scanValue(s, s.w.tree.root)
  } catch (err) {
    // JSON.parse reads any depth; the walk is recursive. A document nested past the stack is valid
    // JSON that cannot be masked: said so, never guessed at (callers refuse it)
    if (err instanceof RangeError) throw new UnmaskableJson('JSON nested too deeply to be masked')
    throw err
  }
  if (s.copied === 0) return { text, count: s.w.count }
  return { text: s.out + text.slice(s.copied), count: s.w.count }
}

/**
 * A string value the caller has masked already (streamed text, see sse.ts): written in place of
 * whatever string stands at `path` (dotted, with indexes), unless a field rule covers that path.
 */
export interface Replacement {
  readonly path: string
  readonly value: string
}

/**
 * Where the string at `path` stood and what the walk made of it (sse-shape.ts builds on it): filled
 * in for every string met at that path (`n` says how many), the last one's figures kept. A path
 * under a field rule is not a string the walk reads: it is not marked.
 */
export interface Mark {
  readonly path: string
  n: number
  /** the string's text, quotes included: [inStart, inEnd) of the input, [outStart, outEnd) of the output */
  inStart: number
  inEnd: number
  outStart: number
  outEnd: number
  /** values the detectors replaced in it */
  count: number
}

export const newMark = (path: string): Mark => ({ path, n: 0, inStart: 0, inEnd: 0, outStart: 0, outEnd: 0, count: 0 })

/** valid JSON the masker cannot walk (nested past the stack) */
export class UnmaskableJson extends Error {}

interface Scan {
  w: Walk
  text: string
  pos: number
  /** the masked text up to `copied` */
  out: string
  copied: number
  replacements: readonly Replacement[] | undefined
  mark: Mark | undefined
}

function ws(s: Scan): void {
  const t = s.text
  let p = s.pos
  for (let c = t.charCodeAt(p); c === 32 || c === 10 || c === 13 || c === 9; c = t.charCodeAt(++p));
  s.pos = p
}

function replace(s: Scan, start: number, end: number, with_: string): void {
  s.out += s.text.slice(s.copied, start) + with_
  s.copied = end
}

/** s.pos at the opening quote → s.pos after the closing one; true when it holds an escape */
function skipString(s: Scan): boolean {
  const t = s.text
  let p = s.pos + 1
  // the usual string has no escape: its end is the next quote
  const q = t.indexOf('"', p)
  const b = t.indexOf('\\', p)
  if (b === -1 || b > q) {
    s.pos = q + 1
    return false
  }
  p = b
  let escaped = false
  for (;;) {
    const c = t.charCodeAt(p)
    if (c === 34 /* " */) break
    if (c === 92 /* \ */) {
      escaped = true
      p += 2
    } else p++
  }
  s.pos = p + 1
  return escaped
}

/** past one value of any kind (well-formed input) */
function skipValue(s: Scan): void {
  const t = s.text
  const c = t.charCodeAt(s.pos)
  if (c === 34) {
    skipString(s)
    return
  }
  if (c === 123 /* { */ || c === 91 /* [ */) {
    let depth = 0
    for (let p = s.pos; ; ) {
      const d = t.charCodeAt(p)
      if (d === 34) {
        s.pos = p
        skipString(s)
        p = s.pos
        continue
      }
      if (d === 123 || d === 91) depth++
      else if (d === 125 || d === 93) {
        depth--
        if (depth === 0) {
          s.pos = p + 1
          return
        }
      }
      p++
    }
  }
  let p = s.pos
  for (let d = t.charCodeAt(p); p < t.length && d !== 44 && d !== 93 && d !== 125 && d !== 32 && d !== 10 && d !== 13 && d !== 9; d = t.charCodeAt(++p));
  s.pos = p
}

/** a quote between start and end: the array holds strings (or objects) after all */
function hasString(t: string, start: number, end: number): boolean {
  const i = t.indexOf('"', start)
  return i !== -1 && i < end
}

function scanValue(s: Scan, node: PathNode): void {
  ws(s)
  const t = s.text
  const start = s.pos
  const c = t.charCodeAt(start)
  const method = node.method
  if (method) {
    skipValue(s)
    const raw = t.slice(start, s.pos)
    if (raw === 'null') return
    // what the rule sees: a string's text, a number or literal as written, a container minified
    const v = c === 34 ? (JSON.parse(raw) as string) : c === 123 || c === 91 ? JSON.stringify(JSON.parse(raw)) : raw
    s.w.count++
    replace(s, start, s.pos, JSON.stringify(s.w.plan.apply(method, v)))
    return
  }
  if (c === 34) {
    const escaped = skipString(s)
    const mark = s.mark
    if (mark !== undefined && node.full === mark.path) {
      mark.n++
      mark.inStart = start
      mark.inEnd = s.pos
      // the output's offset for an input offset at or after `copied`
      mark.outStart = s.out.length + start - s.copied
      const before = s.w.count
      stringValue(s, node, start, escaped)
      mark.outEnd = s.out.length + s.pos - s.copied
      mark.count = s.w.count - before
      return
    }
    stringValue(s, node, start, escaped)
    return
  }
  if (c === 91 /* [ */) {
    // a vector: numbers only, nothing a detector or a rule below it would touch
    if (node.key === 'embedding' || node.key === 'vector' || node.key === 'values') {
      skipValue(s)
      if (!hasString(t, start, s.pos)) return
      s.pos = start
    }
    s.pos++
    ws(s)
    if (t.charCodeAt(s.pos) === 93) {
      s.pos++
      return
    }
    for (let i = 0; ; i++) {
      scanValue(s, childOf(s.w, node, String(i), true))
      ws(s)
      if (t.charCodeAt(s.pos++) === 93) return
    }
  }
  if (c === 123 /* { */) {
    s.pos++
    ws(s)
    if (t.charCodeAt(s.pos) === 125) {
      s.pos++
      return
    }
    const order = node.order
    let fresh: PathNode[] | undefined
    for (let i = 0; ; i++) {
      ws(s)
      const kStart = s.pos
      let child: PathNode
      const guess = order !== undefined && fresh === undefined && i < order.length ? order[i] : undefined
      if (guess !== undefined && guess.plainKey && t.startsWith(guess.key, kStart + 1) && t.charCodeAt(kStart + 1 + guess.key.length) === 34) {
        // the same key as in the last object here: the same node, without reading the key out
        child = guess
        s.pos = kStart + guess.key.length + 2
      } else {
        const escaped = skipString(s)
        const key = escaped ? (JSON.parse(t.slice(kStart, s.pos)) as string) : t.slice(kStart + 1, s.pos - 1)
        child = childOf(s.w, node, key, isIndex(key))
        // another shape: this object's keys are the order next time
        if (fresh === undefined) fresh = order === undefined ? [] : order.slice(0, i)
      }
      if (fresh !== undefined && fresh.length < 64) fresh.push(child)
      const kEnd = s.pos
      if (s.w.detectors) {
        const k = maskedKey(s.w, child)
        if (k !== child.key) replace(s, kStart, kEnd, JSON.stringify(k))
      }
      ws(s)
      s.pos++ // :
      scanValue(s, child)
      ws(s)
      if (t.charCodeAt(s.pos++) === 125) {
        // a shape with fewer keys than the last: kept as it is (its keys were all found in place)
        if (fresh !== undefined && s.w.tree.size < MAX_CACHED_PATHS) node.order = fresh
        return
      }
    }
  }
  // number, true, false, null
  skipValue(s)
}

/** a string value at `node` [start, s.pos): a replacement, else the detectors */
function stringValue(s: Scan, node: PathNode, start: number, escaped: boolean): void {
  const t = s.text
  if (s.replacements !== undefined) {
    for (const r of s.replacements) {
      if (r.path === node.full) {
        replace(s, start, s.pos, JSON.stringify(r.value))
        return
      }
    }
  }
  // a base64 embedding is numbers, not text: a detector hit there would only corrupt the vector
  if (!s.w.detectors || node.key === 'embedding') return
  const seen = node.seen
  if (seen !== undefined && !escaped && s.pos - start - 2 === seen.length && t.startsWith(seen, start + 1)) {
    // the string met here last time (an id, a model, an object type), compared where it stands
    s.w.count += node.seenCount
    if (node.seenText !== seen) replace(s, start, s.pos, JSON.stringify(node.seenText))
    return
  }
  const value = escaped ? (JSON.parse(t.slice(start, s.pos)) as string) : t.slice(start + 1, s.pos - 1)
  let masked: string
  if (node.seen === value) {
    s.w.count += node.seenCount
    masked = node.seenText
  } else {
    const r = s.w.plan.scan(value)
    s.w.count += r.count
    masked = r.text
    if (value.length <= MAX_SEEN) {
      node.seen = value
      node.seenText = r.text
      node.seenCount = r.count
    }
  }
  if (masked !== value) replace(s, start, s.pos, JSON.stringify(masked))
}
