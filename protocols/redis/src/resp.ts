// The few replies and commands the gateway writes itself.
export const OK = Buffer.from('+OK\r\n')
export const NOAUTH = Buffer.from('-NOAUTH Authentication required.\r\n')

/** '-CODE message\r\n'; line breaks in the message would end the error early, so they become spaces */
export function errorReply(code: string, message: string): Buffer {
  return Buffer.from(`-${code} ${message.replace(/[\r\n]+/g, ' ')}\r\n`)
}

/** a command as an array of bulk strings */
export function encodeCommand(args: readonly (Buffer | string)[]): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)]
  for (const a of args) {
    const b = typeof a === 'string' ? Buffer.from(a, 'utf8') : a
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'))
  }
  return Buffer.concat(parts)
}
