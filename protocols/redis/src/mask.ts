// Masking of replies. Runs only when the session's mask plan is not empty, and decodes a reply only
// when a rule could touch it: hash fields by name (HGET/HMGET/HGETALL, FT.SEARCH/FT.AGGREGATE field
// lists, RESP3 maps), values by key glob (GET/MGET, hashes, vector sets), detectors on text.
// Key and field rules replace a whole value; detectors only ever rewrite valid UTF-8 text, so binary
// values (FLOAT32 vectors, serialized blobs) are never corrupted.
import { isUtf8 } from 'node:buffer'
import type { MaskMethod, MaskPlan } from '@portcullis/core'
import { decodeReply, encodeReply, nodeText, setNodeValue, type RespNode } from './reply.ts'
import { commandKeys } from './mask-paths.ts'

export interface MaskContext {
  /** upper-case command name, e.g. 'HGETALL' */
  name: string
  args: Buffer[]
  /** names that carry a masked field under another name (FT.SEARCH RETURN … AS) */
  aliases?: Map<string, MaskMethod>
}

// every leaf of the reply is data of the key in args[1]. Whatever reads a masked key and is not
// masked here is refused before it goes upstream (mask-paths.ts)
const KEY_VALUE = new Set(['GET', 'GETEX', 'GETDEL', 'GETSET', 'GETRANGE', 'SUBSTR', 'SET', 'LINDEX', 'LPOP', 'RPOP', 'LRANGE',
  'SMEMBERS', 'SRANDMEMBER', 'SPOP', 'HVALS', 'HKEYS', 'ZRANGE', 'ZRANGEBYSCORE', 'ZRANGEBYLEX', 'ZREVRANGE', 'ZREVRANGEBYSCORE',
  'ZREVRANGEBYLEX', 'ZRANDMEMBER', 'ZPOPMIN', 'ZPOPMAX', 'ZSCORE', 'ZMSCORE', 'INCR', 'INCRBY', 'INCRBYFLOAT', 'DECR', 'DECRBY',
  'ZINCRBY', 'LMOVE', 'RPOPLPUSH', 'BLMOVE', 'BRPOPLPUSH', 'GEOPOS', 'GEODIST', 'GEOHASH', 'GEOSEARCH', 'GEORADIUS',
  'GEORADIUSBYMEMBER', 'GEORADIUS_RO', 'GEORADIUSBYMEMBER_RO', 'SORT', 'SORT_RO'])
const VECTOR_SET = new Set(['VSIM', 'VEMB', 'VRANDMEMBER', 'VLINKS', 'VGETATTR'])
const FIELD_LISTS = new Set(['FT.SEARCH', 'FT.AGGREGATE', 'FT.GET', 'FT.MGET', 'FT.CURSOR'])
// members of several keys mixed in one reply
const MULTI_KEY = new Set(['SUNION', 'SINTER', 'SDIFF', 'ZUNION', 'ZINTER', 'ZDIFF'])
const SCANS = new Set(['HSCAN', 'SSCAN', 'ZSCAN'])
const STREAM_RANGES = new Set(['XRANGE', 'XREVRANGE', 'XCLAIM'])
// [key, value…] where the reply names the key
const POPS = new Set(['BLPOP', 'BRPOP', 'BZPOPMIN', 'BZPOPMAX'])
const MPOPS = new Set(['LMPOP', 'BLMPOP', 'ZMPOP', 'BZMPOP'])

const str = (b: Buffer | undefined): string => (b ? b.toString('utf8') : '')

class Masker {
  masked = 0
  aliases: Map<string, MaskMethod> | undefined
  constructor(readonly plan: MaskPlan, readonly resp: number) {}

  replace(node: RespNode, method: MaskMethod): void {
    // an attribute describes the value: it goes with it
    if (node.attribute) delete node.attribute
    if (node.items) {
      for (const item of node.items) this.replace(item, method)
      return
    }
    // status replies (+OK of SET) and errors are not values
    if (node.changed || node.data === null || node.type === 0x5f || node.type === 0x2b || node.type === 0x2d || node.type === 0x21) return
    const value = node.data !== undefined ? nodeText(node) ?? node.data : node.line
    setNodeValue(node, this.plan.apply(method, str(value)), this.resp)
    this.masked++
  }

