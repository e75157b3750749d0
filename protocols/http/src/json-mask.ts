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
  /** the last short string scanned at this path and what the detectors made of it: ids, models and
   * object types repeat at the same path event after event */
  seen: string | undefined
  seenText: string
  seenCount: number
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
  if (!tree) trees.set(plan, (tree = { root: { full: '', named: '', namedDepth: 0, key: '', method: undefined, kids: undefined, seen: undefined, seenText: '', seenCount: 0 }, size: 0 }))
  const w: Walk = { plan, tree, detectors: plan.hasDetectors, count: 0 }
  const value = visit(w, root, tree.root)
  return { value, count: w.count }
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
  const node: PathNode = {
    full,
    named,
    namedDepth: index ? parent.namedDepth : parent.namedDepth + 1,
    key: k,
    method: index || k === '' ? undefined : fieldRule(w.plan, full, named, k),
    kids: undefined,
    seen: undefined,
    seenText: '',
    seenCount: 0,
  }
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
  for (const k of Object.keys(obj)) {
    const v = visit(w, obj[k], childOf(w, node, k, isIndex(k)))
    if (v !== obj[k]) obj[k] = v
  }
  return obj
}

/** masks a JSON text; fails closed (throws) when it is not JSON */
export function maskJsonText(text: string, plan: MaskPlan): { text: string; count: number } {
  const r = maskJson(JSON.parse(text), plan)
  return { text: r.count > 0 ? JSON.stringify(r.value) : text, count: r.count }
}
