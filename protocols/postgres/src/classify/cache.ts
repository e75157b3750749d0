// The classifier's two caches (index.ts classifySql): by exact text, and by skeleton (lexer.ts: the
// text with its constants replaced), held together to an entry bound each and one byte budget of
// estimated heap (weight.ts), with second-chance eviction. classifySql decides what is kept; this
// module keeps it, finds it again and gives it up. One instance per classifier module (a test's second
// instance of index.ts, its reference with the cache off, has caches of its own).
import type { Operation } from '@portcullis/core/types'
import type { Compiled } from './index.ts'
import { keyHash, scanSkeleton, type Skeleton } from './lexer.ts'
import type { StatementLineage } from './lineage.ts'
import type { Reads } from './literal.ts'

const DEFAULT_CACHE_ENTRIES = 4096
// texts longer than this are classified every time: the cache's memory stays bounded
const MAX_CACHED_TEXT = 16 * 1024

// Both caches together, by estimated heap (weight.ts: the key text and the Operation, parts, kept
// parse trees and lineage of the entry, counted once when it is cached): entries × MAX_CACHED_TEXT
// would be too much memory, and the text is not what weighs most — a statement's kept parse tree is
// several times its text (and a watched tree's instruments, literal.ts, weigh more than the tree).
// Measured (Node 20, the heap after a full collection, cached run minus the same run uncached):
// 4,096 + 4,096 entries of bit-flipped copies of the robustness fuzzer's seed statements (~100
// characters) estimate at 18.3 MiB and hold 17.0; 300 + 300 of a 5,575-character SELECT estimate at
// 358 MiB and hold 240 — where the entry and character bounds alone let ~750 of those stay in each
// cache. So the default leaves the seed kind all its entries and holds big statements to ~32 MiB
const DEFAULT_CACHE_BYTES = 32 * 1024 * 1024
// what a text entry holds beside its key and Compiled: its slot in `texts`, and the WeakMap
// entries of its Operation (kept lineage, bodies, perSession)
const TEXT_ENTRY_BYTES = 200
// what a skeleton entry holds beside its key and Operation: the entry, its `reads`, its slot in
// `skeletons` and in `skeletonKeys`
const SKELETON_ENTRY_BYTES = 160

// By skeleton (lexer.ts): the Operation of a text whose classification holds for every text of its
// skeleton (literal.ts), or null for a skeleton known not to (classified by exact text, above).
// Bounded like the text cache, with the same second-chance eviction.
export interface SkeletonEntry {
  op: Operation | null
  /** the watch of its analysis: a read of a constant after compile() (a node kept for later) ends the entry */
  reads: Reads | undefined
  recent: boolean
  /** estimated heap of the entry (weight.ts), its key included: set when cached */
  bytes: number
  /** its key in `skeletons` (the same string): the entry's weight without its Operation is known from it */
  key: string
  /**
   * the lineage kept for `op`, which a text of the skeleton classified under column rules borrows
   * (lineage.ts); absent when the text declares or prepares a body (bodies keep trees of their own)
   */
  lineage?: StatementLineage
}
export interface SkeletonLookup {
  known: SkeletonEntry | undefined
  skeleton: Skeleton | undefined
}

export class ClassifierCaches {
  private max = DEFAULT_CACHE_ENTRIES
  private budget = DEFAULT_CACHE_BYTES
  private textBytes = 0
  private readonly texts = new Map<string, Compiled>()
  private skeletonBytes = 0
  private skeletonHits = 0
  private readonly skeletons = new Map<string, SkeletonEntry>()
  // hash → key of the skeletons above (lexer.ts keyHash), so that a hit is found from the scan's pieces
  // without building its key (ScannedSkeleton.matches). The last key filed under a hash wins (a
  // colliding one is found by its key, built then); an entry whose key has left `skeletons` is
  // dropped when met, and the whole index is rebuilt when it outgrows them
  private readonly skeletonKeys = new Map<number, string>()
  // one instance, reused by every lookup (read at once by the caller): no object per Query
  private readonly lookup: SkeletonLookup = { known: undefined, skeleton: undefined }

  /**
   * Skeleton hits so far and skeletons held (for tests and the bench: is the skeleton path taken?),
   * and the estimated heap of each cache (weight.ts) against their one budget.
   */
  stats(): { skeletonHits: number; skeletons: number; texts: number; textBytes: number; skeletonBytes: number; budgetBytes: number } {
    return { skeletonHits: this.skeletonHits, skeletons: this.skeletons.size, texts: this.texts.size, textBytes: this.textBytes, skeletonBytes: this.skeletonBytes, budgetBytes: this.budget }
  }

  /**
   * Sets the byte budget of both caches together (estimated heap, weight.ts; default 32 MiB); trims
   * at once. An entry heavier than the whole budget is not kept (classified every time).
   */
  setBytes(bytes: number): void {
    this.budget = Math.max(0, Math.floor(bytes))
    this.trim()
  }

  /** Sets the cache bound (entries); trims at once. */
  setSize(entries: number): void {
    this.max = Math.max(0, Math.floor(entries))
    this.trim()
  }

