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
// Only small keys and frames.
//
// The keyed cache keeps two generations of at most OP_GENERATION entries each (~600 bytes of heap
// an entry: at most ~20 MB per target): a miss goes into the newer, a lookup tries the newer then
// the older, and a full newer generation becomes the older one, the older dropped. A working set of
// up to twice the bound settles in (what the newer misses the older still has) for the price of a
// second lookup and no bookkeeping on a hit. A single map cleared when full dropped the hot keys
// with the cold: with the bench's GET and SET of 10,000 keys (20,000 entries against 16,384) half of
// all commands missed, and a miss (classification, fingerprint, the objects that then live long
// enough to be copied out of the young heap) costs ~10× a hit.
export const OP_GENERATION = 16384
const FRAME_CACHE_MAX = 4096
const OP_CACHE_FRAME = 256
type ByShape = Map<Shape, Map<string, Operation>>
interface OpCache {
  table: CommandTable | undefined
  /** the newer generation, by shape (classify.ts commandShape: one per name and argument count), then by the keys' text (shapeKeys) */
  young: ByShape
  /** entries in all of young's maps */
  youngSize: number
  /** the older generation, looked up when young misses */
  old: ByShape
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
    cache = { table: classify.table, young: new Map(), youngSize: 0, old: new Map(), byFrame: new Map() }
    opCaches.set(target, cache)
  }
  const shape = commandShape(req.args, classify, lower)
  const keys = shape === null ? undefined : shapeKeys(shape, req.args, OP_CACHE_FRAME)
  if (keys !== undefined) {
    let ops = cache.young.get(shape!)
    let op = ops?.get(keys) ?? cache.old.get(shape!)?.get(keys)
    if (op === undefined) {
      op = toOperation([classifyCommand(req.args, classify)])
      if (cache.youngSize >= OP_GENERATION) {
        cache.old = cache.young
        cache.young = new Map()
        cache.youngSize = 0
        ops = undefined
      }
      if (ops === undefined) cache.young.set(shape!, (ops = new Map()))
      ops.set(keys, op)
      cache.youngSize++
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
