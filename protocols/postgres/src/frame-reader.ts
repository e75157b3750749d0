// Pulls whole frames from a socket one at a time, for the handshake phases where each step waits
// for an answer. The proxy loop takes over with detach(), which returns what was read ahead.
//
// Nothing read may be lost between the two: the socket is paused while frames wait that nobody
// asked for (a client pipelining its first Query behind the password while the token is verified)
// and stays paused after detach(), because a flowing socket with no 'data' listener drops what it
// reads (the gap while the gateway connects upstream). Whoever takes over resumes it.
import type { Duplex } from 'node:stream'
import { Framer, type Frame } from './framer.ts'
import { PortcullisError } from '@portcullis/core/errors'

export class FrameReader {
  readonly framer: Framer
  private frames: Frame[] = []
  private waiter: { resolve: (f: Frame) => void; reject: (e: Error) => void } | undefined
  /** why no more frames will come; what was read before it is still handed out first */
  private failure: Error | undefined
  /** the framer threw: what it buffered frames as nothing */
  private unframeable = false
  /** EOF was read: whoever takes over will not see an 'end' event of its own */
  private ended = false
  /** paused by us: frames are waiting that were not asked for yet */
  private holding = false
  private readonly onData = (chunk: Buffer) => {
    try {
      for (const f of this.framer.push(chunk)) this.frames.push(f)
    } catch (err) {
      this.unframeable = true
      this.fail(err as Error)
      return
    }
    this.wake()
    // read-ahead is bounded by one chunk: the rest stays in the socket until it is asked for
    if (this.frames.length > 0 && !this.holding) {
      this.holding = true
      this.socket.pause()
    }
  }
  private readonly onEnd = () => {
    this.ended = true
    this.fail(new PortcullisError('SESSION_CLOSED', 'connection closed during startup'))
  }
  private readonly onClose = () => this.fail(new PortcullisError('SESSION_CLOSED', 'connection closed during startup'))
  private readonly onError = (err: Error) => this.fail(err)

  constructor(
    readonly socket: Duplex,
    maxMessageBytes: number,
    opts: { startup?: boolean } = {},
  ) {
    this.framer = new Framer(maxMessageBytes, opts)
    socket.on('data', this.onData)
    socket.on('end', this.onEnd)
    socket.on('close', this.onClose)
    socket.on('error', this.onError)
  }

  private fail(err: Error): void {
    this.failure ??= err
    this.wake()
  }

  private wake(): void {
    if (!this.waiter) return
    // a startup frame may leave further bytes unframed until the caller says what they are
    if (this.frames.length === 0 && this.framer.buffered > 0 && !this.unframeable) {
      try {
        for (const f of this.framer.push(Buffer.alloc(0))) this.frames.push(f)
      } catch (err) {
        this.unframeable = true
        this.failure ??= err as Error
      }
    }
    const w = this.waiter
    const f = this.frames.shift()
    if (f) {
      this.waiter = undefined
      w.resolve(f)
      return
    }
    // a client that sent its messages and EOF together: the messages come first, then the failure
    if (this.failure) {
      this.waiter = undefined
      w.reject(this.failure)
      return
    }
    if (this.holding) {
      this.holding = false
      this.socket.resume()
    }
  }

  next(): Promise<Frame> {
    return new Promise((resolve, reject) => {
      this.waiter = { resolve, reject }
      this.wake()
    })
  }

  /** true when bytes arrived that were not asked for yet */
  get hasPending(): boolean {
    return this.frames.length > 0 || this.framer.buffered > 0
  }

  /**
   * Hands over what was read ahead, and whether EOF was read too (no 'end' event will follow). The
   * socket is left paused (unless `flowing`: a TLS upgrade hands the socket's handle to the TLS
   * layer, which reads it itself).
   */
  detach(opts: { flowing?: boolean } = {}): { frames: Frame[]; rest: Buffer | undefined; ended: boolean } {
    if (opts.flowing) {
      if (this.holding) this.socket.resume()
    } else this.socket.pause()
    this.holding = false
    this.socket.off('data', this.onData)
    this.socket.off('end', this.onEnd)
    this.socket.off('close', this.onClose)
    this.socket.off('error', this.onError)
    const frames = this.frames
    this.frames = []
    return { frames, rest: this.framer.drain(), ended: this.ended }
  }
}