  /** detectors on every text leaf not already replaced */
  detect(node: RespNode): void {
    if (!this.plan.hasDetectors) return
    if (node.attribute) this.detect(node.attribute)
    if (node.items) {
      for (const item of node.items) this.detect(item)
      return
    }
    if (node.changed) return
    if (node.type === 0x2d || node.type === 0x21 || node.type === 0x28) {
      // errors can echo values (a script's error_reply, a module's message); big numbers can be
      // card numbers. An error stays an error, a big number found by a detector becomes text
      const raw = node.type === 0x21 ? node.data : node.line
      if (!raw || !isUtf8(raw)) return
      const { text: out, count } = this.plan.scan(raw.toString('utf8'))
      if (count === 0) return
      if (node.type === 0x28) setNodeValue(node, out, this.resp)
      else if (node.type === 0x21) node.data = Buffer.from(out, 'utf8')
      else node.line = Buffer.from(out.replace(/[\r\n]+/g, ' '), 'utf8')
      node.changed = true
      this.masked += count
      return
    }
    const text = nodeText(node)
    if (!text || text.length === 0 || !isUtf8(text)) return
    const { text: out, count } = this.plan.scan(text.toString('utf8'))
    if (count > 0) {
      setNodeValue(node, out, this.resp)
      this.masked += count
    }
  }

  /** key, value, key, value… pairs: field rules by name */
  pairs(items: RespNode[], fallback: MaskMethod | undefined): void {
    for (let i = 0; i + 1 < items.length; i += 2) {
      const name = nodeText(items[i]!)
      const m = (name ? this.plan.forField(str(name)) ?? this.aliases?.get(str(name)) : undefined) ?? fallback
      if (m) this.replace(items[i + 1]!, m)
    }
  }

  /** RESP3 maps anywhere in a reply */
  maps(node: RespNode): void {
    if (node.attribute) this.maps(node.attribute)
    if (!node.items) return
    if (node.type === 0x25 || node.type === 0x7c) this.pairs(node.items, undefined)
    for (const item of node.items) this.maps(item)
  }

  /** stream entries: [[id, [field, value…]]…], fields by name, values by the key's rule */
  entries(node: RespNode | undefined, km: MaskMethod | undefined): void {
    for (const e of node?.items ?? []) {
      const fv = e.items?.[1]
      if (fv?.items) this.pairs(fv.items, km)
    }
  }
}

/** does any rule possibly apply to this reply? cheap checks only */
/**
 * Under `plan`, is a command of this name with these keys (its Operation's resources) neither masked
 * nor refused for masking, whatever its values? True only for a key's own value (KEY_VALUE, but
 * SORT, whose GET / STORE arguments matter) under a plan of key rules alone (no detectors, no field
 * rules) when no rule names any of its keys: maskReply then hands every reply back as it came
 * (mayApply's first case) and maskRefusal finds no masked key. `command`: the name classification
 * gave it (the mask context's name), which must be `name` itself.
 */
export function maskFree(name: string, command: unknown, keys: readonly string[], plan: MaskPlan): boolean {
  if (plan.empty) return true
  if (plan.hasDetectors || plan.hasFieldRules !== false || command !== name || name === 'SORT' || name === 'SORT_RO' || !KEY_VALUE.has(name)) return false
  if (keys.length === 0) return false
  for (const k of keys) if (plan.forKey(k) !== undefined) return false
  return true
}

/**
 * A key's own value under a plan of key rules alone (no detectors, no field rules): only that key's
 * rule can touch it (applyTo)
 */
function keyRuleAlone(plan: MaskPlan, ctx: MaskContext): boolean {
  return !plan.hasDetectors && plan.hasFieldRules === false && ctx.aliases === undefined && (KEY_VALUE.has(ctx.name) || VECTOR_SET.has(ctx.name))
}

function mayApply(plan: MaskPlan, ctx: MaskContext, type: number): boolean {
  if (plan.empty) return false
  // a key no rule names is not decoded at all
  if (keyRuleAlone(plan, ctx)) return plan.forKey(str(ctx.args[1])) !== undefined
  // a number can be the data itself: INCRBY k 0, HINCRBY h f 0, ZSCORE, GEODIST (RESP3 doubles)
  if ((type === 0x3a || type === 0x2c || type === 0x28) && (KEY_VALUE.has(ctx.name) || ctx.name === 'HINCRBY' || ctx.name === 'HINCRBYFLOAT')) return true
  if (plan.hasDetectors) return type !== 0x3a && type !== 0x5f && type !== 0x23 && type !== 0x2c
  switch (type) {
    case 0x2a: case 0x25: case 0x7e: case 0x3e: // aggregates may hold fields or maps
      return true
    case 0x24: case 0x3d:
      return true
    default:
      return false
  }
}

