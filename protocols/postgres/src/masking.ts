// Result masking on the wire. A RowDescription becomes a RowMask (one entry per column, resolved
// through the catalog); DataRows of a result with no masked column pass as their original bytes.
import type { MaskMethod, MaskPlan } from '@portcullis/core/types'
import { PortcullisError } from '@portcullis/core/errors'
import type { FieldDescription, NoticeFields } from './backend.ts'
import type { Catalog } from './catalog.ts'
import type { Outbox } from './outbox.ts'
import type { Value } from './classify/lineage.ts'
import type { RowLineage } from './column-lineage.ts'
import { maskNodeOf, maskText, type MaskNode } from './structured.ts'
import { stricter } from '@portcullis/core/masking/methods'

/** types whose text and binary forms are both the UTF-8 text itself (jsonb binary: a version byte first) */
const TEXT_LIKE = new Set([25, 1043, 1042, 19, 18, 114, 142, 705, 3802])
const JSONB = 3802
const JSON_OID = 114

// Scalar types whose text form holds no free text: detectors skip them. Every other type is scanned
// in its text form (arrays, records, JSON, enums, domains, user types), since any may hold text.
const NO_FREE_TEXT = new Set([16, 17, 20, 21, 23, 26, 27, 28, 29, 650, 700, 701, 774, 790, 829, 869, 1082, 1083, 1114, 1184, 1186, 1266, 1560, 1562, 1700, 2950, 3220, 1000, 1005, 1007, 1016, 1021, 1022, 1231])
/** pgvector's types: numbers only, and long (scanning them would cost much for nothing) */
const VECTOR_TYPES = new Set(['vector', 'halfvec', 'sparsevec'])

export interface RowMask {
  /** per column: the method for a column rule, or undefined */
  methods: (MaskMethod | undefined)[]
  /** per column: run detectors on this value */
  scan: boolean[]
  textLike: boolean[]
  binary: boolean[]
  jsonb: boolean[]
  /** per column: json or jsonb, whose replacement must stay JSON (a string) */
  json: boolean[]
  /** per column: the replacement when the method ignores the value ('redact', 'null'): no decoding */
  fixed: (Buffer | null | undefined)[]
  /** per column: a record / array / JSON value whose masked parts are masked inside it */
  parts: (MaskNode | undefined)[]
}

/** what `method` makes of any value, when that does not depend on the value; else undefined */
function fixedReplacement(plan: MaskPlan, method: MaskMethod | undefined): Buffer | null | undefined {
  if (method !== 'redact' && method !== 'null') return undefined
  const a = plan.apply(method, '')
  if (a !== plan.apply(method, 'a@b.example')) return undefined
  return a === null ? null : Buffer.from(a)
}

export function columnMethod(plan: MaskPlan, catalog: Catalog, f: FieldDescription): MaskMethod | undefined {
  if (f.tableOid === 0) return plan.forColumn(undefined, undefined, f.name)
  const id = catalog.column(f.tableOid, f.attributeNumber)
  // unknown identity: only a bare-name rule can apply
  if (!id) return plan.forColumn(undefined, undefined, f.name)
  let m = plan.forColumn(id.schema, id.table, id.column)
  for (const b of id.base) m ??= plan.forColumn(b.schema, b.table, b.column)
  // a view that renames or computes from a masked column: fail closed on its unmatched columns
  if (m === undefined && id.base.length === 0 && id.viewOpaque) m = 'null'
  return m
}

/** tables a RowDescription needs resolved before its rows can be masked */
export function unresolvedTables(fields: FieldDescription[], catalog: Catalog): number[] {
  const out: number[] = []
  for (const f of fields) {
    if (f.tableOid === 0) continue
    if (!catalog.has(f.tableOid)) out.push(f.tableOid)
    // a column added since the relation was cached: look the relation up again
    else if (f.attributeNumber > 0 && !catalog.column(f.tableOid, f.attributeNumber)) {
      catalog.forget(f.tableOid)
      out.push(f.tableOid)
    }
  }
  return out
}

/** types a RowDescription needs named before detectors can skip them (user types: pgvector…) */
export function unresolvedTypes(fields: FieldDescription[], plan: MaskPlan, catalog: Catalog): number[] {
  if (!plan.hasDetectors) return []
  const out: number[] = []
  for (const f of fields) if (f.typeOid >= 16384 && !catalog.hasType(f.typeOid)) out.push(f.typeOid)
  return out
}

