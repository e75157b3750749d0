// docker/ cannot be built here (no Docker engine); what can be checked without one is checked here,
// so a config change that breaks the compose deployment fails CI.
import t from 'tap'
import { spawnSync } from 'node:child_process'
import { join, dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = join(dirname(fileURLToPath(import.meta.url)), '../../..')

t.test('the compose deployment: its config passes check-config and agrees with the compose file and Dockerfile', async t => {
  const run = spawnSync(process.execPath, ['--import', 'tsx', join(root, 'bench/check-docker.ts')], { encoding: 'utf8', cwd: root })
  t.equal(run.status, 0, run.stdout + run.stderr)
  t.match(run.stdout, /check-docker: ok/)
})
