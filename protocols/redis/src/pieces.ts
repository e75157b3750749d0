// Bytes to write or record, gathered from many frames into one buffer.
const EMPTY = Buffer.alloc(0)

/**
 * Byte pieces gathered into one buffer, for one write or one record: pieces that lie next to each
 * other in memory (frames of one read, in order) are joined into one view without a copy.
 */
export class Pieces {
  private done: Buffer[] = []
  // the current run of adjacent pieces: its first piece and where it ends
  private run: Buffer | undefined
  private runEnd = 0

  get empty(): boolean {
    return this.run === undefined
  }

  add(b: Buffer): void {
    if (b.length === 0) return
    const r = this.run
    if (r !== undefined) {
      if (this.runEnd === b.byteOffset && r.buffer === b.buffer) {
        this.runEnd += b.length
        return
      }
      this.done.push(this.view(r))
    }
    this.run = b
    this.runEnd = b.byteOffset + b.length
  }

  private view(r: Buffer): Buffer {
    const len = this.runEnd - r.byteOffset
    return len === r.length ? r : Buffer.from(r.buffer, r.byteOffset, len)
  }

  take(): Buffer {
    const r = this.run
    if (r === undefined) return EMPTY
    this.run = undefined
    const v = this.view(r)
    if (this.done.length === 0) return v
    const parts = this.done
    parts.push(v)
    this.done = []
    return Buffer.concat(parts)
  }
}
