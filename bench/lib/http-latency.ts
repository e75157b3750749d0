// Round-trip latency of one keep-alive connection sending one request at a time, timed with hrtime
// (autocannon reports whole milliseconds, too coarse for a loopback round trip).
import { Agent, request } from 'node:http'
import { percentile } from './stats.ts'
import { ScenarioError } from './types.ts'

export type LatencyResult = { p50Ms: number; p99Ms: number }

export async function httpLatency(o: { url: string; body: string; headers: Record<string, string>; requests: number; label: string }): Promise<LatencyResult> {
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  const url = new URL(o.url)
  const once = () => new Promise<number>((resolve, reject) => {
    const t0 = process.hrtime.bigint()
    const req = request({ agent, host: url.hostname, port: url.port, path: url.pathname, method: 'POST',
      headers: { ...o.headers, 'content-length': Buffer.byteLength(o.body) } }, res => {
      res.resume()
      res.on('end', () => {
        if (res.statusCode !== 200) return reject(new ScenarioError(`POST via ${o.label}: HTTP ${res.statusCode}`))
        resolve(Number(process.hrtime.bigint() - t0) / 1e6)
      })
    })
    req.on('error', err => reject(new ScenarioError(`POST via ${o.label}: ${err.message}`)))
    req.end(o.body)
  })
  try {
    for (let i = 0; i < 20; i++) await once() // warm the connection and the path
    const lat: number[] = []
    for (let i = 0; i < o.requests; i++) lat.push(await once())
    return { p50Ms: percentile(lat, 50), p99Ms: percentile(lat, 99) }
  } finally {
    agent.destroy()
  }
}
