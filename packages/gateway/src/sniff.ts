// Protocol sniffing for listeners that serve several protocols on one port: read just enough of the
// first bytes for one codec to claim the connection, then push those bytes back so the codec reads
// the stream from its first byte as if nobody had looked.
//
// Reads with 'readable' + read(), not 'data' + pause(): once the 'readable' listener is removed the
// stream returns to its initial state, so a codec that attaches 'data' listeners starts it flowing;
// after an explicit pause() it would wait forever.
import type { Socket } from 'node:net'
import type { ProtocolCodec } from '@portcullis/core'

/** Longest prefix any codec needs (Postgres: 8 bytes; HTTP: the method and a space). */
const MAX_SNIFF_BYTES = 64

export function sniffCodec(socket: Socket, codecs: readonly ProtocolCodec[]): Promise<ProtocolCodec | undefined> {
  return new Promise((resolve, reject) => {
    let seen: Buffer = Buffer.alloc(0)
    let finished = false
    const done = (codec: ProtocolCodec | undefined, err?: Error) => {
      if (finished) return
      finished = true
      socket.off('readable', onReadable)
      socket.off('end', onEnd)
      socket.off('close', onEnd)
      socket.off('error', onError)
      if (seen.length > 0 && !socket.destroyed) socket.unshift(seen)
      if (err) reject(err)
      else resolve(codec)
    }
    const onReadable = () => {
      let chunk: Buffer | null
      while (!finished && (chunk = socket.read() as Buffer | null) !== null) {
        seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk])
        let undecided = false
        for (const codec of codecs) {
          const verdict = codec.sniff(seen)
          if (verdict === true) return done(codec)
          if (verdict === undefined) undecided = true
        }
        if (!undecided || seen.length >= MAX_SNIFF_BYTES) return done(undefined)
      }
    }
    const onEnd = () => done(undefined)
    const onError = (err: Error) => done(undefined, err)
    socket.on('readable', onReadable)
    socket.on('end', onEnd)
    socket.on('close', onEnd)
    socket.on('error', onError)
  })
}
