// Just enough of the Postgres and RESP wire formats to show recorded responses to a person
// (formatTranscript). Defensive: anything unexpected ends the description, never throws.

const MAX_LINES = 50

/** Postgres backend messages → lines: columns, rows (text values), command tags, errors. */
export function describePostgresBackend(buf: Uint8Array): string[] {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength)
  const out: string[] = []
  let rows = 0
  let at = 0
  try {
    while (at + 5 <= b.length) {
      const code = b[at]
      const len = b.readUInt32BE(at + 1)
      const end = at + 1 + len
      if (len < 4 || end > b.length) break
      let p = at + 5
      switch (code) {
        case 0x54: { // 'T' RowDescription
          const n = b.readUInt16BE(p)
          p += 2
          const names: string[] = []
          for (let i = 0; i < n; i++) {
            const z = b.indexOf(0, p)
            names.push(b.toString('utf8', p, z))
            p = z + 1 + 18
          }
          out.push(`columns: ${names.join(' | ')}`)
          break
        }
        case 0x44: { // 'D' DataRow
          rows++
          if (rows > MAX_LINES) break
          const n = b.readUInt16BE(p)
          p += 2
          const values: string[] = []
          for (let i = 0; i < n; i++) {
            const l = b.readInt32BE(p)
            p += 4
            if (l < 0) values.push('NULL')
            else {
              values.push(printableOrHex(b.subarray(p, p + l)))
              p += l
            }
          }
          out.push(values.join(' | '))
          break
        }
        case 0x43: // 'C' CommandComplete
          out.push(`-> ${b.toString('utf8', p, end - 1)}`)
          break
        case 0x45: { // 'E' ErrorResponse
          const fields: Record<string, string> = {}
          while (p < end && b[p] !== 0) {
            const z = b.indexOf(0, p + 1)
            fields[String.fromCharCode(b[p])] = b.toString('utf8', p + 1, z)
            p = z + 1
          }
          out.push(`ERROR ${fields.C ?? ''}: ${fields.M ?? ''}`)
          break
        }
      }
      at = end
    }
  } catch {
    out.push('(undecodable)')
  }
  if (rows > MAX_LINES) out.push(`… ${rows - MAX_LINES} more rows`)
  return out
}

/** RESP2/RESP3 replies → one line per top-level reply. */
export function describeResp(buf: Uint8Array): string[] {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength)
  const out: string[] = []
  let at = 0
  const line = (): string => {
    const e = b.indexOf('\r\n', at)
    if (e < 0) throw new Error('short')
    const s = b.toString('utf8', at + 1, e)
    at = e + 2
    return s
  }
  const value = (depth: number): string => {
    const t = String.fromCharCode(b[at])
    switch (t) {
      case '+':
      case ':':
      case ',':
      case '(':
      case '#':
        return line()
      case '-':
      case '!':
        return `(error) ${line()}`
      case '_':
        line()
        return '(nil)'
      case '$':
      case '=': {
        const n = Number(line())
        if (n < 0) return '(nil)'
        const s = printableOrHex(b.subarray(at, at + n))
        at += n + 2
        return JSON.stringify(s)
      }
      case '*':
      case '~':
      case '>': {
        const n = Number(line())
        if (n < 0) return '(nil)'
        const items: string[] = []
        for (let i = 0; i < n; i++) items.push(value(depth + 1))
        return `[${items.join(', ')}]`
      }
      case '%':
      case '|': {
        const n = Number(line())
        const items: string[] = []
        for (let i = 0; i < n; i++) items.push(`${value(depth + 1)}: ${value(depth + 1)}`)
        return `{${items.join(', ')}}`
      }
      default:
        throw new Error('unknown')
    }
  }
  try {
    while (at < b.length && out.length < MAX_LINES) out.push(value(0))
  } catch {
    out.push('(undecodable)')
  }
  return out
}

export function printableOrHex(b: Uint8Array): string {
  const s = Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('utf8')
  // control characters other than tab/newline, or invalid UTF-8, mean binary
  if (!/[\u0000-\u0008\u000e-\u001f\ufffd]/.test(s)) return s
  return `<${b.byteLength} bytes: ${Buffer.from(b.subarray(0, 32)).toString('hex')}${b.byteLength > 32 ? '…' : ''}>`
}
