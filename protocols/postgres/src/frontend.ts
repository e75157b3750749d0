// Parsers for messages the client sends. Each takes a reader over the message body (after the
// code byte and length), and decodes only what a decision needs.
import { BufferReader } from './buffer-reader.ts'
import { BufferWriter } from './buffer-writer.ts'
import { PortcullisError } from '@portcullis/core/errors'
import { STARTUP_LIMIT } from './framer.ts'

export const SSL_REQUEST_CODE = 80877103
export const GSSENC_REQUEST_CODE = 80877104
export const CANCEL_REQUEST_CODE = 80877102
export const PROTOCOL_3_0 = 196608

export type StartupPacket =
  | { kind: 'ssl' }
  | { kind: 'gssenc' }
  | { kind: 'cancel'; processId: number; secretKey: number }
  | { kind: 'startup'; major: number; minor: number; parameters: Record<string, string> }

export function parseStartupPacket(reader: BufferReader): StartupPacket {
  const code = reader.int32()
  switch (code) {
    case SSL_REQUEST_CODE:
      return { kind: 'ssl' }
    case GSSENC_REQUEST_CODE:
      return { kind: 'gssenc' }
    case CANCEL_REQUEST_CODE:
      return { kind: 'cancel', processId: reader.int32(), secretKey: reader.int32() }
  }
  const major = code >>> 16
  const minor = code & 0xffff
  if (major !== 3) throw new PortcullisError('PROTOCOL_ERROR', `unsupported frontend protocol ${major}.${minor}: server supports 3.0`)
  const parameters: Record<string, string> = {}
  for (;;) {
    const name = reader.cstring()
    if (name === '') break
    parameters[name] = reader.cstring()
  }
  return { kind: 'startup', major, minor, parameters }
}

/** the first 8 bytes of a connection: is it Postgres? */
export function sniffStartup(first: Buffer): boolean | undefined {
  // a length no startup packet has (a Terminate sent first reads as 1476395008) is not Postgres:
  // decided at once, so the listener closes silently as Postgres does, without waiting for more
  if (first.length >= 4 && (first.readInt32BE(0) < 8 || first.readInt32BE(0) > STARTUP_LIMIT)) return false
  if (first.length < 8) return undefined
  const len = first.readInt32BE(0)
  const code = first.readInt32BE(4)
  if (code === SSL_REQUEST_CODE || code === GSSENC_REQUEST_CODE) return len === 8
  if (code === CANCEL_REQUEST_CODE) return len === 16
  return code >>> 16 === 3 && len >= 8 && len <= STARTUP_LIMIT
}

/** 'p' PasswordMessage (cleartext): the token */
export function parsePasswordMessage(reader: BufferReader): string {
  return reader.cstring()
}

/** 'Q' Query */
export function parseQueryMessage(reader: BufferReader): string {
  return reader.cstring()
}

export interface ParseMessage {
  name: string
  query: string
  paramTypes: number[]
}

/** 'P' Parse */
export function parseParseMessage(reader: BufferReader): ParseMessage {
  const name = reader.cstring()
  const query = reader.cstring()
  const n = reader.uint16()
  const paramTypes: number[] = []
  for (let i = 0; i < n; i++) paramTypes.push(reader.int32())
  return { name, query, paramTypes }
}

export interface BindMessage {
  portal: string
  statement: string
  paramFormats: number[]
  /** parameter values as views into the message; null for SQL NULL */
  params: (Buffer | null)[]
  resultFormats: number[]
}

/** 'B' Bind */
export function parseBindMessage(reader: BufferReader): BindMessage {
  const portal = reader.cstring()
  const statement = reader.cstring()
  const nf = reader.uint16()
  const paramFormats: number[] = []
  for (let i = 0; i < nf; i++) paramFormats.push(reader.int16())
  const np = reader.uint16()
  const params: (Buffer | null)[] = []
  for (let i = 0; i < np; i++) {
    const len = reader.int32()
    params.push(len < 0 ? null : reader.bytes(len))
  }
  const nr = reader.uint16()
  const resultFormats: number[] = []
  for (let i = 0; i < nr; i++) resultFormats.push(reader.int16())
  return { portal, statement, paramFormats, params, resultFormats }
}

/** 'E' Execute */
export function parseExecuteMessage(reader: BufferReader): { portal: string; maxRows: number } {
  return { portal: reader.cstring(), maxRows: reader.int32() }
}

/** 'D' Describe and 'C' Close: 'S' statement or 'P' portal, and its name */
export function parseDescribeMessage(reader: BufferReader): { kind: 'S' | 'P'; name: string } {
  const kind = String.fromCharCode(reader.int8())
  if (kind !== 'S' && kind !== 'P') throw new PortcullisError('PROTOCOL_ERROR', `invalid Describe/Close target '${kind}'`)
  return { kind, name: reader.cstring() }
}
export const parseCloseMessage = parseDescribeMessage

// Serializers the gateway needs as a client of the upstream.

export function serializeStartupMessage(parameters: Record<string, string>): Buffer {
  const w = new BufferWriter().int32(PROTOCOL_3_0)
  for (const [k, v] of Object.entries(parameters)) w.cstring(k).cstring(v)
  return w.int8(0).startup()
}

export function serializeSSLRequest(): Buffer {
  return new BufferWriter().int32(SSL_REQUEST_CODE).startup()
}

export function serializeCancelRequest(processId: number, secretKey: number): Buffer {
  return new BufferWriter().int32(CANCEL_REQUEST_CODE).int32(processId).int32(secretKey).startup()
}

export function serializePasswordMessage(password: string): Buffer {
  return new BufferWriter().cstring(password).message('p')
}

export function serializeSASLInitialResponse(mechanism: string, data: Buffer): Buffer {
  return new BufferWriter().cstring(mechanism).int32(data.length).bytes(data).message('p')
}

export function serializeSASLResponse(data: Buffer): Buffer {
  return new BufferWriter().bytes(data).message('p')
}

export function serializeQuery(sql: string): Buffer {
  return new BufferWriter().cstring(sql).message('Q')
}

export function serializeParse(name: string, query: string): Buffer {
  return new BufferWriter().cstring(name).cstring(query).int16(0).message('P')
}

export const TERMINATE = Buffer.from([0x58, 0, 0, 0, 4])
