// Request bodies, read whole and bounded: what the gateway inspects before it decides.
import type { IncomingMessage } from 'node:http'
import type { Readable } from 'node:stream'
import { httpError } from './errors.ts'

export function hasBody(req: IncomingMessage): boolean {
  return req.headers['transfer-encoding'] !== undefined || Number(req.headers['content-length'] ?? 0) > 0
}

/**
 * The whole of a readable, at most `limit` bytes: past it the source is destroyed and `tooLarge()`
 * rejects. Events rather than an async iterator: no iterator and promise per chunk on the hot path.
 */
export function collect(source: Readable, limit: number, tooLarge: () => Error): Promise<Buffer> {
  return new Promise<Buffer>((resolve, reject) => new Collector(source, limit, tooLarge, resolve, reject))
}

/** listeners of one collect(): methods bound once, not closures per call */
class Collector {
  private readonly parts: Buffer[] = []
  private n = 0
  private readonly data = this.onData.bind(this)
  private readonly end = this.onEnd.bind(this)
  private readonly error = this.done.bind(this)
  private readonly close = this.onClose.bind(this)

  constructor(
    private readonly source: Readable,
    private readonly limit: number,
    private readonly tooLarge: () => Error,
    private readonly resolve: (b: Buffer) => void,
    private readonly reject: (e: Error) => void,
  ) {
    if (source.destroyed) {
      this.onClose()
      return
    }
    source.on('data', this.data)
    source.once('end', this.end)
    source.once('error', this.error)
    source.once('close', this.close)
  }

  private done(err: Error | undefined, body?: Buffer): void {
    const s = this.source
    s.off('data', this.data)
    s.off('end', this.end)
    s.off('error', this.error)
    s.off('close', this.close)
    if (err) this.reject(err)
    else this.resolve(body!)
  }

  private onData(chunk: Buffer): void {
    this.n += chunk.length
    if (this.n > this.limit) {
      this.source.destroy()
      return this.done(this.tooLarge())
    }
    this.parts.push(chunk)
  }

  private onEnd(): void {
    this.done(undefined, this.parts.length === 1 ? this.parts[0] : Buffer.concat(this.parts, this.n))
  }

  /** closed before its end: the peer went away mid-body */
  private onClose(): void {
    this.done(Object.assign(new Error('premature close'), { code: 'ERR_STREAM_PREMATURE_CLOSE' }))
  }
}

export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length'] ?? 0)
  const tooLarge = () => httpError(413, 'payload_too_large', `request body is larger than ${limit} bytes`, { close: true })
  if (declared > limit) return Promise.reject(tooLarge())
  return collect(req, limit, tooLarge)
}