  size(): number {
    return this.texts.size
  }

  /** Empties both caches (tests compare cached answers with fresh ones). */
  clear(): void {
    this.texts.clear()
    this.skeletons.clear()
    this.skeletonKeys.clear()
    this.textBytes = 0
    this.skeletonBytes = 0
  }

  /** The cached classification of exactly this text, marked as used. */
  text(sql: string): Compiled | undefined {
    const compiled = this.texts.get(sql)
    if (compiled !== undefined) compiled.recent = true
    return compiled
  }

  /** Whether a text of this length may be kept at all (a cache bounded to nothing keeps none). */
  cacheable(sql: string): boolean {
    return sql.length <= MAX_CACHED_TEXT && this.max > 0 && this.budget > 0
  }

  /**
   * The skeleton entry of `sql` (marked as used), or the skeleton to file a new one under when there
   * is none; both undefined when the text has no skeleton. An entry whose analysis read a constant
   * after it was made (a node kept for later) stops lending its Operation here, and weighs its key alone.
   */
  findSkeleton(sql: string): SkeletonLookup {
    const found = this.lookup
    found.known = found.skeleton = undefined
    const scanned = scanSkeleton(sql)
    if (scanned === undefined) return found
    let known: SkeletonEntry | undefined
    const key = this.skeletonKeys.get(scanned.hash)
    if (key !== undefined && scanned.matches(key)) {
      known = this.skeletons.get(key)
      if (known === undefined) this.skeletonKeys.delete(scanned.hash)
    }
    if (known === undefined) {
      // not found by its pieces: the key and the constants' offsets as a string and arrays of their
      // own (compile() scans other texts), and looked up by that key (a hash another key holds)
      found.skeleton = scanned.materialize()
      known = this.skeletons.get(found.skeleton.key)
    }
    if (known) {
      known.recent = true
      if (known.op && known.reads?.value) {
        known.op = null
        known.lineage = undefined
        this.skeletonBytes -= known.bytes - SKELETON_ENTRY_BYTES - 2 * known.key.length
        known.bytes = SKELETON_ENTRY_BYTES + 2 * known.key.length
      }
    }
    found.known = known
    return found
  }

  /** A text answered from its skeleton's entry (stats). */
  countSkeletonHit(): void {
    this.skeletonHits++
  }

  /** Keeps `compiled` for `sql`; `estimate`: its heap (weight.ts) beside what the entry itself holds. */
  keepText(sql: string, compiled: Compiled, estimate: number): void {
    compiled.bytes = TEXT_ENTRY_BYTES + estimate
    this.texts.set(sql, compiled)
    this.textBytes += compiled.bytes
  }

  /** Files `entry` under `skeleton`; `opBytes`: the estimated heap of its Operation and lineage (0 without one). */
  keepSkeleton(skeleton: Skeleton, entry: SkeletonEntry, opBytes: number): void {
    entry.bytes = SKELETON_ENTRY_BYTES + 2 * skeleton.key.length + opBytes
    this.skeletons.set(skeleton.key, entry)
    this.skeletonBytes += entry.bytes
    this.skeletonKeys.set(skeleton.hash, skeleton.key)
    if (this.skeletonKeys.size > 2 * Math.max(this.max, 64)) {
      this.skeletonKeys.clear()
      for (const key of this.skeletons.keys()) this.skeletonKeys.set(keyHash(key), key)
    }
  }

  /** Trims both caches when either is over its bounds (after something was kept). */
  trimIfOver(): void {
    if (this.texts.size > this.max || this.skeletons.size > this.max || this.textBytes + this.skeletonBytes > this.budget) this.trim()
  }

  // Second-chance LRU: a hit only sets `recent` (moving a Map key on every hit costs microseconds);
  // eviction walks from the oldest insertion, giving recently used entries another round at the end.
  // Each cache is held to the entry bound; over the byte budget, the heavier cache gives up entries
  // until both fit (so neither starves the other of the budget for long).
  private trim(): void {
    while (this.texts.size > this.max) this.textBytes -= this.evict(this.texts)
    while (this.skeletons.size > this.max) this.skeletonBytes -= this.evict(this.skeletons)
    while (this.textBytes + this.skeletonBytes > this.budget) {
      // nothing left to give up: the sums are the entries' own, so both are 0 then (never loop on)
      if (this.texts.size === 0 && this.skeletons.size === 0) {
        this.textBytes = this.skeletonBytes = 0
        break
      }
      if (this.textBytes >= this.skeletonBytes ? this.texts.size > 0 : this.skeletons.size === 0) this.textBytes -= this.evict(this.texts)
      else this.skeletonBytes -= this.evict(this.skeletons)
    }
  }

  /** Removes one entry, the oldest not used since its last round; returns its bytes. */
  private evict(map: Map<string, { recent: boolean; bytes?: number }>): number {
    for (const [key, entry] of map) {
      map.delete(key)
      if (entry.recent && this.max > 0 && this.budget > 0) {
        entry.recent = false
        map.set(key, entry)
      } else return entry.bytes ?? 0
    }
    return 0
  }
}
