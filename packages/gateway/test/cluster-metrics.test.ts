// /metrics of a host with workers: each worker's text (core's own Metrics.render()), summed.
import t from 'tap'
import { Metrics } from '@portcullis/core'
import { sumMetrics } from '../src/cluster-metrics.ts'

t.test("two workers' figures sum series by series, each family's lines kept together under one HELP/TYPE", async (t) => {
  const a = new Metrics()
  const b = new Metrics()
  a.sessions = 2
  b.sessions = 3
  a.operation('read', 'allow')
  a.operation('read', 'allow')
  b.operation('read', 'allow')
  b.operation('write', 'approve') // a series only one worker has
  a.bytes('in', 100)
  b.bytes('in', 50)
  a.duration(0.002)
  b.duration(0.2)
  const text = sumMetrics([a.render(), b.render()])
  t.match(text, /^portcullis_sessions 5$/m)
  t.match(text, /^portcullis_operations_total\{class="read",decision="allow"\} 3$/m)
  t.match(text, /^portcullis_operations_total\{class="write",decision="approve"\} 1$/m)
  t.match(text, /^portcullis_bytes_total\{direction="in"\} 150$/m)
  t.match(text, /^portcullis_operation_duration_seconds_bucket\{le="0.005"\} 1$/m)
  t.match(text, /^portcullis_operation_duration_seconds_bucket\{le="0.25"\} 2$/m)
  t.match(text, /^portcullis_operation_duration_seconds_count 2$/m)
  const lines = text.trim().split('\n')
  t.equal(lines.filter((l) => l === '# TYPE portcullis_operations_total counter').length, 1, 'one TYPE line per family')
  // every series line sits after its own family's TYPE line and before the next family's
  const typeAt = lines.findIndex((l) => l.startsWith('# TYPE portcullis_operations_total'))
  const nextHelp = lines.findIndex((l, i) => i > typeAt && l.startsWith('# HELP'))
  const ops = lines.map((l, i) => [l, i] as const).filter(([l]) => l.startsWith('portcullis_operations_total{')).map(([, i]) => i)
  t.ok(ops.every((i) => i > typeAt && i < nextHelp), 'the write series joined its family, not the end of the text')
  t.equal(sumMetrics([a.render()]), a.render(), "one worker's text comes back as it was")
})