function scannable(f: FieldDescription, catalog: Catalog): boolean {
  if (NO_FREE_TEXT.has(f.typeOid)) return false
  if (f.typeOid >= 16384 && VECTOR_TYPES.has(catalog.typeName(f.typeOid) ?? '')) return false
  return true
}

/** the lineage of output column i when it can be told; 'unknown' when the result's shape is not known */
function lineageAt(lineage: RowLineage, width: number, i: number): Value | 'unknown' {
  // a text of several statements: the RowDescription is one of theirs; which one is not said, so
  // every candidate of that width counts (the strictest wins)
  const fits = lineage.results.filter(r => !r.copy && r.columns && r.columns.length === width)
  if (fits.length === 0) return 'unknown'
  if (fits.length === 1) return fits[0]!.columns![i]!
  const sources = new Map<string, Value['sources'][number]>()
  for (const r of fits) for (const c of r.columns![i]!.sources) sources.set(`${c.schema}.${c.table}.${c.column}`, c)
  return { sources: [...sources.values()] }
}

/**
 * undefined when no column of this result is masked nor scanned. With `lineage` (the statement's,
 * column-lineage.ts) a column computed from a masked column is masked too: as a whole with the
 * strictest method of its sources, or inside a record / array / JSON value where the parts are known.
 */
export function buildRowMask(fields: FieldDescription[], plan: MaskPlan, catalog: Catalog, lineage?: RowLineage): RowMask | undefined {
  if (plan.empty) return undefined
  const methods = fields.map(f => columnMethod(plan, catalog, f))
  const parts: (MaskNode | undefined)[] = fields.map(() => undefined)
  if (lineage && lineage.maskedRead.length > 0) {
    fields.forEach((f, i) => {
      const v = lineageAt(lineage, fields.length, i)
      if (v === 'unknown') {
        // the result is not the shape the parse said (a relation changed under the cache): a
        // column the RowDescription does not name is hidden
        if (f.tableOid === 0) methods[i] = stricter(methods[i], 'null')
        if (i === 0) catalog.forgetRelationNames()
        return
      }
      // a plain column keeps the RowDescription's identity (which sees through views)
      if (v.direct && f.tableOid !== 0) return
      const node = maskNodeOf(v, plan)
      if (!node) return
      if (methods[i] !== undefined || !(node.record || node.array || node.json)) methods[i] = stricter(methods[i], node.method)
      // a derived record or array in binary format: its parts cannot be told apart here, so it
      // becomes NULL (text, json and jsonb have their text as binary form, after a version byte)
      else if (f.format === 1 && !TEXT_LIKE.has(f.typeOid)) methods[i] = 'null'
      else parts[i] = node
    })
  }
  const textLike = fields.map(f => TEXT_LIKE.has(f.typeOid))
  const scan = fields.map((f, i) => plan.hasDetectors && methods[i] === undefined && scannable(f, catalog))
  if (!methods.some(m => m !== undefined) && !scan.some(Boolean) && !parts.some(Boolean)) return undefined
  return {
    methods,
    scan,
    textLike,
    binary: fields.map(f => f.format === 1),
    jsonb: fields.map(f => f.typeOid === JSONB),
    json: fields.map(f => f.typeOid === JSONB || f.typeOid === JSON_OID),
    // a JSON column's replacement is a JSON string: not one fixed text for every type
    fixed: methods.map((m, i) => (fields[i]!.typeOid === JSONB || fields[i]!.typeOid === JSON_OID ? undefined : fixedReplacement(plan, m))),
    parts,
  }
}

/** the last replacement's bytes: a column rule gives most rows the same text ('[REDACTED]') */
let lastText = ''
let lastBytes = Buffer.alloc(0)

function textBytes(prefix: Buffer | undefined, text: string): Buffer {
  if (prefix) return Buffer.concat([prefix, Buffer.from(text)])
  if (text !== lastText) {
    lastText = text
    lastBytes = Buffer.from(text)
  }
  return lastBytes
}

