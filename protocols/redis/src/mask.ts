// Masking of replies. Runs only when the session's mask plan is not empty, and decodes a reply only
// when a rule could touch it: hash fields by name (HGET/HMGET/HGETALL, FT.SEARCH/FT.AGGREGATE field
// lists, RESP3 maps), values by key glob (GET/MGET, hashes, vector sets), detectors on text.
// Key and field rules replace a whole value; detectors only ever rewrite valid UTF-8 text, so binary
// values (FLOAT32 vectors, serialized blobs) are never corrupted.
import { isUtf8 } from 'node:buffer'
import type { MaskMethod, MaskPlan } from '@portcullis/core'
import { decodeReply, encodeReply, nodeText, setNodeValue, type RespNode } from './reply.ts'

export interface MaskContext {
  /** upper-case command name, e.g. 'HGETALL' */
  name: string
  args: Buffer[]
}

const KEY_VALUE = new Set(['GET', 'GETEX', 'GETDEL', 'GETSET', 'GETRANGE', 'SUBSTR', 'SET', 'LINDEX', 'LPOP', 'RPOP', 'LRANGE', 'SMEMBERS', 'HVALS', 'HRANDFIELD'])
const VECTOR_SET = new Set(['VSIM', 'VEMB', 'VRANDMEMBER', 'VLINKS', 'VGETATTR'])
const FIELD_LISTS = new Set(['FT.SEARCH', 'FT.AGGREGATE', 'FT.GET', 'FT.MGET', 'FT.CURSOR'])

const str = (b: Buffer | undefined): string => (b ? b.toString('utf8') : '')

class Masker {
  masked = 0
  constructor(readonly plan: MaskPlan, readonly resp: number) {}

  replace(node: RespNode, method: MaskMethod): void {
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
    if (node.items) {
      for (const item of node.items) this.detect(item)
      return
    }
    if (node.changed) return
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
      const m = (name ? this.plan.forField(str(name)) : undefined) ?? fallback
      if (m) this.replace(items[i + 1]!, m)
    }
  }

  /** RESP3 maps anywhere in a reply */
  maps(node: RespNode): void {
    if (!node.items) return
    if (node.type === 0x25) this.pairs(node.items, undefined)
    for (const item of node.items) this.maps(item)
  }
}

/** does any rule possibly apply to this reply? cheap checks only */
function mayApply(plan: MaskPlan, ctx: MaskContext, type: number): boolean {
  if (plan.empty) return false
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
  if (!mayApply(plan, ctx, type)) return { raw, masked: 0 }
  const root = decodeReply(raw)
  const m = new Masker(plan, resp)
  applyTo(root, ctx, m)
  m.maps(root)
  m.detect(root)
  return m.masked > 0 ? { raw: encodeReply(root), masked: m.masked } : { raw, masked: 0 }
}

/** an EXEC reply: each element answers one queued command */
export function maskExecReply(raw: Buffer, type: number, queued: MaskContext[], plan: MaskPlan, resp: number): { raw: Buffer; masked: number } {
  if (plan.empty || type !== 0x2a) return { raw, masked: 0 }
  const root = decodeReply(raw)
  const m = new Masker(plan, resp)
  root.items?.forEach((item, i) => {
    if (queued[i]) applyTo(item, queued[i], m)
  })
  m.maps(root)
  m.detect(root)
  return m.masked > 0 ? { raw: encodeReply(root), masked: m.masked } : { raw, masked: 0 }
}

function applyTo(node: RespNode, ctx: MaskContext, m: Masker): void {
  const { name, args } = ctx
  const plan = m.plan
  if (node.type === 0x2d || node.type === 0x21) return
  if (KEY_VALUE.has(name) || VECTOR_SET.has(name)) {
    const km = plan.forKey(str(args[1]))
    if (km) m.replace(node, km)
  } else if (name === 'MGET') {
    node.items?.forEach((item, i) => {
      const km = plan.forKey(str(args[i + 1]))
      if (km) m.replace(item, km)
    })
  } else if (name === 'HGET') {
    const fm = plan.forField(str(args[2])) ?? plan.forKey(str(args[1]))
    if (fm) m.replace(node, fm)
  } else if (name === 'HMGET') {
    const km = plan.forKey(str(args[1]))
    node.items?.forEach((item, i) => {
      const fm = plan.forField(str(args[i + 2])) ?? km
      if (fm) m.replace(item, fm)
    })
  } else if (name === 'HGETALL') {
    if (node.items) m.pairs(node.items, plan.forKey(str(args[1])))
  } else if (FIELD_LISTS.has(name)) {
    // FT.SEARCH: [total, id, [field, value…], id, [field, value…]…]; FT.AGGREGATE: [n, [field, value…]…]
    const walk = (n: RespNode): void => {
      for (const item of n.items ?? []) {
        if (item.items && item.type !== 0x25) {
          if (item.items.length % 2 === 0 && item.items.every((x, i) => i % 2 === 1 || nodeText(x))) m.pairs(item.items, undefined)
          else walk(item)
        }
      }
    }
    walk(node)
  }
}
