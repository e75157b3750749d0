// Is this the start of a Redis connection? RESP clients open with an array ('*'); redis-cli and
// telnet users may open with an inline command, so a plausible command word counts too. Postgres
// opens with a length (a zero byte first), TLS with 0x16, HTTP with a method and a space then '/'.
import { BUILTIN_COMMANDS } from './commands.ts'

const INLINE_FIRST = new Set(['AUTH', 'HELLO', 'PING', 'QUIT'])

export function sniffRedis(first: Buffer): boolean | undefined {
  if (first.length === 0) return undefined
  if (first[0] === 0x2a /* '*' */) {
    // '*<digits>\r\n$'
    for (let i = 1; i < first.length; i++) {
      const c = first[i]!
      if (c === 0x0d) return first.length > i + 2 ? first[i + 1] === 0x0a && first[i + 2] === 0x24 : undefined
      if (c < 0x30 || c > 0x39) return false
    }
    return first.length > 22 ? false : undefined
  }
  // an inline command: letters up to the first space or line end
  let i = 0
  while (i < first.length && i < 32) {
    const c = first[i]!
    const letter = (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a) || c === 0x2e || c === 0x5f || c === 0x2d
    if (!letter) break
    i++
  }
  if (i === first.length) return i < 32 ? undefined : false
  if (i === 0) return false
  const sep = first[i]
  if (sep !== 0x20 && sep !== 0x0d && sep !== 0x0a) return false
  const word = first.toString('latin1', 0, i).toUpperCase()
  // an HTTP request line ('GET /x HTTP/1.1') is not an inline GET
  if (sep === 0x20 && first[i + 1] === 0x2f /* '/' */) return false
  return INLINE_FIRST.has(word) || BUILTIN_COMMANDS.has(word.toLowerCase())
}