/** the masked bytes of the value raw[start, end): null for SQL NULL, undefined when unchanged */
function maskValue(mask: RowMask, plan: MaskPlan, i: number, raw: Buffer, start: number, end: number): Buffer | null | undefined {
  const method = mask.methods[i]
  const prefix = mask.binary[i] && mask.jsonb[i] ? 1 : 0
  if (method !== undefined) {
    // a non-text value (number, vector, bytea…) cannot hold a replacement string: it becomes NULL
    if (!mask.textLike[i]) return null
    const fixed = mask.fixed[i]
    if (fixed !== undefined && prefix === 0) return fixed
    const out = plan.apply(method, raw.toString('utf8', start + prefix, end))
    if (out === null) return null
    // a json value masked whole stays JSON: the replacement as a JSON string
    return textBytes(prefix ? raw.subarray(start, start + 1) : undefined, mask.json[i] ? JSON.stringify(out) : out)
  }
  const node = mask.parts[i]
  if (node) {
    let out = maskText(node, raw.toString('utf8', start + prefix, end), plan)
    if (out === null) return null
    if (mask.scan[i]) out = plan.scan(out).text
    return textBytes(prefix ? raw.subarray(start, start + 1) : undefined, out)
  }
  if (mask.scan[i]) {
    const r = plan.scan(raw.toString('utf8', start + prefix, end))
    if (r.count > 0) {
      // a binary value other than text (an array, a record) cannot take the replacement in place:
      // it becomes NULL
      if (mask.binary[i] && !mask.textLike[i]) return null
      return textBytes(prefix ? raw.subarray(start, start + 1) : undefined, r.text)
    }
  }
  return undefined
}

/**
 * Buffer#copy and TypedArray#set cost a native call and a view: a short run is cheaper byte by byte.
 * Where they cross over, measured on the bench's rows (a 64-byte payload after the masked column):
 * 64 bytes (a loop up to 160 cost ~25 ns a row more; `set` for every run ~30 ns more). The view is a
 * plain Uint8Array: Buffer#subarray makes a FastBuffer, which cost more in the gateway's profile
 */
function copyBytes(src: Uint8Array, from: number, to: number, dst: Uint8Array, at: number): void {
  if (to - from > 64) {
    dst.set(new Uint8Array(src.buffer, src.byteOffset + from, to - from), at)
    return
  }
  for (let k = from; k < to; k++) dst[at++] = src[k]
}

/** replacements of the row being masked, by column (reused: one row is masked at a time) */
const replaced: (Buffer | null | undefined)[] = []

/**
 * Masks the DataRow all[start, end) into `out` and returns how many values it masked. A row with
 * nothing to change is queued as the bytes it came in; a changed row is built in place in out's
 * batch buffer (no Buffer per row). Only the columns a rule or a detector looks at are decoded; the
 * others are copied as bytes.
 */
export function maskDataRowTo(all: Buffer, start: number, end: number, mask: RowMask, plan: MaskPlan, out: Outbox): number {
  if (end - start < 7) throw new PortcullisError('PROTOCOL_ERROR', 'DataRow is shorter than its fields')
  const n = (all[start + 5] << 8) | all[start + 6]
  let masked = 0
  let last = 0
  let size = end - start
  let off = start + 7
  for (let i = 0; i < n; i++) {
    replaced[i] = undefined
    if (off + 4 > end) throw new PortcullisError('PROTOCOL_ERROR', 'DataRow value runs past the message')
    const len = int32(all, off)
    off += 4
    if (len < 0) continue
    if (off + len > end) throw new PortcullisError('PROTOCOL_ERROR', 'DataRow value runs past the message')
    if (mask.methods[i] !== undefined || mask.scan[i] || mask.parts[i] !== undefined) {
      const v = maskValue(mask, plan, i, all, off, off + len)
      if (v !== undefined) {
        replaced[i] = v
        size += (v === null ? 0 : v.length) - len
        masked++
        last = i
      }
    }
    off += len
  }
  if (masked === 0) {
    out.addRange(all, start, end)
    return 0
  }
  const buf = out.reserve(size)
  const base = out.pos
  copyBytes(all, start, start + 7, buf, base)
  writeInt32(buf, base + 1, size - 1)
  let from = start + 7
  let to = base + 7
  // unchanged columns between two replaced ones are copied as one piece; after the last replaced
  // one, the rest of the message is (the first pass checked every length in it)
  let keep = from
  for (let i = 0; i <= last; i++) {
    const len = int32(all, from)
    const next = from + 4 + (len < 0 ? 0 : len)
    const v = replaced[i]
    if (v !== undefined) {
      copyBytes(all, keep, from, buf, to)
      to += from - keep
      if (v === null) {
        writeInt32(buf, to, -1)
        to += 4
      } else {
        writeInt32(buf, to, v.length)
        copyBytes(v, 0, v.length, buf, to + 4)
        to += 4 + v.length
      }
      replaced[i] = undefined
      keep = next
    }
    from = next
  }
  copyBytes(all, keep, end, buf, to)
  out.commit(size)
  return masked
}

