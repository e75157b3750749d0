// Resolves secret references. Values live only in memory and are never logged; errors name the
// secret and the provider, never the value.
import { execFile } from 'node:child_process'
import { watch, type FSWatcher } from 'node:fs'
import { readFile, stat } from 'node:fs/promises'
import { PortcullisError } from '../errors.ts'
import type { SecretRef } from '../types.ts'
import type { SecretSource } from '../config/types.ts'

export interface SecretStore {
  get(ref: SecretRef): Promise<string>
  /** swaps the definitions (config reload); cached values of changed definitions are dropped */
  update(sources: Record<string, SecretSource>): void
  close(): void
}

interface FileEntry {
  value: string
  mtimeMs: number
  size: number
  watcher?: FSWatcher
  stale: boolean
}

export function createSecretStore(
  sources: Record<string, SecretSource>,
  opts: { now?: () => number; env?: NodeJS.ProcessEnv } = {},
): SecretStore {
  const now = opts.now ?? Date.now
  const env = opts.env ?? process.env
  let defs = sources
  const files = new Map<string, FileEntry>()
  const execs = new Map<string, { value: string; expires: number; key: string } | Promise<string>>()

  const unavailable = (name: string, why: string) =>
    new PortcullisError('SECRET_UNAVAILABLE', `secret "${name}" unavailable: ${why}`, { secret: name })

  async function fromFile(name: string, path: string): Promise<string> {
    let entry = files.get(path)
    let st
    try {
      st = await stat(path)
    } catch (err) {
      throw unavailable(name, `cannot read file (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
    }
    // The watcher marks the entry stale; the mtime/size check catches what watchers miss
    // (editors that replace the file, network filesystems).
    if (entry && !entry.stale && entry.mtimeMs === st.mtimeMs && entry.size === st.size) return entry.value
    let text: string
    try {
      text = await readFile(path, 'utf8')
    } catch (err) {
      throw unavailable(name, `cannot read file (${(err as NodeJS.ErrnoException).code ?? 'error'})`)
    }
    const value = text.replace(/\r?\n$/, '')
    if (!entry) {
      entry = { value, mtimeMs: st.mtimeMs, size: st.size, stale: false }
      files.set(path, entry)
    } else {
      entry.value = value
      entry.mtimeMs = st.mtimeMs
      entry.size = st.size
      entry.stale = false
    }
    // Re-watch after each read: a file replaced by rename (Kubernetes, editors) is a new inode.
    entry.watcher?.close()
    const e = entry
    try {
      e.watcher = watch(path, { persistent: false }, () => {
        e.stale = true
      })
      e.watcher.on('error', () => {
        e.stale = true
      })
    } catch {
      e.watcher = undefined // no watcher: the mtime check still rotates it
    }
    return value
  }

  function fromExec(name: string, argv: string[], ttl: number): Promise<string> {
    const key = JSON.stringify(argv)
    const cached = execs.get(name)
    if (cached instanceof Promise) return cached
    if (cached && cached.key === key && cached.expires > now()) return Promise.resolve(cached.value)
    const p = new Promise<string>((resolve, reject) => {
      execFile(argv[0], argv.slice(1), { timeout: 10_000, maxBuffer: 1 << 20, env }, (err, stdout) => {
        if (err) {
          // stderr may echo the secret: leave it out
          const code = (err as NodeJS.ErrnoException).code ?? (err as { status?: number }).status
          reject(unavailable(name, `command failed (${code ?? 'error'})`))
        } else resolve(stdout.replace(/\r?\n$/, ''))
      })
    })
    execs.set(name, p)
    p.then(
      value => execs.set(name, { value, expires: now() + ttl, key }),
      () => execs.delete(name),
    )
    return p
  }

  return {
    async get(ref) {
      const name = ref.secret
      const def = Object.prototype.hasOwnProperty.call(defs, name) ? defs[name] : undefined
      if (!def) throw unavailable(name, 'not defined')
      if ('env' in def) {
        const v = env[def.env]
        if (v === undefined || v === '') throw unavailable(name, `environment variable ${def.env} is not set`)
        return v
      }
      if ('file' in def) return fromFile(name, def.file)
      return fromExec(name, def.exec, def.ttl)
    },
    update(next) {
      for (const [name, def] of Object.entries(defs)) {
        if (JSON.stringify(next[name]) !== JSON.stringify(def)) execs.delete(name)
      }
      defs = next
    },
    close() {
      for (const e of files.values()) e.watcher?.close()
      files.clear()
      execs.clear()
    },
  }
}
