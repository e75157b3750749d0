// A request's command name and its classified Operation, the two per-command lookups of the serve
// loop (serve.ts), each made so that a repeat costs no new string or classification.
import type { Operation } from '@portcullis/core'
import { classifyCommand, commandShape, shapeKeys, toOperation, type ClassifyOptions, type Shape } from './classify.ts'
import type { CommandTable } from './commands.ts'
import type { Req } from './session-io.ts'

const EMPTY = Buffer.alloc(0)

// Classified operations, per target and command table: a client repeating a command (GET of a hot
// key, a pipeline of the same command) is classified and fingerprinted once. A command whose shape
// fixes its class (classify.ts operationKey: GET, SET, HGETALL… nearly every command) is cached by
// its name, argument count and keys, whatever its values (a SET of a new value is a hit); any other
// by its request frame, in a map of its own (a frame's bytes could spell another command's key).
// Only small keys and frames; cleared when full rather than kept in LRU order (a hit costs a string
// and a lookup). 16,384 by keys: a working set of 10,000 keys (the bench's -r 10000) stays cached,
// for a few MB per target.
const OP_CACHE_MAX = 16384
const FRAME_CACHE_MAX = 4096
const OP_CACHE_FRAME = 256
interface OpCache {
  table: CommandTable | undefined
  /** by shape (classify.ts commandShape: one per name and argument count), then by the keys' text (shapeKeys) */
  byShape: Map<Shape, Map<string, Operation>>
  /** entries in all of byShape's maps */
  byKeysSize: number
  byFrame: Map<string, Operation>
}
const opCaches = new WeakMap<object, OpCache>()

/**
 * The Operation of a request, cached per target and command table (above). `lower`: the command's
 * name in lower case, when the caller has it (CommandNames.lower): no string made per command.
 * The cache key is operationKey's (classify.ts) in two steps: the shape object, then a map of the
 * keys' text alone, so a hit builds no joined string and hashes only the key itself.
 */
export function operationOf(target: object, req: Pick<Req, 'args' | 'raw'>, classify: ClassifyOptions, lower?: string): Operation {
  let cache = opCaches.get(target)
  if (cache === undefined || cache.table !== classify.table) {
    cache = { table: classify.table, byShape: new Map(), byKeysSize: 0, byFrame: new Map() }
    opCaches.set(target, cache)
  }
  const shape = commandShape(req.args, classify, lower)
  const keys = shape === null ? undefined : shapeKeys(shape, req.args, OP_CACHE_FRAME)
  if (keys !== undefined) {
    let ops = cache.byShape.get(shape!)
    if (ops === undefined) cache.byShape.set(shape!, (ops = new Map()))
    let op = ops.get(keys)
    if (op === undefined) {
      op = toOperation([classifyCommand(req.args, classify)])
      if (cache.byKeysSize >= OP_CACHE_MAX) {
        // cleared when full (a hit costs no bookkeeping); the maps of shapes stay
        for (const m of cache.byShape.values()) m.clear()
        cache.byKeysSize = 0
      }
      ops.set(keys, op)
      cache.byKeysSize++
    }
    return op
  }
  const raw = req.raw
  if (raw.length > OP_CACHE_FRAME) return toOperation([classifyCommand(req.args, classify)])
  const key = raw.toString('latin1')
  const ops = cache.byFrame
  let op = ops.get(key)
  if (op === undefined) {
    op = toOperation([classifyCommand(req.args, classify)])
    if (ops.size >= FRAME_CACHE_MAX) ops.clear()
    ops.set(key, op)
  }
  return op
}

/** the upper-case command name of a frame; the last name is kept as bytes so a repeat costs no string */
export class CommandNames {
  private bytes: Buffer = EMPTY
  private name = ''
  private lowerName = ''

  /**
   * The lower-case name of frame argument `a`, whose of() is `name` (the kept name's made once), as
   * classify.ts reads it from the bytes; undefined (the classifier reads the bytes itself) unless
   * `name` has the frame's length: a Latin-1 byte whose upper case is longer (ß → SS) must not
   * pass for another command's name ("\xdfcan" is not SSCAN)
   */
  lower(a: Buffer, name: string): string | undefined {
    if (a.length !== name.length) return undefined
    return name === this.name ? this.lowerName : name.toLowerCase()
  }

  of(a: Buffer): string {
    const b = this.bytes
    if (a.length === b.length && a.length > 0) {
      let i = 0
      for (; i < a.length; i++) {
        let c = a[i]!
        if (c >= 0x61 && c <= 0x7a) c -= 0x20
        if (c !== b[i]) break
      }
      if (i === a.length) return this.name
    }
    const name = a.toString('latin1').toUpperCase()
    // only plain ASCII names are kept: their upper-case bytes are the name's bytes
    if (a.length <= 32 && /^[A-Z0-9._|-]+$/.test(name)) {
      this.bytes = Buffer.from(name, 'latin1')
      this.name = name
      this.lowerName = name.toLowerCase()
    }
    return name
  }
}
