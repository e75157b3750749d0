#!/usr/bin/env node
// Bundles the workspace's TypeScript (packages/*, protocols/*, bench's gateway child) into dist/ so
// that the gateway runs on plain Node: no tsx loader thread, no transform cache, no source maps held
// in memory. Tests and development keep running the sources through tsx; `portcullis` and the bench
// use this output only while it is current (packages/gateway/bin/built.mjs says when).
//
//   node scripts/build.mjs            build unless the output is current
//   node scripts/build.mjs --force    build anyway
//   node scripts/build.mjs --check    exit 0 when current, 1 (with the reason) when not
//
// npm packages stay outside the bundle and load from their installed place: dist/node_modules links
// each one the bundled code imports to the copy its workspace package resolves, so Node's own
// resolution (exports, conditions, native addons, WASM next to its JS) applies exactly as it does
// for the sources. Each codec is a chunk of its own, loaded only when a target uses it.
import { createRequire, isBuiltin } from 'node:module'
import { existsSync, mkdirSync, readdirSync, readlinkSync, realpathSync, renameSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs'
import { dirname, join, relative, sep } from 'node:path'
import { pathToFileURL } from 'node:url'
import { readFile } from 'node:fs/promises'
import { builtEntry, DIST, MANIFEST, MANIFEST_VERSION, ROOT, stamp } from '../packages/gateway/bin/built.mjs'

/** output name → source; the bin runs the first, the bench spawns the second (when bench/ is there: an image has no bench) */
const ENTRIES = Object.fromEntries(Object.entries({
  portcullis: 'packages/gateway/src/cli.ts',
  'bench-gateway-child': 'bench/lib/gateway-child.ts',
}).filter(([, src]) => existsSync(join(ROOT, src))))
const WORKSPACE_DIRS = ['packages', 'protocols']
const WORKSPACE_SINGLE = ['fixtures', 'bench']
/**
 * Chunks no longer in the build stay this long after they were written: a gateway started from an
 * earlier build loads a codec's chunk only when a target first needs it (a reload may add one).
 */
const KEEP_OLD_CHUNKS_MS = 7 * 24 * 3600_000

const args = new Set(process.argv.slice(2))
const entryFiles = Object.keys(ENTRIES).map(n => `${n}.mjs`)
const say = msg => process.stderr.write(`build: ${msg}\n`)

function currentState() {
  for (const e of entryFiles) {
    const r = builtEntry(e)
    if (r.stale) return r.stale
  }
  return undefined
}

/** esbuild comes with tsx (the workspace already depends on it): no package of its own to keep in step */
async function loadEsbuild() {
  try {
    return await import('esbuild')
  } catch {
    const fromTsx = createRequire(createRequire(join(ROOT, 'package.json')).resolve('tsx/package.json'))
    return await import(pathToFileURL(fromTsx.resolve('esbuild')).href)
  }
}

/** files whose change can change the output besides the bundled sources */
function commonFiles() {
  const files = ['scripts/build.mjs', 'packages/gateway/bin/built.mjs', 'tsconfig.base.json', 'node_modules/.pnpm/lock.yaml']
  const pkgs = [...WORKSPACE_SINGLE]
  for (const d of WORKSPACE_DIRS) for (const p of readdirSync(join(ROOT, d))) pkgs.push(`${d}/${p}`)
  for (const p of pkgs) for (const f of ['package.json', 'tsconfig.json']) if (existsSync(join(ROOT, p, f))) files.push(`${p}/${f}`)
  return files.filter(f => existsSync(join(ROOT, f)))
}

/** the package name of a bare specifier: `pg-cursor/x` → `pg-cursor`, `@a/b/c` → `@a/b` */
function packageName(spec) {
  const parts = spec.split('/')
  return spec.startsWith('@') ? parts.slice(0, 2).join('/') : parts[0]
}

/** Node's package lookup: node_modules/<name> in the importer's directory or the nearest above it */
function findPackage(name, fromDir) {
  for (let dir = fromDir; ; dir = dirname(dir)) {
    const candidate = join(dir, 'node_modules', name)
    if (existsSync(candidate)) return realpathSync(candidate)
    if (dirname(dir) === dir) return undefined
  }
}

function workspacePlugin(externals) {
  return {
    name: 'portcullis-workspace',
    setup(build) {
      build.onResolve({ filter: /^[^./]/ }, args => {
        if (isBuiltin(args.path)) return { path: args.path, external: true }
        if (args.path.startsWith('@portcullis/')) return undefined // workspace source: bundled
        const name = packageName(args.path)
        const dir = findPackage(name, args.resolveDir)
        if (!dir) return { errors: [{ text: `cannot find package ${name} from ${relative(ROOT, args.resolveDir)}` }] }
        const seen = externals.get(name)
        if (seen && seen !== dir) {
          return { errors: [{ text: `two copies of ${name} (${relative(ROOT, seen)}, ${relative(ROOT, dir)}): one bundle cannot link both` }] }
        }
        externals.set(name, dir)
        return { path: args.path, external: true }
      })
      // import.meta.url keeps meaning the source file (redis loads its commands.json next to it)
      build.onLoad({ filter: /\.m?ts$/ }, async args => {
        const text = await readFile(args.path, 'utf8')
        if (!text.includes('import.meta.')) return undefined
        const url = pathToFileURL(args.path).href
        const contents = text
          .replace(/\bimport\.meta\.url\b/g, JSON.stringify(url))
          .replace(/\bimport\.meta\.filename\b/g, JSON.stringify(args.path))
          .replace(/\bimport\.meta\.dirname\b/g, JSON.stringify(dirname(args.path)))
        return { contents, loader: 'ts' }
      })
    },
  }
}

/** write-then-rename: a process starting meanwhile sees the old file or the new one, never half of one */
function writeAtomic(file, contents) {
  mkdirSync(dirname(file), { recursive: true })
  const tmp = `${file}.${process.pid}.tmp`
  writeFileSync(tmp, contents)
  renameSync(tmp, file)
}

function linkExternals(externals) {
  for (const [name, target] of externals) {
    const link = join(DIST, 'node_modules', name)
    const want = relative(dirname(link), target)
    let have
    try { have = readlinkSync(link) } catch { have = undefined }
    if (have === want) continue
    mkdirSync(dirname(link), { recursive: true })
    const tmp = `${link}.${process.pid}.tmp`
    try { unlinkSync(tmp) } catch { /* none left over */ }
    symlinkSync(want, tmp, 'dir')
    renameSync(tmp, link)
  }
}

function pruneOldChunks(keep) {
  const dir = join(DIST, 'chunks')
  if (!existsSync(dir)) return
  for (const f of readdirSync(dir)) {
    const file = join(dir, f)
    if (keep.has(file)) continue
    try {
      if (Date.now() - statSync(file).mtimeMs > KEEP_OLD_CHUNKS_MS) unlinkSync(file)
    } catch { /* another build removed it */ }
  }
}

/** source-like files of the workspace packages, stamped before esbuild reads any of them */
function stampSources() {
  const stamps = new Map()
  const walk = dir => {
    let names
    try { names = readdirSync(join(ROOT, dir), { withFileTypes: true }) } catch { return }
    for (const d of names) {
      const rel = `${dir}/${d.name}`
      if (d.isDirectory()) {
        if (d.name !== 'node_modules' && d.name !== 'dist' && !d.name.startsWith('.')) walk(rel)
      } else if (/\.(m?ts|m?js|json)$/.test(d.name)) stamps.set(rel, stamp(join(ROOT, rel)))
    }
  }
  for (const d of WORKSPACE_DIRS) for (const p of readdirSync(join(ROOT, d))) walk(`${d}/${p}`)
  for (const p of WORKSPACE_SINGLE) walk(p)
  return stamps
}

/** every input an entry reaches through static and dynamic imports (tree-shaken ones too) */
function inputsFrom(metafile, src, seen = new Set()) {
  if (seen.has(src) || !metafile.inputs[src]) return seen
  seen.add(src)
  for (const i of metafile.inputs[src].imports) if (!i.external) inputsFrom(metafile, i.path, seen)
  return seen
}

/** every chunk an output reaches through static and dynamic imports, itself included */
function outputsFrom(metafile, out, seen = new Set()) {
  if (seen.has(out)) return seen
  seen.add(out)
  for (const i of metafile.outputs[out].imports) if (!i.external) outputsFrom(metafile, i.path, seen)
  return seen
}

const same = (a, b) => a !== undefined && b !== undefined && a[0] === b[0] && a[1] === b[1]

async function build(esbuild) {
  const common = commonFiles()
  const before = stampSources()
  for (const f of common) before.set(f, stamp(join(ROOT, f)))
  const externals = new Map()
  const result = await esbuild.build({
    absWorkingDir: ROOT,
    entryPoints: ENTRIES,
    outdir: DIST,
    entryNames: '[name]',
    chunkNames: 'chunks/[name]-[hash]',
    outExtension: { '.js': '.mjs' },
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    // class and function names stay as written: errors and logs name them
    keepNames: true,
    // maps go to files of their own (node --enable-source-maps reads them); nothing is held in memory
    sourcemap: 'linked',
    metafile: true,
    write: false,
    logLevel: 'warning',
    plugins: [workspacePlugin(externals)],
  })
  // what a file was before esbuild read it
  const sources = {}
  for (const f of [...common, ...Object.keys(result.metafile.inputs)]) {
    const now = stamp(join(ROOT, f))
    const was = before.get(f) ?? now
    if (!same(was, now)) return undefined
    sources[f] = was
  }

  // chunks before entries before the manifest, so whatever a reader finds is complete
  const outs = [...result.outputFiles].sort((a, b) => rank(a.path) - rank(b.path))
  for (const o of outs) writeAtomic(o.path, o.contents)
  linkExternals(externals)
  const outputs = {}
  for (const o of outs) outputs[relative(DIST, o.path)] = stamp(o.path)

  const entries = {}
  for (const [name, src] of Object.entries(ENTRIES)) {
    // metafile paths are relative to the working directory (ROOT); the manifest's outputs to DIST
    const out = relative(ROOT, join(DIST, `${name}.mjs`))
    const reached = [...outputsFrom(result.metafile, out)].map(o => relative(DIST, join(ROOT, o)))
    entries[`${name}.mjs`] = { source: src, inputs: [...inputsFrom(result.metafile, src)].sort(), outputs: reached.sort() }
  }
  const manifest = { version: MANIFEST_VERSION, root: ROOT, dist: DIST, esbuild: esbuild.version, common, entries, sources, outputs }
  writeAtomic(MANIFEST, JSON.stringify(manifest, null, 1) + '\n')
  pruneOldChunks(new Set(outs.map(o => o.path)))
  return { outs, externals }
}

function rank(path) {
  if (path.endsWith('.map')) return 0
  return path.includes(`${sep}chunks${sep}`) ? 1 : 2
}

async function main() {
  if (args.has('--check')) {
    const stale = currentState()
    if (stale) say(`stale: ${stale}`)
    else say('current')
    return stale ? 1 : 0
  }
  if (!args.has('--force')) {
    const stale = currentState()
    if (!stale) {
      if (!args.has('--quiet')) say(`${relative(ROOT, DIST)} is current`)
      return 0
    }
    if (!args.has('--quiet')) say(`building (${stale})`)
  }
  const esbuild = await loadEsbuild()
  const started = Date.now()
  for (let attempt = 1; attempt <= 3; attempt++) {
    let done
    try {
      done = await build(esbuild)
    } catch (err) {
      // esbuild has printed its errors; the old output, if any, is stale and stays unused
      if (!err.errors) say(err.stack ?? String(err))
      say('failed: the gateway keeps running from the sources through tsx')
      return 1
    }
    // a source edited while esbuild read it, or right after: the output may be half-old, build again
    const stale = done ? currentState() : 'a source changed during the build'
    if (!stale) {
      const size = done.outs.filter(o => !o.path.endsWith('.map')).reduce((n, o) => n + o.contents.length, 0)
      if (!args.has('--quiet')) say(`${relative(ROOT, DIST) || DIST} built in ${Date.now() - started} ms: ${done.outs.length} files, ${(size / 1024).toFixed(0)} KB of JS, ${done.externals.size} npm packages linked`)
      return 0
    }
    say(`${stale}; building again`)
  }
  say('sources kept changing during the build: the output stays unused until a build holds')
  return 1
}

process.exitCode = await main()
