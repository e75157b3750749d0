// Structure for the mutator: each captured client stream cut into the protocol's own messages, with
// where each message keeps its length fields (Postgres Int32 lengths, RESP *N / $N counts, HTTP
// Content-Length and chunk sizes), and the handshake (what carries the token) set apart from the
// traffic that follows it.
export interface LengthField {
  /** byte offset inside the message */
  at: number
  /** bytes the field takes now */
  size: number
  kind: 'be32' | 'dec' | 'hex'
}

export interface Message {
  bytes: Buffer
  lengths: LengthField[]
  /** [from, to) ranges whose bytes can change without changing the framing (bodies, argument contents) */
  payload: Array<[number, number]>
}

export interface Framed {
  /** the messages that log in (Postgres StartupMessage + PasswordMessage, Redis AUTH/HELLO) */
  handshake: Message[]
  /** everything after, without the client's goodbye (Terminate, QUIT) */
  traffic: Message[]
}

/** Postgres: an untyped StartupMessage (SSLRequest first when sent), then Byte1 type + Int32 length. */
export function framePostgres(stream: Buffer): Framed {
  const handshake: Message[] = []
  const traffic: Message[] = []
  let at = 0
  for (;;) {
    const len = stream.readInt32BE(at)
    const code = stream.readInt32BE(at + 4)
    handshake.push({ bytes: stream.subarray(at, at + len), lengths: [{ at: 0, size: 4, kind: 'be32' }], payload: [[8, len]] })
    at += len
    if (code !== 80877103 && code !== 80877104) break // not SSLRequest / GSSENCRequest: the StartupMessage
  }
  while (at + 5 <= stream.length) {
    const type = stream[at]!
    const len = stream.readInt32BE(at + 1)
    const msg: Message = { bytes: stream.subarray(at, at + 1 + len), lengths: [{ at: 1, size: 4, kind: 'be32' }], payload: [[5, 1 + len]] }
    at += 1 + len
    if (type === 0x70 /* p PasswordMessage */) handshake.push(msg)
    else if (type !== 0x58 /* X Terminate */) traffic.push(msg)
  }
  return { handshake, traffic }
}

/** RESP: arrays of bulk strings (*N then $len per argument); inline commands as one line. */
export function frameRedis(stream: Buffer): Framed {
  const handshake: Message[] = []
  const traffic: Message[] = []
  let at = 0
  const line = (from: number) => {
    const end = stream.indexOf('\r\n', from)
    return { text: stream.toString('latin1', from, end), next: end + 2 }
  }
  while (at < stream.length) {
    const start = at
    const lengths: LengthField[] = []
    const payload: Array<[number, number]> = []
    let name = ''
    if (stream[at] === 0x2a /* * */) {
      const head = line(at + 1)
      lengths.push({ at: 1, size: head.text.length, kind: 'dec' })
      at = head.next
      const n = Number(head.text)
      for (let i = 0; i < n; i++) {
        const bulk = line(at + 1)
        lengths.push({ at: at + 1 - start, size: bulk.text.length, kind: 'dec' })
        const len = Number(bulk.text)
        if (i === 0) name = stream.toString('latin1', bulk.next, bulk.next + len).toUpperCase()
        if (len > 0) payload.push([bulk.next - start, bulk.next + len - start])
        at = bulk.next + len + 2
      }
    } else {
      const l = line(at)
      name = l.text.split(' ')[0]!.toUpperCase()
      if (l.text.length > 0) payload.push([0, l.text.length])
      at = l.next
    }
    const msg: Message = { bytes: stream.subarray(start, at), lengths, payload }
    if (name === 'AUTH' || name === 'HELLO') handshake.push(msg)
    else if (name !== 'QUIT') traffic.push(msg)
  }
  return { handshake, traffic }
}

/** HTTP/1.1 requests: head, then a Content-Length body or chunked body (chunk-size lines). */
export function frameHttp(stream: Buffer): Framed {
  const traffic: Message[] = []
  let at = 0
  while (at < stream.length) {
    const start = at
    const headEnd = stream.indexOf('\r\n\r\n', at) + 4
    const head = stream.toString('latin1', at, headEnd)
    const lengths: LengthField[] = []
    const target = head.indexOf(' ') + 1
    const payload: Array<[number, number]> = [[target, head.indexOf(' ', target)]]
    at = headEnd
    const cl = /\r\ncontent-length: *(\d+)/i.exec(head)
    if (cl) {
      lengths.push({ at: cl.index + cl[0].length - cl[1]!.length, size: cl[1]!.length, kind: 'dec' })
      if (Number(cl[1]) > 0) payload.push([headEnd - start, headEnd - start + Number(cl[1])])
      at += Number(cl[1])
    } else if (/\r\ntransfer-encoding: *chunked/i.test(head)) {
      for (;;) {
        const end = stream.indexOf('\r\n', at)
        const size = parseInt(stream.toString('latin1', at, end), 16)
        lengths.push({ at: at - start, size: end - at, kind: 'hex' })
        if (size > 0) payload.push([end + 2 - start, end + 2 + size - start])
        at = end + 2 + size + 2
        if (size === 0) break
      }
    }
    traffic.push({ bytes: stream.subarray(start, at), lengths, payload })
  }
  return { handshake: [], traffic }
}
