#!/usr/bin/env node
// `portcullis`: runs the build in dist/ (scripts/build.mjs; plain Node, about half the memory) when
// it is current, else the TypeScript sources through tsx's loader, as development and tests do.
// Output older than any file it was built from never runs (built.mjs). PORTCULLIS_RUN=source
// always takes the sources; PORTCULLIS_RUN=build refuses to start without a current build.
import { pathToFileURL } from 'node:url'
import { runtimeFor } from './built.mjs'
import { applyV8Flags } from './v8-flags.mjs'

applyV8Flags()

const want = process.env.PORTCULLIS_RUN ?? 'auto'
if (want !== 'auto' && want !== 'build' && want !== 'source') {
  process.stderr.write(`portcullis: PORTCULLIS_RUN must be auto, build or source, not ${JSON.stringify(want)}\n`)
  process.exit(2)
}
const built = runtimeFor('portcullis.mjs', want)
if (built.file) {
  await import(pathToFileURL(built.file).href)
} else if (built.refuse) {
  process.stderr.write(`portcullis: ${built.refuse}\n`)
  process.exit(2)
} else {
  const { register } = await import('tsx/esm/api')
  register()
  await import('../src/cli.ts')
}
