// Formats rows as the markdown table the issue asks for, and the machine facts above it.
import { cpus, loadavg, totalmem } from 'node:os'
import type { Row, Value } from './types.ts'

export interface Machine { cores: number; cpu: string; node: string; platform: string; memoryGB: number; loadAtEnd: number[] }

export function machineFacts(): Machine {
  const c = cpus()
  return {
    cores: c.length,
    cpu: c[0]?.model?.trim() ?? 'unknown',
    node: process.version,
    platform: `${process.platform} ${process.arch}`,
    memoryGB: Math.round(totalmem() / 2 ** 30),
    // other work on the machine skews every number: say how busy it was
    loadAtEnd: loadavg().map(l => Math.round(l * 100) / 100),
  }
}

export function fmt(v: Value): string {
  if (typeof v === 'string') return v
  if (!Number.isFinite(v)) return 'n/a'
  const a = Math.abs(v)
  if (a >= 1000) return Math.round(v).toLocaleString('en-US')
  if (a >= 100) return v.toFixed(0)
  if (a >= 10) return v.toFixed(1)
  if (a >= 1) return v.toFixed(2)
  return v.toFixed(3)
}

export function ratio(a: Value, b: Value): string {
  if (typeof a !== 'number' || typeof b !== 'number' || !Number.isFinite(a) || !Number.isFinite(b) || b === 0) return '—'
  return `${(a / b).toFixed(2)}×`
}

export function label(r: Row): string {
  return `${r.scenario} — ${r.metric}${r.mode ? ` [${r.mode}]` : ''}`
}

export function markdown(rows: Row[], machine: Machine, opts: { quick: boolean; repeats: number; seconds: number; workers?: number }): string {
  // the 2-worker column, where a scenario measured it: beside the run's own Portcullis column
  const two = rows.some(r => r.portcullis2 !== undefined)
  const workers = opts.workers ?? 1
  const lines = [
    `# Portcullis benchmark${opts.quick ? ' (quick)' : ''}`,
    '',
    `${machine.cores} cores · ${machine.cpu} · Node ${machine.node} · ${machine.platform} · ${machine.memoryGB} GB · load ${machine.loadAtEnd.join(' ')} · ` +
      `${opts.repeats === 1 ? 'one run' : `median of ${opts.repeats} runs`} per cell · ${opts.seconds.toFixed(0)} s in all`,
    '',
  ]
  // the extra paths (Row.columns) in the order the rows name them
  const extra = [...new Set(rows.flatMap(r => Object.keys(r.columns ?? {})))]
  lines.push(
    `| scenario | direct | Portcullis${workers > 1 ? ` (${workers} workers)` : ''} |${two ? ' Portcullis (2 workers) |' : ''} reference |${extra.map(c => ` ${c} |`).join('')} Portcullis/direct | Portcullis/reference |${extra.map(c => ` Portcullis/${c} |`).join('')}${two ? ' 2 workers/1 |' : ''}`,
    `|---|---:|---:|${two ? '---:|' : ''}---:|${extra.map(() => '---:|').join('')}---:|---:|${extra.map(() => '---:|').join('')}${two ? '---:|' : ''}`,
  )
  for (const r of rows) {
    const ref = typeof r.reference === 'number' && r.referenceName ? `${fmt(r.reference)} (${r.referenceName})` : fmt(r.reference)
    const other = (c: string) => r.columns?.[c]
    const p2 = r.portcullis2 === undefined ? '' : fmt(r.portcullis2)
    lines.push(
      `| ${label(r)} | ${fmt(r.direct)} | ${fmt(r.portcullis)} |${two ? ` ${p2} |` : ''} ${ref} |${extra.map(c => ` ${other(c) === undefined ? '—' : fmt(other(c)!)} |`).join('')} ` +
        `${ratio(r.portcullis, r.direct)} | ${ratio(r.portcullis, r.reference)} |${extra.map(c => ` ${ratio(r.portcullis, other(c) ?? '')} |`).join('')}` +
        `${two ? ` ${r.portcullis2 === undefined ? '' : ratio(r.portcullis2, r.portcullis)} |` : ''}`,
    )
  }
  const notes = rows.filter(r => r.note).map(r => `- ${label(r)}: ${r.note}`)
  if (notes.length) lines.push('', ...[...new Set(notes)])
  lines.push('', 'Ratios are Portcullis ÷ the other: above 1× is better for throughput (TPS, ops/s, MB/s), worse for latency and memory.')
  return lines.join('\n') + '\n'
}
