// Reads one SSE stream to its end: time to first byte, events per second, and whether the text still
// carried what a mask should have removed.
import { request } from 'node:http'
import { ScenarioError } from './types.ts'

export type SseResult = { ttfbMs: number; eventsPerSec: number; events: number; mbps: number }

export function readSse(o: { host: string; port: number; token?: string; label: string; headers?: Record<string, string> }): Promise<SseResult & { leaked: boolean }> {
  const body = JSON.stringify({ model: 'gpt-4o-mini', stream: true, messages: [{ role: 'user', content: 'Tell me everything.' }] })
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint()
    let first = 0n
    let events = 0
    let bytes = 0
    let tail = ''
    let leaked = false
    let done = false
    const req = request({
      host: o.host, port: o.port, method: 'POST', path: '/v1/chat/completions',
      headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...(o.token ? { authorization: `Bearer ${o.token}` } : {}), ...o.headers },
    }, res => {
      if (res.statusCode !== 200) {
        let text = ''
        res.setEncoding('utf8').on('data', (d: string) => { text = (text + d).slice(0, 300) })
        res.on('end', () => reject(new ScenarioError(`SSE via ${o.label}: HTTP ${res.statusCode} ${text}`)))
        return
      }
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => {
        if (first === 0n) first = process.hrtime.bigint()
        bytes += chunk.length
        // count event terminators across chunk boundaries
        const text = tail + chunk
        let i = text.indexOf('\n\n')
        let last = 0
        while (i >= 0) { events++; last = i + 2; i = text.indexOf('\n\n', last) }
        if (!leaked && text.includes('alice.smith@example.com')) leaked = true
        if (!done && text.includes('data: [DONE]')) done = true
        tail = text.slice(Math.max(last, text.length - 64))
      })
      res.on('end', () => {
        const total = Number(process.hrtime.bigint() - t0) / 1e9
        if (!done) return reject(new ScenarioError(`SSE via ${o.label}: stream ended without [DONE]`))
        resolve({ ttfbMs: Number(first - t0) / 1e6, eventsPerSec: events / total, events, mbps: bytes / total / 1e6, leaked })
      })
      res.on('error', reject)
    })
    req.on('error', err => reject(new ScenarioError(`SSE via ${o.label}: ${err.message}`)))
    req.end(body)
  })
}