// Buffer#readInt32BE / writeInt32BE check their arguments on every call: ~100 ns of a masked row's
// ~330 went to them and to copying its payload byte by byte. The bounds are checked above, once
function int32(b: Uint8Array, at: number): number {
  return (b[at] << 24) | (b[at + 1] << 16) | (b[at + 2] << 8) | b[at + 3]
}

function writeInt32(b: Uint8Array, at: number, v: number): void {
  b[at] = v >>> 24
  b[at + 1] = v >>> 16
  b[at + 2] = v >>> 8
  b[at + 3] = v
}

/**
 * ErrorResponse / NoticeResponse fields echo values: `Key (email)=(a@b.c) already exists`,
 * `Failing row contains (…)`. Column rules apply to Key details; detectors to the free text.
 */
export function maskNoticeFields(fields: NoticeFields, plan: MaskPlan): number {
  if (plan.empty) return 0
  let count = 0
  const detail = fields.D
  if (detail) {
    const key = /^Key \((.+?)\)=\((.*)\)( .*)?$/s.exec(detail)
    if (key) {
      const cols = key[1].split(/,\s*/)
      const methods = cols.map(c => plan.forColumn(fields.s, fields.t, c.replace(/^"|"$/g, '')))
      const method = methods.find(m => m !== undefined)
      if (method) {
        fields.D = `Key (${key[1]})=(${plan.apply(method, key[2]) ?? 'NULL'})${key[3] ?? ''}`
        count++
      }
    }
    // a whole row, values unlabelled: which of them a rule covers cannot be told, so with any
    // masking in force the row is hidden (over-masking an error detail costs nothing)
    if (/^Failing row contains /.test(fields.D)) {
      fields.D = 'Failing row contains (masked)'
      count++
    }
  }
  if (plan.hasDetectors) {
    for (const k of ['M', 'D', 'H', 'W']) {
      const v = fields[k]
      if (!v) continue
      const r = plan.scan(v)
      if (r.count > 0) {
        fields[k] = r.text
        count += r.count
      }
    }
  }
  return count
}

/**
 * COPY … TO STDOUT text format: one CopyData per row, tab-separated, backslash escapes. Column rules
 * apply by position when the columns are known; detectors scan every field.
 */
export function maskCopyRow(data: Buffer, methods: (MaskMethod | undefined)[] | undefined, plan: MaskPlan): { data: Buffer; masked: number } {
  const line = data.toString('utf8')
  const eol = line.endsWith('\n') ? '\n' : ''
  const fields = (eol ? line.slice(0, -1) : line).split('\t')
  let masked = 0
  for (let i = 0; i < fields.length; i++) {
    if (fields[i] === '\\N') continue
    const m = methods?.[i]
    if (m !== undefined) {
      const out = plan.apply(m, unescapeCopy(fields[i]))
      fields[i] = out === null ? '\\N' : escapeCopy(out)
      masked++
    } else if (plan.hasDetectors) {
      const r = plan.scan(unescapeCopy(fields[i]))
      if (r.count > 0) {
        fields[i] = escapeCopy(r.text)
        masked++
      }
    }
  }
  return masked === 0 ? { data, masked } : { data: Buffer.from(fields.join('\t') + eol), masked }
}

function unescapeCopy(s: string): string {
  return s.includes('\\') ? s.replace(/\\(.)/g, (_, c: string) => ({ t: '\t', n: '\n', r: '\r', b: '\b', f: '\f', v: '\v' })[c] ?? c) : s
}

function escapeCopy(s: string): string {
  return s.replace(/[\\\t\n\r]/g, c => ({ '\\': '\\\\', '\t': '\\t', '\n': '\\n', '\r': '\\r' })[c]!)
}
