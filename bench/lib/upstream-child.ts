// A STAND-IN UPSTREAM for the HTTP scenarios, not a real LLM API: it answers OpenAI-shaped chat
// completions so that Portcullis's OpenAI-compatible profile sees what it would in production. It runs
// in its own process, keeps no per-request state and writes SSE events as fast as the socket takes
// them (the test fixture paces its events and records every request, which would measure itself).
// Prints {"port": N} on stdout once listening.
import { createServer } from 'node:http'

const EVENTS = Number(process.env.BENCH_SSE_EVENTS ?? 2000)
// one sentence per delta; every one carries an email address for the mask mode's detector to find
const DELTA = 'Contact alice.smith@example.com for the quarterly numbers. '
const base = { id: 'chatcmpl-bench', created: 1700000000, model: 'gpt-4o-mini' }

// ~1 KB response: the reply text, plus a user object with a field a masking rule can name
const reply = 'The answer is in the attached report; '.repeat(18)
const completion = Buffer.from(JSON.stringify({
  ...base,
  object: 'chat.completion',
  choices: [{ index: 0, message: { role: 'assistant', content: reply, refusal: null }, finish_reason: 'stop', logprobs: null }],
  usage: { prompt_tokens: 200, completion_tokens: 180, total_tokens: 380 },
  user: { name: 'Alice Smith', email: 'alice.smith@example.com' },
}))

const chunk = (delta: Record<string, unknown>, finish: string | null) =>
  `data: ${JSON.stringify({ ...base, object: 'chat.completion.chunk', choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }] })}\n\n`
const stream = Buffer.from([
  chunk({ role: 'assistant', content: '' }, null),
  ...Array.from({ length: EVENTS }, () => chunk({ content: DELTA }, null)),
  chunk({}, 'stop'),
  'data: [DONE]\n\n',
].join(''))

const server = createServer((req, res) => {
  const parts: Buffer[] = []
  req.on('data', (c: Buffer) => parts.push(c))
  req.on('end', () => {
    let wantsStream = false
    try { wantsStream = JSON.parse(Buffer.concat(parts).toString('utf8')).stream === true } catch { /* not JSON: answer plainly */ }
    if (!wantsStream) {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': completion.length })
      res.end(completion)
      return
    }
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
    // the first event alone, so time to first byte means the first event, then the rest in 16 KB writes
    const first = stream.indexOf('\n\n') + 2
    res.write(stream.subarray(0, first))
    let off = first
    const pump = () => {
      while (off < stream.length) {
        const end = Math.min(stream.length, off + 16384)
        const ok = res.write(stream.subarray(off, end))
        off = end
        if (!ok) return void res.once('drain', pump)
      }
      res.end()
    }
    setImmediate(pump)
  })
})
server.keepAliveTimeout = 60_000
server.listen(0, '127.0.0.1', () => {
  const addr = server.address()
  process.stdout.write(JSON.stringify({ port: typeof addr === 'object' && addr ? addr.port : 0 }) + '\n')
})
process.on('SIGTERM', () => process.exit(0))
