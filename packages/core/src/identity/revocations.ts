import type { RevocationEntry } from '../config/types.ts'
import type { Principal } from '../types.ts'

/** Revoked subjects and token ids: from the config file plus those added at runtime (admin API). */
export class Revocations {
  #fromConfig = { subjects: new Set<string>(), jtis: new Set<string>() }
  #runtime = { subjects: new Set<string>(), jtis: new Set<string>() }

  constructor(entries: RevocationEntry[] = []) {
    this.setConfigured(entries)
  }

  /** config reload replaces the configured list; runtime revocations stay */
  setConfigured(entries: RevocationEntry[]): void {
    this.#fromConfig = { subjects: new Set(), jtis: new Set() }
    for (const e of entries) this.#addTo(this.#fromConfig, e)
  }

  add(entry: RevocationEntry): void {
    this.#addTo(this.#runtime, entry)
  }

  list(): RevocationEntry[] {
    const out: RevocationEntry[] = []
    for (const set of [this.#fromConfig, this.#runtime]) {
      for (const subject of set.subjects) out.push({ subject })
      for (const jti of set.jtis) out.push({ jti })
    }
    return out
  }

  // asked before every operation (Session.assertAlive): two lookups per list, no array to walk them
  isRevoked(p: Pick<Principal, 'subject' | 'tokenId'>): boolean {
    return revokedIn(this.#fromConfig, p) || revokedIn(this.#runtime, p)
  }

  #addTo(set: { subjects: Set<string>; jtis: Set<string> }, e: RevocationEntry) {
    if (e.subject) set.subjects.add(e.subject)
    if (e.jti) set.jtis.add(e.jti)
  }
}

function revokedIn(set: { subjects: Set<string>; jtis: Set<string> }, p: Pick<Principal, 'subject' | 'tokenId'>): boolean {
  return set.subjects.has(p.subject) || (p.tokenId !== undefined && set.jtis.has(p.tokenId))
}
