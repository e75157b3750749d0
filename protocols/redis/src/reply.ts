// Decodes one framed reply into a tree and encodes it back. Only used when a mask applies to a
// reply: untouched replies never get here. Scalars keep their original line so that re-encoding an
// unchanged value gives the same bytes.
import { RespProtocolError, findCRLF, parseInteger } from './byte-queue.ts'

export interface RespNode {
  /** RESP type byte */
  type: number
  /** header or scalar line, without the type byte and CRLF (simple types, aggregate counts) */
  line?: Buffer
  /** bulk payload ('$', '!', '='); null for a null bulk */
  data?: Buffer | null
  /** aggregate children; maps and attributes hold key, value, key, value… ; null for a null array */
  items?: RespNode[] | null
  /** an attribute ('|' map) that preceded this value */
  attribute?: RespNode
  /** set by masking: the node was replaced */
  changed?: boolean
}

export function decodeReply(raw: Buffer): RespNode {
  const [node, end] = decodeAt(raw, 0)
  if (end !== raw.length) throw new RespProtocolError('trailing bytes after reply')
  return node
}

function decodeAt(buf: Buffer, at: number): [RespNode, number] {
  let attribute: RespNode | undefined
  if (buf[at] === 0x7c /* '|' */) {
    // decoded like a map, so that masking reaches what it carries
    const eol = findCRLF(buf, at + 1, buf.length)
    if (eol === -1) throw new RespProtocolError('truncated reply')
    const n = parseInteger(buf, at + 1, eol)
    let pos = eol + 2
    const items: RespNode[] = []
    for (let i = 0; i < 2 * n; i++) {
      const [child, next] = decodeAt(buf, pos)
      items.push(child)
      pos = next
    }
    attribute = { type: 0x7c, items }
    at = pos
  }
  const type = buf[at]!
  const eol = findCRLF(buf, at + 1, buf.length)
  if (eol === -1) throw new RespProtocolError('truncated reply')
  const line = buf.subarray(at + 1, eol)
  let node: RespNode
  let end: number
  switch (type) {
    case 0x24: // '$'
    case 0x21: // '!'
    case 0x3d: { // '='
      const len = parseInteger(buf, at + 1, eol)
      node = len < 0 ? { type, data: null } : { type, data: buf.subarray(eol + 2, eol + 2 + len) }
      end = len < 0 ? eol + 2 : eol + 2 + len + 2
      break
    }
    case 0x2a: // '*'
    case 0x7e: // '~'
    case 0x3e: // '>'
    case 0x25: { // '%'
      const n = parseInteger(buf, at + 1, eol)
      end = eol + 2
      if (n < 0) {
        node = { type, items: null }
        break
      }
      const items: RespNode[] = []
      const count = type === 0x25 ? 2 * n : n
      for (let i = 0; i < count; i++) {
        const [child, next] = decodeAt(buf, end)
        items.push(child)
        end = next
      }
      node = { type, items }
      break
    }
    default:
      node = { type, line }
      end = eol + 2
  }
  if (attribute) node.attribute = attribute
  return [node, end]
}

const CRLF = Buffer.from('\r\n')

export function encodeReply(node: RespNode): Buffer {
  const parts: Buffer[] = []
  encodeInto(node, parts)
  return Buffer.concat(parts)
}

function encodeInto(node: RespNode, parts: Buffer[]): void {
  if (node.attribute) encodeInto(node.attribute, parts)
  const t = String.fromCharCode(node.type)
  if (node.data !== undefined) {
    if (node.data === null) parts.push(Buffer.from(`${t}-1\r\n`))
    else parts.push(Buffer.from(`${t}${node.data.length}\r\n`), node.data, CRLF)
  } else if (node.items !== undefined) {
    if (node.items === null) parts.push(Buffer.from(`${t}-1\r\n`))
    else {
      const n = node.type === 0x25 || node.type === 0x7c ? node.items.length / 2 : node.items.length
      parts.push(Buffer.from(`${t}${n}\r\n`))
      for (const item of node.items) encodeInto(item, parts)
    }
  } else {
    parts.push(Buffer.from(t), node.line ?? Buffer.alloc(0), CRLF)
  }
}

/** the text of a string-like node (bulk, simple, verbatim without its 'txt:' prefix) */
export function nodeText(node: RespNode): Buffer | undefined {
  if (node.type === 0x24 || node.type === 0x2b) return node.type === 0x24 ? (node.data ?? undefined) : node.line
  if (node.type === 0x3d && node.data) return node.data.subarray(4)
  return undefined
}

/** replaces a node in place with a bulk string, or a null (RESP2 nil bulk / RESP3 null) */
export function setNodeValue(node: RespNode, value: string | null, resp: number): void {
  const data = value === null ? null : Buffer.from(value, 'utf8')
  if (node.type === 0x3d && data) {
    node.data = Buffer.concat([node.data?.subarray(0, 4) ?? Buffer.from('txt:'), data])
  } else if (data === null && resp >= 3) {
    node.type = 0x5f
    node.line = Buffer.alloc(0)
    delete node.data
    delete node.items
  } else {
    node.type = 0x24
    node.data = data
    delete node.line
    delete node.items
  }
  node.changed = true
}

/** plain values of a decoded reply: strings for text, numbers for integers, arrays for aggregates */
export function plainValue(node: RespNode): unknown {
  if (node.items !== undefined) return node.items === null ? null : node.items.map(plainValue)
  if (node.data !== undefined) return node.data === null ? null : node.data.toString('utf8')
  if (node.type === 0x3a) return Number(node.line!.toString('latin1'))
  if (node.type === 0x5f) return null
  return node.line!.toString('utf8')
}
