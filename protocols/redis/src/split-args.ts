// Splits a command line the way Redis does for inline commands and redis-cli does for its prompt
// (sdssplitargs): whitespace-separated words, "double quotes" with \n \r \t \b \a \\ \" \xHH escapes,
// 'single quotes' with only \' escaped. A closing quote must be followed by a space or the end.
// Returns undefined for unbalanced quotes.

const HEX = (c: number): number =>
  c >= 0x30 && c <= 0x39 ? c - 0x30 : c >= 0x61 && c <= 0x66 ? c - 0x57 : c >= 0x41 && c <= 0x46 ? c - 0x37 : -1

const isSpace = (c: number | undefined): boolean => c === 0x20 || c === 0x0a || c === 0x0d || c === 0x09 || c === 0x0b || c === 0x0c

export function splitArgs(line: Buffer): Buffer[] | undefined {
  const out: Buffer[] = []
  let i = 0
  const n = line.length
  for (;;) {
    while (i < n && isSpace(line[i])) i++
    if (i >= n) return out
    // fast path: a word without quotes is a view, no copy
    if (line[i] !== 0x22 && line[i] !== 0x27) {
      const from = i
      while (i < n && !isSpace(line[i]) && line[i] !== 0x22 && line[i] !== 0x27) i++
      if (i >= n || isSpace(line[i])) {
        out.push(line.subarray(from, i))
        continue
      }
      i = from
    }
    const bytes: number[] = []
    let inDq = false
    let inSq = false
    for (;;) {
      const c = line[i]
      if (inDq) {
        if (i >= n) return undefined
        if (c === 0x5c /* \ */ && line[i + 1] === 0x78 /* x */ && HEX(line[i + 2] ?? -1) >= 0 && HEX(line[i + 3] ?? -1) >= 0) {
          bytes.push(HEX(line[i + 2]!) * 16 + HEX(line[i + 3]!))
          i += 3
        } else if (c === 0x5c && i + 1 < n) {
          i++
          const e = line[i]
          bytes.push(e === 0x6e ? 0x0a : e === 0x72 ? 0x0d : e === 0x74 ? 0x09 : e === 0x62 ? 0x08 : e === 0x61 ? 0x07 : e!)
        } else if (c === 0x22) {
          if (i + 1 < n && !isSpace(line[i + 1])) return undefined
          i++
          break
        } else bytes.push(c!)
      } else if (inSq) {
        if (i >= n) return undefined
        if (c === 0x5c && line[i + 1] === 0x27) {
          bytes.push(0x27)
          i++
        } else if (c === 0x27) {
          if (i + 1 < n && !isSpace(line[i + 1])) return undefined
          i++
          break
        } else bytes.push(c!)
      } else {
        if (i >= n || isSpace(c)) break
        if (c === 0x22) inDq = true
        else if (c === 0x27) inSq = true
        else bytes.push(c!)
      }
      i++
    }
    out.push(Buffer.from(bytes))
  }
}

export function splitCommandLine(line: string): string[] | undefined {
  return splitArgs(Buffer.from(line, 'utf8'))?.map(b => b.toString('utf8'))
}
