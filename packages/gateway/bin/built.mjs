// Where the workspace build (scripts/build.mjs) lives and whether one of its entries may run.
// Plain JavaScript on purpose: the bin reads this before it knows whether it needs tsx.
//
// A build records every file it was made from with its mtime and size as they were when the build
// read them (dist/manifest.json, written last). An entry may run only if each of those files is
// still there with the same mtime and size: an edit, a checkout, a `pnpm install` (its lock file is
// one of the files) or a moved checkout makes it stale, and stale output never runs; so does output
// that was touched or removed since (its files are recorded the same way). The check is one small
// JSON read and a stat per source file (a millisecond or two).
import { readFileSync, statSync } from 'node:fs'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

/** the workspace root: sources are recorded relative to it */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../../..')
/** the build's directory; PORTCULLIS_DIST puts it elsewhere (the bin's own test builds into a temp dir) */
export const DIST = process.env.PORTCULLIS_DIST ? resolve(process.env.PORTCULLIS_DIST) : join(ROOT, 'dist')
export const MANIFEST = join(DIST, 'manifest.json')
export const MANIFEST_VERSION = 1

/** the [mtimeMs, size] a build records for a file; undefined when the file is gone */
export function stamp(file) {
  try {
    const s = statSync(file)
    return [s.mtimeMs, s.size]
  } catch {
    return undefined
  }
}

/**
 * The output file of a build entry (`portcullis.mjs`, `bench-gateway-child.mjs`) when it may run,
 * else why not: `{ file }` or `{ stale }`.
 */
export function builtEntry(entry) {
  let manifest
  try {
    manifest = JSON.parse(readFileSync(MANIFEST, 'utf8'))
  } catch (err) {
    return { stale: err.code === 'ENOENT' ? 'there is no build' : `unreadable build manifest: ${err.message}` }
  }
  if (manifest.version !== MANIFEST_VERSION) return { stale: `build manifest version ${manifest.version}` }
  if (manifest.root !== ROOT || manifest.dist !== DIST) return { stale: `built for ${manifest.root} into ${manifest.dist}` }
  const e = manifest.entries?.[entry]
  if (!e) return { stale: `the build has no ${entry}` }
  const changed = (files, dir, table) => files.find(rel => {
    const want = table[rel]
    const now = stamp(join(dir, rel))
    return !want || !now || now[0] !== want[0] || now[1] !== want[1]
  })
  const source = changed([...manifest.common, ...e.inputs], ROOT, manifest.sources)
  if (source) return { stale: `${source} changed since the build` }
  const output = changed(e.outputs, DIST, manifest.outputs)
  if (output) return { stale: `the build's ${output} changed or is gone` }
  return { file: join(DIST, entry) }
}

/**
 * What PORTCULLIS_RUN (auto, build, source) makes of one entry: `{ file }` to run the build,
 * `{ stale }` to run the sources, `{ stale, refuse }` when the build was required and cannot run.
 */
export function runtimeFor(entry, want = process.env.PORTCULLIS_RUN ?? 'auto') {
  if (want === 'source') return { stale: 'PORTCULLIS_RUN=source' }
  const built = builtEntry(entry)
  if (built.file || want !== 'build') return built
  return { ...built, refuse: `PORTCULLIS_RUN=build but the build cannot run: ${built.stale} (node scripts/build.mjs makes it)` }
}
