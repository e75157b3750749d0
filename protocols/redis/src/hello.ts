// The two commands that may carry a token, AUTH and HELLO: what the connection needs to know of them
// before it decides anything. Pure: serve.ts does the authenticating and the replying.
import { errorReply } from './resp.ts'

/** AUTH or HELLO (either may carry a token): never recorded as bytes */
export function carriesToken(a: Buffer | undefined): boolean {
  if (a === undefined) return false
  if (a.length === 4) return (a[0]! | 0x20) === 0x61 && (a[1]! | 0x20) === 0x75 && (a[2]! | 0x20) === 0x74 && (a[3]! | 0x20) === 0x68
  if (a.length === 5) return a.toString('latin1').toUpperCase() === 'HELLO'
  return false
}

export interface Hello {
  /** 2 or 3; undefined for a bare HELLO (the connection keeps its protocol) */
  version?: number
  /** the AUTH option's password (the username is ignored: the token says who) */
  token?: string
  setname?: string
}

/** HELLO [protover [AUTH username password] [SETNAME clientname]], or the error Redis 7 answers it with */
export function parseHello(args: string[]): Hello | Buffer {
  const hello: Hello = {}
  if (args.length <= 1) return hello
  const version = Number(args[1])
  if (version !== 2 && version !== 3) return errorReply('NOPROTO', 'unsupported protocol version')
  hello.version = version
  for (let i = 2; i < args.length; i++) {
    const opt = args[i]!.toUpperCase()
    if (opt === 'AUTH' && i + 2 < args.length) {
      hello.token = args[i + 2]
      i += 2
    } else if (opt === 'SETNAME' && i + 1 < args.length) {
      hello.setname = args[++i]
    } else return errorReply('ERR', `Syntax error in HELLO option '${args[i]}'`)
  }
  return hello
}
