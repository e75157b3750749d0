// JSON-RPC 2.0 messages as the MCP proxy reads them. A client's message is read strictly: a parser
// keeps the last of two equal keys, some servers the first, so `{"name":"search","name":"delete"}`
// would be classified as one tool and run as another — a message with a repeated key anywhere is
// refused, never guessed at.

export type JsonRpcId = string | number

export type Message =
  | { kind: 'request'; id: JsonRpcId; method: string; params: Record<string, unknown> | undefined }
  | { kind: 'notification'; method: string; params: Record<string, unknown> | undefined }
  | { kind: 'response'; id: JsonRpcId; result?: unknown; error?: unknown }

/** how deep a client's message may nest before it is refused (the check below is recursive) */
const MAX_DEPTH = 128

/** the first repeated object key in a JSON text, or undefined; throws on text that is not JSON */
export function repeatedKey(text: string): string | undefined {
  const s = { t: text, p: 0 }
  const found = value(s, 0)
  ws(s)
  if (s.p !== text.length) throw new SyntaxError('trailing bytes after the JSON value')
  return found
}

interface Cursor {
  t: string
  p: number
}

function ws(s: Cursor): void {
  for (let c = s.t.charCodeAt(s.p); c === 32 || c === 10 || c === 13 || c === 9; c = s.t.charCodeAt(++s.p));
}

/** the string at s.p (a quote), decoded; s.p after its closing quote */
function str(s: Cursor): string {
  const start = s.p
  let p = start + 1
  let escaped = false
  for (;;) {
    const c = s.t.charCodeAt(p)
    if (Number.isNaN(c)) throw new SyntaxError('unterminated string')
    if (c === 34) break
    if (c === 92) {
      escaped = true
      p += 2
    } else p++
  }
  s.p = p + 1
  const raw = s.t.slice(start, s.p)
  // "a" and "\u0061" are the same key
  return escaped ? (JSON.parse(raw) as string) : raw.slice(1, -1)
}

function value(s: Cursor, depth: number): string | undefined {
  if (depth > MAX_DEPTH) throw new SyntaxError('JSON nested too deeply')
  ws(s)
  const c = s.t.charCodeAt(s.p)
  if (c === 34) {
    str(s)
    return undefined
  }
  if (c === 123 /* { */) {
    s.p++
    const keys = new Set<string>()
    let found: string | undefined
    ws(s)
    if (s.t.charCodeAt(s.p) === 125) {
      s.p++
      return undefined
    }
    for (;;) {
      ws(s)
      if (s.t.charCodeAt(s.p) !== 34) throw new SyntaxError('object key expected')
      const k = str(s)
      if (keys.has(k)) found ??= k
      keys.add(k)
      ws(s)
      if (s.t.charCodeAt(s.p++) !== 58) throw new SyntaxError('colon expected')
      // evaluated first: `found ??= value()` would skip the value once a repeat is found
      const inner = value(s, depth + 1)
      found ??= inner
      ws(s)
      const d = s.t.charCodeAt(s.p++)
      if (d === 125) return found
      if (d !== 44) throw new SyntaxError('comma expected')
    }
  }
  if (c === 91 /* [ */) {
    s.p++
    let found: string | undefined
    ws(s)
    if (s.t.charCodeAt(s.p) === 93) {
      s.p++
      return undefined
    }
    for (;;) {
      const inner = value(s, depth + 1)
      found ??= inner
      ws(s)
      const d = s.t.charCodeAt(s.p++)
      if (d === 93) return found
      if (d !== 44) throw new SyntaxError('comma expected')
    }
  }
  // a number or a literal: JSON.parse (run before this) has vouched for its spelling
  const start = s.p
  for (let d = s.t.charCodeAt(s.p); s.p < s.t.length && d !== 44 && d !== 93 && d !== 125 && d !== 32 && d !== 10 && d !== 13 && d !== 9; d = s.t.charCodeAt(++s.p));
  if (s.p === start) throw new SyntaxError('value expected')
  return undefined
}

const isId = (v: unknown): v is JsonRpcId => typeof v === 'string' || (typeof v === 'number' && Number.isInteger(v))
const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)

/** one parsed JSON-RPC message, or why it is not one */
export function toMessage(v: unknown): Message | { invalid: string } {
  if (!isObject(v) || v.jsonrpc !== '2.0') return { invalid: 'not a JSON-RPC 2.0 message' }
  const params = v.params
  if (params !== undefined && !isObject(params)) return { invalid: 'params must be an object' }
  if (typeof v.method === 'string') {
    if (v.id === undefined) return { kind: 'notification', method: v.method, params }
    if (!isId(v.id)) return { invalid: 'id must be a string or an integer' }
    return { kind: 'request', id: v.id, method: v.method, params }
  }
  if (v.method !== undefined) return { invalid: 'method must be a string' }
  if (!isId(v.id)) return { invalid: 'id must be a string or an integer' }
  if (('result' in v) === ('error' in v)) return { invalid: 'a response has either result or error' }
  return { kind: 'response', id: v.id, result: v.result, error: v.error }
}

/** a JSON-RPC error message as text */
export function rpcError(id: JsonRpcId | null, code: number, message: string, data?: Record<string, unknown>): string {
  return JSON.stringify({ jsonrpc: '2.0', id, error: data ? { code, message, data } : { code, message } })
}

// the proxy's own error codes (JSON-RPC leaves -32000…-32099 to implementations)
export const RPC = {
  INVALID_REQUEST: -32600,
  METHOD_NOT_FOUND: -32601,
  /** refused by policy (data.rule, data.approvalId when an approval was asked for) */
  POLICY_BLOCKED: -32001,
  /** defer mode: held for approval (data.approvalId); send the same call again once approved */
  APPROVAL_PENDING: -32002,
  /** the tool's definition changed since it was pinned; blocked until the change is approved */
  TOOL_CHANGED: -32003,
  /** a server-initiated request the gateway does not pass to the client */
  SERVER_REQUEST_REFUSED: -32004,
} as const