export function maskReply(raw: Buffer, type: number, ctx: MaskContext, plan: MaskPlan, resp: number): { raw: Buffer; masked: number } {
  if (!plan.empty && type === 0x24 && keyRuleAlone(plan, ctx)) {
    const km = plan.forKey(str(ctx.args[1]))
    if (km === undefined) return { raw, masked: 0 }
    // a bulk string (GET's answer) under a rule whose replacement ignores the value: what decoding,
    // Masker.replace and encoding make of it, as bytes made once. A nil ($-1) is no value: as it came
    if (km === 'redact' || km === 'null') return isNilBulk(raw) ? { raw, masked: 0 } : { raw: fixedBulk(plan.apply(km, ''), resp), masked: 1 }
  }
  if (!mayApply(plan, ctx, type)) return { raw, masked: 0 }
  const root = decodeReply(raw)
  const m = new Masker(plan, resp)
  m.aliases = ctx.aliases
  applyTo(root, ctx, m)
  m.maps(root)
  m.detect(root)
  return m.masked > 0 ? { raw: encodeReply(root), masked: m.masked } : { raw, masked: 0 }
}

function isNilBulk(raw: Buffer): boolean {
  return raw.length >= 3 && raw[1] === 0x2d /* - */ && raw[2] === 0x31
}

// the replies a value-independent method makes of a bulk string ('[REDACTED]', or a nil), by text
const fixedReplies = new Map<string, Buffer>()

function fixedBulk(value: string | null, resp: number): Buffer {
  // a nil is `$-1` in RESP2 and `_` in RESP3 (setNodeValue); a string is a bulk string in both
  const key = value === null ? (resp >= 3 ? '\0_' : '\0$') : value
  let reply = fixedReplies.get(key)
  if (reply === undefined) {
    const node: RespNode = { type: 0x24, data: Buffer.alloc(0) }
    setNodeValue(node, value, resp)
    reply = encodeReply(node)
    // the methods that ignore the value make few texts (a redaction label per kind): bounded anyway
    if (fixedReplies.size < 64) fixedReplies.set(key, reply)
  }
  return reply
}

/** an EXEC reply: each element answers one queued command */
export function maskExecReply(raw: Buffer, type: number, queued: MaskContext[], plan: MaskPlan, resp: number): { raw: Buffer; masked: number } {
  if (plan.empty || type !== 0x2a) return { raw, masked: 0 }
  const root = decodeReply(raw)
  const m = new Masker(plan, resp)
  root.items?.forEach((item, i) => {
    if (!queued[i]) return
    m.aliases = queued[i].aliases
    applyTo(item, queued[i], m)
  })
  m.aliases = undefined
  m.maps(root)
  m.detect(root)
  return m.masked > 0 ? { raw: encodeReply(root), masked: m.masked } : { raw, masked: 0 }
}

