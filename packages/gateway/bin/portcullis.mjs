#!/usr/bin/env node
// The CLI runs the TypeScript sources through tsx's loader: one artifact for dev, tests and the image.
import { register } from 'tsx/esm/api'
register()
await import('../src/cli.ts')
