import t from 'tap'
import { Metrics, DURATION_BUCKETS } from '../src/metrics/metrics.ts'

t.test('metrics render as Prometheus text with cumulative histogram buckets', async t => {
  const m = new Metrics()
  m.sessions = 2
  m.operation('read', 'allow')
  m.operation('read', 'allow')
  m.operation('schema-change', 'block')
  m.bytes('out', 100)
  m.bytes('out', 50)
  m.bytes('in', 7)
  m.duration(0.003)
  m.duration(0.2)
  m.duration(100)
  m.backlog = () => 4096
  const text = m.render()
  t.match(text, /^# TYPE portcullis_sessions gauge\nportcullis_sessions 2$/m)
  t.match(text, /^portcullis_operations_total\{class="read",decision="allow"\} 2$/m)
  t.match(text, /^portcullis_operations_total\{class="schema-change",decision="block"\} 1$/m)
  t.match(text, /^portcullis_bytes_total\{direction="out"\} 150$/m)
  t.match(text, /^portcullis_bytes_total\{direction="in"\} 7$/m)
  t.match(text, /^portcullis_operation_duration_seconds_bucket\{le="0\.001"\} 0$/m)
  t.match(text, /^portcullis_operation_duration_seconds_bucket\{le="0\.005"\} 1$/m)
  t.match(text, /^portcullis_operation_duration_seconds_bucket\{le="0\.25"\} 2$/m)
  t.match(text, /^portcullis_operation_duration_seconds_bucket\{le="30"\} 2$/m)
  t.match(text, /^portcullis_operation_duration_seconds_bucket\{le="\+Inf"\} 3$/m)
  t.match(text, /^portcullis_operation_duration_seconds_count 3$/m)
  t.match(text, /^portcullis_operation_duration_seconds_sum 100\.203$/m)
  t.match(text, /^portcullis_recorder_backlog 4096$/m)
  t.equal(text.match(/_bucket\{/g)?.length, DURATION_BUCKETS.length + 1)
  t.ok(text.endsWith('\n'))
  // every sample line is `name{labels} value` or `name value`
  for (const line of text.split('\n').filter(l => l && !l.startsWith('#')))
    t.match(line, /^[a-z_]+(\{[a-z]+="[^"]*"(,[a-z]+="[^"]*")*\})? [0-9.e+-]+$/, line)
})

t.test('label values are escaped', async t => {
  const m = new Metrics()
  m.operation('we"ird\\', 'allow')
  t.match(m.render(), /class="we\\"ird\\\\"/)
})
