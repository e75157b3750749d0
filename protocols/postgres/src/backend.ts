// Serializers for messages the gateway itself answers with, and parsers for the backend messages
// it must look into (RowDescription and DataRow for masking, ErrorResponse fields, CommandComplete
// row counts, authentication requests from the upstream).
import { BufferReader } from './buffer-reader.ts'
import { BufferWriter } from './buffer-writer.ts'

export type TransactionStatus = 'I' | 'T' | 'E'

export const AUTHENTICATION_OK = Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 0])

export function serializeAuthenticationCleartextPassword(): Buffer {
  return new BufferWriter().int32(3).message('R')
}

export function serializeReadyForQuery(status: TransactionStatus): Buffer {
  return new BufferWriter().int8(status.charCodeAt(0)).message('Z')
}

export function serializeBackendKeyData(processId: number, secretKey: number): Buffer {
  return new BufferWriter().int32(processId).int32(secretKey).message('K')
}

export function serializeParameterStatus(name: string, value: string): Buffer {
  return new BufferWriter().cstring(name).cstring(value).message('S')
}

export function serializeNegotiateProtocolVersion(minor: number, unrecognized: string[]): Buffer {
  const w = new BufferWriter().int32(minor).int32(unrecognized.length)
  for (const o of unrecognized) w.cstring(o)
  return w.message('v')
}

/** ErrorResponse / NoticeResponse fields by their one-letter codes (S, V, C, M, D, H, P, …) */
export type NoticeFields = Record<string, string>

function serializeFields(code: 'E' | 'N', fields: NoticeFields): Buffer {
  const w = new BufferWriter()
  for (const [k, v] of Object.entries(fields)) w.int8(k.charCodeAt(0)).cstring(v)
  return w.int8(0).message(code)
}

export function serializeErrorResponse(severity: 'ERROR' | 'FATAL', sqlstate: string, message: string, extra: NoticeFields = {}): Buffer {
  return serializeFields('E', { S: severity, V: severity, C: sqlstate, M: message, ...extra })
}

export function serializeNoticeResponse(message: string, extra: NoticeFields = {}): Buffer {
  return serializeFields('N', { S: 'NOTICE', V: 'NOTICE', C: '00000', M: message, ...extra })
}

export function serializeNoticeFields(code: 'E' | 'N', fields: NoticeFields): Buffer {
  return serializeFields(code, fields)
}

/** 'E' ErrorResponse / 'N' NoticeResponse body */
export function parseNoticeFields(reader: BufferReader): NoticeFields {
  const fields: NoticeFields = {}
  for (;;) {
    const code = reader.int8()
    if (code === 0) break
    fields[String.fromCharCode(code)] = reader.cstring()
  }
  return fields
}

export interface FieldDescription {
  name: string
  tableOid: number
  attributeNumber: number
  typeOid: number
  typeSize: number
  typeModifier: number
  format: number
}

/** 'T' RowDescription */
export function parseRowDescription(reader: BufferReader): FieldDescription[] {
  const n = reader.uint16()
  const fields: FieldDescription[] = new Array(n)
  for (let i = 0; i < n; i++) {
    fields[i] = {
      name: reader.cstring(),
      tableOid: reader.int32() >>> 0,
      attributeNumber: reader.int16(),
      typeOid: reader.int32() >>> 0,
      typeSize: reader.int16(),
      typeModifier: reader.int32(),
      format: reader.int16(),
    }
  }
  return fields
}

/** 'D' DataRow: column values as views; null for SQL NULL */
export function parseDataRow(reader: BufferReader): (Buffer | null)[] {
  const n = reader.uint16()
  const values: (Buffer | null)[] = new Array(n)
  for (let i = 0; i < n; i++) {
    const len = reader.int32()
    values[i] = len < 0 ? null : reader.bytes(len)
  }
  return values
}

export function serializeDataRow(values: (Buffer | null)[]): Buffer {
  let size = 2
  for (const v of values) size += 4 + (v ? v.length : 0)
  const out = Buffer.allocUnsafe(5 + size)
  out[0] = 0x44 // D
  out.writeInt32BE(4 + size, 1)
  out.writeInt16BE(values.length, 5)
  let off = 7
  for (const v of values) {
    if (v === null) {
      out.writeInt32BE(-1, off)
      off += 4
    } else {
      out.writeInt32BE(v.length, off)
      v.copy(out, off + 4)
      off += 4 + v.length
    }
  }
  return out
}

/** 'C' CommandComplete tag; rows from 'SELECT 5', 'INSERT 0 5', 'UPDATE 5', 'COPY 5'… */
export function commandTagRows(tag: string): number | undefined {
  const m = /(\d+)$/.exec(tag)
  return m ? Number(m[1]) : undefined
}

export interface AuthenticationRequest {
  type: number
  /** md5 salt, SASL mechanisms data, SASLContinue/Final data */
  data: Buffer
}

/** 'R' Authentication* */
export function parseAuthentication(reader: BufferReader): AuthenticationRequest {
  const type = reader.int32()
  return { type, data: reader.rest() }
}

export function parseBackendKeyData(reader: BufferReader): { processId: number; secretKey: number } {
  return { processId: reader.int32(), secretKey: reader.int32() }
}
