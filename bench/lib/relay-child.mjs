// The floor a Node proxy can reach on this machine, in a process of its own (one event loop, like
// the gateway's): `tcp HOST PORT` pipes each connection to the upstream with no logic at all;
// `http HOST PORT` is a minimal node:http server that forwards every request through an undici
// keep-alive pool and streams the answer back. Plain JavaScript: nothing is compiled at start.
// Prints {"port": N} on stdout once listening.
import { createServer as createTcp, connect } from 'node:net'
import { createServer as createHttp } from 'node:http'

const [kind, host, portText] = process.argv.slice(2)
const port = Number(portText)

let server
if (kind === 'tcp') {
  server = createTcp({ noDelay: true }, client => {
    const upstream = connect({ host, port, noDelay: true })
    client.pipe(upstream)
    upstream.pipe(client)
    const done = () => { client.destroy(); upstream.destroy() }
    client.on('error', done)
    upstream.on('error', done)
    client.on('close', done)
    upstream.on('close', done)
  })
} else if (kind === 'http') {
  const { Pool } = await import('undici')
  const pool = new Pool(`http://${host}:${port}`, { connections: 128, pipelining: 1 })
  server = createHttp(async (req, res) => {
    try {
      const headers = { ...req.headers }
      delete headers.host
      delete headers.connection
      const r = await pool.request({ path: req.url, method: req.method, headers, body: req })
      const out = {}
      for (const [k, v] of Object.entries(r.headers)) if (k !== 'connection' && k !== 'keep-alive' && k !== 'transfer-encoding') out[k] = v
      res.writeHead(r.statusCode, out)
      r.body.pipe(res)
    } catch (err) {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' })
      res.end(String(err?.message ?? err))
    }
  })
  server.keepAliveTimeout = 60_000
} else {
  process.stderr.write(`usage: relay-child.mjs tcp|http HOST PORT\n`)
  process.exit(2)
}
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ port: server.address().port }) + '\n')
})
process.on('SIGTERM', () => process.exit(0))