function applyTo(node: RespNode, ctx: MaskContext, m: Masker): void {
  const { name, args } = ctx
  const plan = m.plan
  if (node.type === 0x2d || node.type === 0x21) return
  const items = node.items ?? undefined
  if (KEY_VALUE.has(name) || VECTOR_SET.has(name)) {
    const km = plan.forKey(str(args[1]))
    if (km) m.replace(node, km)
  } else if (name === 'HRANDFIELD') {
    const km = plan.forKey(str(args[1]))
    if (km) m.replace(node, km)
    else if (items && args.some((a, i) => i > 2 && str(a).toUpperCase() === 'WITHVALUES')) {
      // RESP2: field, value, field, value…; RESP3: [field, value] pairs
      if (items.every(x => x.items)) for (const pair of items) m.pairs(pair.items!, undefined)
      else m.pairs(items, undefined)
    }
  } else if (name === 'HINCRBY' || name === 'HINCRBYFLOAT') {
    const fm = plan.forField(str(args[2])) ?? plan.forKey(str(args[1]))
    if (fm) m.replace(node, fm)
  } else if (MULTI_KEY.has(name)) {
    for (const k of commandKeys(args, undefined)) {
      const km = plan.forKey(k)
      if (km) return m.replace(node, km)
    }
  } else if (SCANS.has(name)) {
    // [cursor, [items]]: the cursor is the gateway's client's to keep
    const list = items?.[1]
    const km = plan.forKey(str(args[1]))
    if (list && km) m.replace(list, km)
    else if (list?.items && name === 'HSCAN' && !args.some((a, i) => i > 2 && str(a).toUpperCase() === 'NOVALUES')) m.pairs(list.items, undefined)
  } else if (STREAM_RANGES.has(name)) {
    m.entries(node, plan.forKey(str(args[1])))
  } else if (name === 'XAUTOCLAIM') {
    m.entries(items?.[1], plan.forKey(str(args[1])))
  } else if (name === 'XREAD' || name === 'XREADGROUP') {
    // RESP2: [[key, entries]…]; RESP3: a map key → entries
    if (!items) return
    if (node.type === 0x25) for (let i = 0; i + 1 < items.length; i += 2) m.entries(items[i + 1], plan.forKey(str(nodeText(items[i]!))))
    else for (const s of items) if (s.items) m.entries(s.items[1], plan.forKey(str(nodeText(s.items[0]!))))
  } else if (POPS.has(name)) {
    const km = items?.[0] ? plan.forKey(str(nodeText(items[0]))) : undefined
    if (km) items!.slice(1).forEach(x => m.replace(x, km))
  } else if (MPOPS.has(name)) {
    const km = items?.[0] ? plan.forKey(str(nodeText(items[0]))) : undefined
    if (km && items![1]) m.replace(items![1], km)
  } else if (name === 'MGET') {
    items?.forEach((item, i) => {
      const km = plan.forKey(str(args[i + 1]))
      if (km) m.replace(item, km)
    })
  } else if (name === 'HGET') {
    const fm = plan.forField(str(args[2])) ?? plan.forKey(str(args[1]))
    if (fm) m.replace(node, fm)
  } else if (name === 'HMGET' || name === 'HGETDEL' || name === 'HGETEX') {
    // HMGET key f…; HGETDEL / HGETEX key … FIELDS n f…
    const km = plan.forKey(str(args[1]))
    let first = 2
    if (name !== 'HMGET') {
      const at = args.findIndex((a, i) => i > 1 && str(a).toUpperCase() === 'FIELDS')
      if (at < 0) return km ? m.replace(node, km) : undefined
      first = at + 2
    }
    items?.forEach((item, i) => {
      const fm = plan.forField(str(args[i + first])) ?? km
      if (fm) m.replace(item, fm)
    })
  } else if (name === 'HGETALL') {
    if (items) m.pairs(items, plan.forKey(str(args[1])))
  } else if (name === 'FT.TAGVALS') {
    const fm = plan.forField(str(args[2]).replace(/^@/, ''))
    if (fm) m.replace(node, fm)
  } else if (FIELD_LISTS.has(name)) {
    searchReply(node, ctx, m)
  }
}

/**
 * FT.SEARCH RESP2: [total, id, [field, value…], id, [field, value…]…]; FT.AGGREGATE: [n, [field,
 * value…]…]; RESP3: maps with results [{id, extra_attributes: {…}}…]. Fields by name (RESP3 maps
 * by maps()); a document whose key is masked has every value masked.
 */
function searchReply(node: RespNode, ctx: MaskContext, m: Masker): void {
  const plan = m.plan
  const items = node.items ?? []
  if (ctx.name === 'FT.GET' || ctx.name === 'FT.MGET') {
    // FT.GET idx doc → [field, value…]; FT.MGET idx doc… → [[field, value…]…]
    if (ctx.name === 'FT.GET') m.pairs(items, plan.forKey(str(ctx.args[2])))
    else items.forEach((doc, i) => doc.items && m.pairs(doc.items, plan.forKey(str(ctx.args[i + 2]))))
    return
  }
  if (node.type === 0x25) {
    for (let i = 0; i + 1 < items.length; i += 2) {
      if (str(nodeText(items[i]!)) !== 'results') continue
      for (const doc of items[i + 1]!.items ?? []) {
        const d = doc.items ?? []
        let km: MaskMethod | undefined
        for (let j = 0; j + 1 < d.length; j += 2) if (str(nodeText(d[j]!)) === 'id') km = plan.forKey(str(nodeText(d[j + 1]!)))
        if (!km) continue
        for (let j = 0; j + 1 < d.length; j += 2) {
          const k = str(nodeText(d[j]!))
          if (k === 'extra_attributes' || k === 'values') m.replace(d[j + 1]!, km)
        }
      }
    }
    return
  }
  let km: MaskMethod | undefined
  const walk = (n: RespNode): void => {
    for (const item of n.items ?? []) {
      if (item.items && item.type !== 0x25) {
        if (item.items.length % 2 === 0 && item.items.every((x, i) => i % 2 === 1 || nodeText(x))) {
          m.pairs(item.items, km)
          km = undefined
        } else walk(item)
      } else if (ctx.name === 'FT.SEARCH' && item.type === 0x24) {
        // a document id: its fields follow (after a score or payload, which match no key rule)
        km = plan.forKey(str(nodeText(item))) ?? km
      }
    }
  }
  walk(node)
}
