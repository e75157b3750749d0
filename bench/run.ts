// `pnpm bench [--quick] [--only NAME] [--repeats N] [--workers N]`: runs every scenario in bench/scenarios against
// a direct connection, Portcullis (inspect and mask modes) and the reference proxy, prints a markdown
// table and writes bench/results/latest.md and latest.json. Exits 1 only when requests failed
// through the gateway; timings never fail a run.
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs'
import { join, dirname } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { parseArgs } from 'node:util'
import { Context } from './lib/context.ts'
import { machineFacts, markdown } from './lib/table.ts'
import { Unavailable, type Row, type Scenario } from './lib/types.ts'

const here = dirname(fileURLToPath(import.meta.url))
const { values } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    only: { type: 'string', multiple: true },
    repeats: { type: 'string' },
    // node:cluster workers of every Portcullis started (the `workers` config key); default 1
    workers: { type: 'string' },
  },
  allowPositionals: true,
})
const quick = values.quick ?? false
const repeats = Number(values.repeats ?? (quick ? 1 : 3))
const workers = Number(values.workers ?? 1)
if (!Number.isInteger(workers) || workers < 1) {
  process.stderr.write(`--workers must be a whole number from 1, not ${JSON.stringify(values.workers)}\n`)
  process.exit(2)
}

async function loadScenarios(): Promise<(Scenario & { file: string })[]> {
  const dir = join(here, 'scenarios')
  const files = readdirSync(dir).filter(f => f.endsWith('.ts')).sort()
  const out: (Scenario & { file: string })[] = []
  for (const f of files) {
    const mod = (await import(pathToFileURL(join(dir, f)).href)) as { default?: Scenario }
    // `--only` matches the scenario's name or its file name (`--only http-json`)
    if (mod.default) out.push({ ...mod.default, file: f.replace(/\.ts$/, '') })
  }
  return out
}

const ctx = new Context({ quick, repeats, workers })
const started = Date.now()
const rows: Row[] = []
const scenarioErrors: string[] = []
let interrupted = false
const onSignal = () => { interrupted = true }
process.once('SIGINT', onSignal)
process.once('SIGTERM', onSignal)

try {
  const all = await loadScenarios()
  const chosen = all.filter(s => (!quick || s.quick) && (!values.only?.length || values.only.some(o => s.name.includes(o) || s.file.includes(o))))
  for (const s of chosen) {
    if (interrupted) break
    ctx.enter(s.name)
    const t0 = Date.now()
    ctx.log(`${s.name}…`)
    try {
      rows.push(...(await s.run(ctx)))
    } catch (err) {
      if (err instanceof Unavailable) {
        const na = `n/a (${err.message})`
        rows.push({ scenario: s.name, metric: 'all', higherIsBetter: true, direct: na, portcullis: na, reference: na })
        continue
      }
      // a scenario that throws outside its measurements is a bench bug: show it, fail the run
      const msg = (err as Error).stack ?? String(err)
      scenarioErrors.push(`${s.name}: ${msg}`)
      rows.push({ scenario: s.name, metric: 'run', higherIsBetter: true, direct: 'error', portcullis: `error (${(err as Error).message.slice(0, 80)})`, reference: 'error' })
    }
    ctx.log(`${s.name} done in ${((Date.now() - t0) / 1000).toFixed(1)} s`)
  }
} finally {
  await ctx.close()
}

const machine = machineFacts()
const seconds = (Date.now() - started) / 1000
const md = markdown(rows, machine, { quick, repeats, seconds, workers })
process.stdout.write('\n' + md)
const resultsDir = join(here, 'results')
mkdirSync(resultsDir, { recursive: true })
writeFileSync(join(resultsDir, 'latest.md'), md)
writeFileSync(join(resultsDir, 'latest.json'), JSON.stringify({
  date: new Date().toISOString(), quick, repeats, workers, seconds, machine, rows,
  failures: [...ctx.failures, ...scenarioErrors],
}, null, 2) + '\n')

const failures = [...ctx.failures, ...scenarioErrors]
if (failures.length) {
  process.stdout.write(`\n${failures.length} failure(s):\n${failures.map(f => `- ${f}`).join('\n')}\n`)
  process.exit(1)
}
process.exit(interrupted ? 130 : 0)
