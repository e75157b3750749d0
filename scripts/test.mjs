#!/usr/bin/env node
// Runs the whole test suite in one tap run and ends with the line CI reads: `N passed, N failed`.
// A test is a direct subtest of a test file (t.test); a file that fails outside any subtest (a crash,
// a syntax error, a timeout) counts as one failed test of its own.
import { spawn } from 'node:child_process'
import { createInterface } from 'node:readline'

const args = process.argv.slice(2)
const files = args.length > 0 ? args : []
const child = spawn('pnpm', ['exec', 'tap', '--reporter=tap', ...files], {
  stdio: ['ignore', 'pipe', 'inherit'],
  env: process.env,
})

let passed = 0
let failed = 0
let skipped = 0
let fileFailures = 0
const failedNames = []
const rl = createInterface({ input: child.stdout })
rl.on('line', line => {
  process.stdout.write(line + '\n')
  let m = /^ {4}(not ok|ok) \d+ - (.*)$/.exec(line)
  if (m) {
    if (/# SKIP/i.test(m[2]) || /# TODO/i.test(m[2])) skipped++
    else if (m[1] === 'ok') passed++
    else { failed++; fileFailures++; failedNames.push(m[2]) }
    return
  }
  m = /^(not ok|ok) \d+ - (.*)$/.exec(line)
  if (m) {
    // a failed file whose subtests all passed failed on its own: count it once
    if (m[1] === 'not ok' && fileFailures === 0) { failed++; failedNames.push(m[2]) }
    fileFailures = 0
  }
})

child.on('close', code => {
  if (failedNames.length) {
    console.log('\nFailed:')
    for (const n of failedNames) console.log('  - ' + n)
  }
  if (code !== 0 && failed === 0) failed = 1 // tap itself failed (config, crash): never report green
  console.log(`${passed} passed, ${failed} failed` + (skipped ? `, ${skipped} skipped` : ''))
  process.exit(failed > 0 ? 1 : 0)
})
