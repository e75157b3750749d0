// The gateway ends, answers and frames sessions exactly as Postgres 15 does: every case is sent
// byte for byte to the real server directly and through the gateway, and what each client received
// (every byte, then EOF) is compared.
import t from 'tap'
import pg from 'pg'
import { connect, type Socket } from 'node:net'
import { connect as tlsConnect } from 'node:tls'
import { once } from 'node:events'
import { startGateway, DEFAULT_RULES, type Gateway } from './harness.ts'
import { startPostgres } from '@portcullis/fixtures/postgres'
import { readRecording, verifyRecording } from '@portcullis/core'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { serializePasswordMessage, serializeQuery, serializeSSLRequest, serializeStartupMessage, TERMINATE } from '../src/frontend.ts'
import { BufferWriter } from '../src/buffer-writer.ts'
import { BufferReader } from '../src/buffer-reader.ts'
import { parseNoticeFields } from '../src/backend.ts'

interface Exchange {
  bytes: Buffer
  /** the server sent EOF */
  ended: boolean
}

type Until = (what: (bytes: Buffer) => boolean) => Promise<void>
type Steps = (s: Socket, until: Until) => Promise<void> | void

/** A raw client: `steps` writes (and may wait for bytes); every byte the server sends is kept until its EOF. */
async function exchange(port: number, steps: Steps): Promise<Exchange> {
  const s = connect({ host: '127.0.0.1', port, allowHalfOpen: true })
  s.setNoDelay(true)
  await once(s, 'connect')
  const chunks: Buffer[] = []
  let size = 0
  let waiter: { what: (bytes: Buffer) => boolean; resolve: () => void } | undefined
  let ended = false
  const finished = new Promise<void>(resolve => {
    s.on('end', () => {
      ended = true
      resolve()
    })
    s.on('close', () => resolve())
  })
  s.on('error', () => undefined)
  s.on('data', (c: Buffer) => {
    chunks.push(c)
    size += c.length
    if (waiter && waiter.what(Buffer.concat(chunks))) waiter.resolve()
  })
  const until: Until = what =>
    ended || what(Buffer.concat(chunks, size)) ? Promise.resolve() : Promise.race([new Promise<void>(resolve => (waiter = { what, resolve })), finished])
  await steps(s, until)
  await finished
  s.destroy()
  return { bytes: Buffer.concat(chunks), ended }
}

interface Message {
  code: string
  raw: Buffer
}

/** backend messages; a leading single-byte SSL answer ('N') is a message of its own */
function messages(bytes: Buffer): Message[] {
  const out: Message[] = []
  let off = 0
  if (bytes[0] === 0x4e && (bytes.length === 1 || bytes[1] !== 0)) {
    out.push({ code: 'SSL answer N', raw: bytes.subarray(0, 1) })
    off = 1
  }
  while (off + 5 <= bytes.length) {
    const end = off + 1 + bytes.readInt32BE(off + 1)
    out.push({ code: String.fromCharCode(bytes[off]), raw: bytes.subarray(off, end) })
    off = end
  }
  if (off !== bytes.length) out.push({ code: '<partial>', raw: bytes.subarray(off) })
  return out
}

function fields(m: Message): Record<string, string> {
  return parseNoticeFields(new BufferReader(m.raw, 5))
}

/**
 * What a client can tell apart: BackendKeyData differs per connection by design; an error's source
 * file, line and routine are the server's (the gateway's own FATALs have none).
 */
function comparable(bytes: Buffer): unknown[] {
  return messages(bytes).map(m => {
    if (m.code === 'K') return 'K'
    if (m.code === 'E' || m.code === 'N') {
      const { F: _f, L: _l, R: _r, ...rest } = fields(m)
      return { [m.code]: rest }
    }
    return m.raw.toString('latin1')
  })
}

/** the bytes after the first ReadyForQuery: what the session's queries got */
function afterLogin(bytes: Buffer): Buffer {
  for (const m of messages(bytes)) if (m.code === 'Z') return bytes.subarray(m.raw.byteOffset - bytes.byteOffset + m.raw.length)
  throw new Error('no ReadyForQuery in ' + JSON.stringify(bytes.toString('latin1')))
}

/** the password request has come */
const askedForPassword = (bytes: Buffer) => bytes.length >= 9
/** the login's ReadyForQuery has come */
const loggedIn = (bytes: Buffer) => messages(bytes).some(m => m.code === 'Z')

const wait = (ms: number) => new Promise(r => setTimeout(r, ms))
const turn = () => new Promise(r => setImmediate(r))

function extendedQuery(sql: string, param: string): Buffer {
  return Buffer.concat([
    new BufferWriter().cstring('').cstring(sql).int16(0).message('P'),
    new BufferWriter().cstring('').cstring('').int16(0).int16(1).int32(Buffer.byteLength(param)).bytes(Buffer.from(param)).int16(0).message('B'),
    new BufferWriter().int8(0x50).cstring('').message('D'),
    new BufferWriter().cstring('').int32(0).message('E'),
    new BufferWriter().message('S'),
  ])
}

const GSSENC_REQUEST = Buffer.from([0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x30])

/** the statements every pipelined session below runs, then Terminate */
const QUERIES = Buffer.concat([
  serializeQuery(`select 1 as one, 'a text with FROM in it' as t`),
  extendedQuery('select $1::int + 1 as two', '41'),
  serializeQuery('select n, repeat(chr(65 + n), n) as s from generate_series(1, 20) n'),
])

t.test('the gateway behaves like Postgres 15', async t => {
  // cleartext password auth upstream: the direct server then asks for the password exactly as the gateway does
  const gw: Gateway = await startGateway({ postgres: { auth: 'password' } })
  t.teardown(() => gw.stop())
  const direct = new pg.Client({ connectionString: gw.pg.url })
  await direct.connect()
  t.teardown(() => direct.end())
  const token = await gw.token()
  const startup = (app = 'server-behaviour') => serializeStartupMessage({ user: gw.pg.user, database: gw.pg.database, application_name: app })
  const secret = (port: number) => (port === gw.port ? token : gw.pg.password)
  const backends = async (app: string) =>
    (await direct.query('select count(*)::int as n from pg_stat_activity where application_name = $1', [app])).rows[0].n as number
  const noBackendsLeft = async (app: string) => {
    // the backend exits right after its last reply: give it the moment it takes
    for (let i = 0; i < 100 && (await backends(app)) > 0; i++) await wait(50)
    return backends(app)
  }

  t.test('before and during startup: silence where Postgres is silent, its own FATAL where it speaks', async t => {
    const startupLength = startup().length
    const cases: [string, Steps][] = [
      ['Terminate before the StartupMessage (pg: connect(); end())', s => void s.write(TERMINATE)],
      ['Terminate before the StartupMessage, then FIN', s => void s.end(TERMINATE)],
      ['TCP connect, then FIN with nothing sent', s => void s.end()],
      ['half a length word, then FIN', s => void s.end(Buffer.from([0, 0]))],
      ['half a StartupMessage, then FIN', s => void s.end(startup().subarray(0, 11))],
      ['a startup length past the limit', s => {
        const h = Buffer.alloc(8)
        h.writeInt32BE(50_000, 0)
        h.writeInt32BE(196608, 4)
        s.write(h)
      }],
      ["a startup length one past Postgres's 10,000 bytes", s => {
        const h = Buffer.alloc(8)
        h.writeInt32BE(10_005, 0)
        h.writeInt32BE(196608, 4)
        s.write(h)
      }],
      ['a startup length below the minimum', s => {
        const h = Buffer.alloc(8)
        h.writeInt32BE(7, 0)
        h.writeInt32BE(196608, 4)
        s.write(h)
      }],
      ['SSLRequest, then Terminate', async (s, until) => {
        s.write(serializeSSLRequest())
        await until(b => b.length >= 1)
        s.write(TERMINATE)
      }],
      ['SSLRequest, then FIN', async (s, until) => {
        s.write(serializeSSLRequest())
        await until(b => b.length >= 1)
        s.end()
      }],
      ['SSLRequest and Terminate in one write', s => void s.write(Buffer.concat([serializeSSLRequest(), TERMINATE]))],
      ['SSLRequest and StartupMessage in one write', s => void s.write(Buffer.concat([serializeSSLRequest(), startup()]))],
      ['StartupMessage, then Terminate instead of the password', async (s, until) => {
        s.write(startup())
        await until(askedForPassword)
        s.write(TERMINATE)
      }],
      ['StartupMessage, then FIN', async (s, until) => {
        s.write(startup())
        await until(askedForPassword)
        s.end()
      }],
      ['a password message with an impossible length', async (s, until) => {
        s.write(startup())
        await until(askedForPassword)
        s.write(Buffer.from([0x70, 0x7f, 0, 0, 0]))
      }],
      ['half a password message, then FIN', async (s, until) => {
        s.write(startup())
        await until(askedForPassword)
        s.end(serializePasswordMessage('x'.repeat(40)).subarray(0, 20))
      }],
    ]
    t.ok(startupLength > 11)
    for (const [name, steps] of cases) {
      const want = await exchange(gw.pg.port, steps)
      const got = await exchange(gw.port, steps)
      t.ok(want.ended && got.ended, `${name}: both close the connection`)
      t.same(comparable(got.bytes), comparable(want.bytes), `${name}: the client gets what Postgres sends`)
      if (want.bytes.length === 0) t.equal(got.bytes.length, 0, `${name}: not a byte`)
    }
  })

  t.test('GSSENCRequest: refused with N, then handled as after an SSLRequest', async t => {
    // the fixture server speaks GSSAPI ('G'), so these are asserted on the gateway alone: Postgres
    // without GSSAPI answers 'N' and checks for bytes sent before its answer as it does for SSL
    const then = await exchange(gw.port, async (s, until) => {
      s.write(GSSENC_REQUEST)
      await until(b => b.length >= 1)
      s.write(TERMINATE)
    })
    t.same(comparable(then.bytes), ['N'], 'N, then silence')
    t.ok(then.ended, 'closed')
    const pipelined = await exchange(gw.port, s => void s.write(Buffer.concat([GSSENC_REQUEST, startup()])))
    const m = messages(pipelined.bytes)
    t.same(m.map(x => x.code), ['SSL answer N', 'E'])
    t.match(fields(m[1]), { S: 'FATAL', C: '08P01', M: 'received unencrypted data after GSSAPI encryption request' })
    t.ok(pipelined.ended, 'closed')
  })

  t.test('an upstream FATAL (pg_terminate_backend) is the one error the client gets', async t => {
    await t.test('node-postgres sees the same errors as directly: the 57P01 FATAL, then end', async t => {
      const errorsOf = async (connectionString: string, app: string) => {
        const client = new pg.Client({ connectionString, application_name: app })
        const errors: string[] = []
        client.on('error', (err: Error & { code?: string }) => errors.push(`${err.code ?? '-'} ${err.message}`))
        await client.connect()
        // (events.once would reject on the 'error' event itself)
        const ended = new Promise<void>(resolve => client.on('end', () => resolve()))
        const r = await direct.query(`select count(*)::int as n from (select pg_terminate_backend(pid) from pg_stat_activity where application_name = $1) x`, [app])
        t.equal(r.rows[0].n, 1, 'the backend was terminated')
        await ended
        // an error emitted after 'end' would come on the next turns
        await wait(50)
        await client.end().catch(() => undefined)
        return errors
      }
      const want = await errorsOf(gw.pg.url, 'terminated-pg-direct')
      const got = await errorsOf(await gw.url(), 'terminated-pg')
      t.same(got, want, 'the same error events')
      t.match(got[0], /^57P01 terminating connection due to administrator command$/)
      t.notOk(got.some(e => e.includes('08006') || e.includes('upstream')), 'no error of the gateway')
    })

    await t.test('raw bytes: the ErrorResponse Postgres sent, byte for byte, then EOF', async t => {
      const run = async (port: number, app: string) =>
        exchange(port, async (s, until) => {
          s.write(Buffer.concat([startup(app), serializePasswordMessage(secret(port))]))
          // once logged in, the backend is terminated from another connection
          await until(loggedIn)
          await direct.query(`select pg_terminate_backend(pid) from pg_stat_activity where application_name = $1`, [app])
        })
      const want = await run(gw.pg.port, 'terminated-direct')
      const got = await run(gw.port, 'terminated-raw')
      const tail = messages(afterLogin(got.bytes))
      t.same(tail.map(m => m.code), ['E'], 'one message after login: an ErrorResponse')
      t.match(fields(tail[0]), { S: 'FATAL', V: 'FATAL', C: '57P01' })
      t.same(afterLogin(got.bytes), afterLogin(want.bytes), 'the same bytes Postgres sends directly')
      t.ok(got.ended, 'then EOF')
      t.equal(await noBackendsLeft('terminated-raw'), 0)
    })
  })

  t.test('an upstream that vanishes without a word: one FATAL 08006 of the gateway, then EOF', async t => {
    // a backend killed outright takes the whole server through crash recovery: a server of its own
    const own = await startPostgres({ auth: 'password' })
    t.teardown(() => own.stop())
    const vanishing = await startGateway({ pg: own })
    t.teardown(() => vanishing.stop())
    const ownDirect = new pg.Client({ connectionString: own.url })
    ownDirect.on('error', () => undefined)
    await ownDirect.connect()
    const got = await exchange(vanishing.port, async (s, until) => {
      s.write(Buffer.concat([startup('vanishing'), serializePasswordMessage(await vanishing.token())]))
      await until(loggedIn)
      const r = await ownDirect.query(`select pid from pg_stat_activity where application_name = 'vanishing'`)
      process.kill(r.rows[0].pid, 'SIGKILL')
    })
    await ownDirect.end().catch(() => undefined)
    const tail = messages(afterLogin(got.bytes))
    t.same(tail.map(m => m.code), ['E'], 'one error')
    t.match(fields(tail[0]), { S: 'FATAL', C: '08006', M: 'upstream connection closed' })
    t.ok(got.ended, 'then EOF')
  })

  // the whole session as one client sends it; the reference is the same bytes in one write
  const session = (port: number, app: string) => Buffer.concat([startup(app), serializePasswordMessage(secret(port)), QUERIES, TERMINATE])

  t.test('pipelined queries then Terminate in one write: every answer, then EOF, no backend left', async t => {
    const want = await exchange(gw.pg.port, s => void s.write(session(gw.pg.port, 'pipelined-direct')))
    const got = await exchange(gw.port, s => void s.write(session(gw.port, 'pipelined-gw')))
    const tail = afterLogin(got.bytes)
    t.same(messages(tail).map(m => m.code).join(''), 'TDCZ' + '12TDCZ' + 'T' + 'D'.repeat(20) + 'CZ', 'every answer of the batch')
    t.same(tail, afterLogin(want.bytes), 'byte-exact what Postgres answers directly')
    t.ok(got.ended, 'then EOF')
    t.equal(await noBackendsLeft('pipelined-gw'), 0, 'the upstream backend is gone')
    // the recording holds every byte the client got after login, and is sealed intact
    const recordingWith = (text: string) =>
      readdirSync(gw.recordings, { recursive: true })
        .map(f => join(gw.recordings, String(f)))
        .find(f => /\.[a-z]+$/.test(f) && readFileSync(f).includes(text))
    let file: string | undefined
    for (let i = 0; i < 100 && !file; i++) {
      file = recordingWith('a text with FROM in it')
      if (!file) await wait(50)
    }
    t.ok(file, 'the session has a recording')
    let status = ''
    for (let i = 0; i < 100 && status !== 'intact'; i++) {
      status = (await verifyRecording(file!)).status
      if (status !== 'intact') await wait(50)
    }
    t.equal(status, 'intact', 'the recording is sealed intact')
    const recorded: Buffer[] = []
    for await (const e of readRecording(file!)) if (e.type === 'response') recorded.push(Buffer.from(e.payload.bytes as Uint8Array))
    t.same(Buffer.concat(recorded), tail, 'its responses are exactly what the client got')
    // (statements are audited normalized)
    const audited = gw.audit.filter(e => typeof e.statement === 'string' && /as one, \$2 as t|as two|generate_series\(\$2, \$3\)/.test(e.statement as string))
    t.same(audited.map(e => e.rows), [1, 1, 20], 'each statement is audited with its rows')
    t.same(audited.filter(e => e.error !== undefined), [], 'none as failed or cut off')

    // after login, in a later write: the same
    const later = await exchange(gw.port, async (s, until) => {
      s.write(Buffer.concat([startup('pipelined-later'), serializePasswordMessage(token)]))
      await until(loggedIn)
      s.write(Buffer.concat([QUERIES, TERMINATE]))
    })
    t.same(afterLogin(later.bytes), tail)
    t.equal(await noBackendsLeft('pipelined-later'), 0)
  })

  t.test('what follows a Terminate is never run, as in Postgres', async t => {
    const after = serializeQuery('create table made_after_terminate (id int)')
    const run = (port: number, app: string) =>
      exchange(port, s => void s.write(Buffer.concat([startup(app), serializePasswordMessage(secret(port)), QUERIES, TERMINATE, after])))
    const want = await run(gw.pg.port, 'after-x-direct')
    const got = await run(gw.port, 'after-x')
    t.same(afterLogin(got.bytes), afterLogin(want.bytes), 'the answers to what came before, byte-exact')
    const made = await direct.query(`select count(*)::int as n from pg_tables where tablename = 'made_after_terminate'`)
    t.equal(made.rows[0].n, 0, 'nothing after the Terminate ran upstream')
    t.notOk(gw.audit.some(e => typeof e.statement === 'string' && (e.statement as string).includes('made_after_terminate')), 'nor was it audited')
  })

  t.test('a client that half-closes (FIN) after sending still gets every reply, as from Postgres', async t => {
    const cases: [string, Buffer][] = [
      ['queries, then FIN', QUERIES],
      ['a slow query, then FIN', serializeQuery('select pg_sleep(0.3), 7 as seven')],
      ['a query and half of the next, then FIN', Buffer.concat([serializeQuery('select 5 as five'), serializeQuery('select 6').subarray(0, 7)])],
    ]
    for (const [name, tail] of cases) {
      const run = (port: number, app: string) =>
        exchange(port, async (s, until) => {
          s.write(Buffer.concat([startup(app), serializePasswordMessage(secret(port))]))
          await until(loggedIn)
          s.end(tail)
        })
      const want = await run(gw.pg.port, 'fin-direct')
      const got = await run(gw.port, 'fin-gw')
      t.ok(messages(afterLogin(got.bytes)).some(m => m.code === 'Z'), `${name}: answered`)
      t.same(afterLogin(got.bytes), afterLogin(want.bytes), `${name}: byte-exact what Postgres answers`)
      t.ok(got.ended, `${name}: then EOF`)
      t.equal(await noBackendsLeft('fin-gw'), 0, `${name}: no upstream backend left`)
    }
  })

  t.test('the whole session then FIN in one write (EOF while the gateway still verifies the token and connects)', async t => {
    const run = (port: number, app: string) => exchange(port, s => void s.end(Buffer.concat([startup(app), serializePasswordMessage(secret(port)), QUERIES])))
    const want = await run(gw.pg.port, 'early-fin-direct')
    const got = await run(gw.port, 'early-fin')
    t.equal(messages(afterLogin(got.bytes)).filter(m => m.code === 'Z').length, 3, 'all three batches answered')
    t.same(afterLogin(got.bytes), afterLogin(want.bytes), 'byte-exact what Postgres answers')
    t.ok(got.ended, 'then EOF')
    t.equal(await noBackendsLeft('early-fin'), 0)
  })

  t.test('inside TLS too: a client that half-closes after its queries gets every reply', async t => {
    const tlsGw = await startGateway({ tls: true, pg: gw.pg })
    t.teardown(() => tlsGw.stop())
    const tlsToken = await tlsGw.token()
    const plain = await exchange(gw.pg.port, async (s, until) => {
      s.write(Buffer.concat([startup('tls-direct'), serializePasswordMessage(gw.pg.password)]))
      await until(loggedIn)
      s.end(QUERIES)
    })
    const raw = connect({ host: '127.0.0.1', port: tlsGw.port })
    await once(raw, 'connect')
    raw.write(serializeSSLRequest())
    const [answer] = (await once(raw, 'data')) as [Buffer]
    t.equal(answer.toString('latin1'), 'S')
    const s = tlsConnect({ socket: raw, rejectUnauthorized: false, allowHalfOpen: true } as never)
    await once(s, 'secureConnect')
    const chunks: Buffer[] = []
    s.on('data', (c: Buffer) => chunks.push(c))
    s.on('error', () => undefined)
    const ended = new Promise<void>(resolve => s.on('end', () => resolve()))
    s.write(Buffer.concat([startup('tls-fin'), serializePasswordMessage(tlsToken)]))
    while (!loggedIn(Buffer.concat(chunks))) await once(s, 'data')
    // close_notify and FIN right behind the queries
    s.end(QUERIES)
    await ended
    s.destroy()
    t.same(afterLogin(Buffer.concat(chunks)), afterLogin(plain.bytes), 'every reply, byte-exact')
    t.equal(await noBackendsLeft('tls-fin'), 0)
  })

  t.test('statements pipelined behind a refused token never reach the upstream: one FATAL, then EOF', async t => {
    const got = await exchange(gw.port, s =>
      void s.write(Buffer.concat([startup('bad-token'), serializePasswordMessage('not-a-token'), serializeQuery('create table made_without_a_token (id int)'), TERMINATE])),
    )
    const m = messages(got.bytes)
    t.same(m.map(x => x.code), ['R', 'E'], 'the password request, then one error')
    t.match(fields(m[1]), { S: 'FATAL', C: '28P01' })
    t.ok(got.ended, 'then EOF')
    const made = await direct.query(`select count(*)::int as n from pg_tables where tablename = 'made_without_a_token'`)
    t.equal(made.rows[0].n, 0, 'nothing was created upstream')
    t.equal(await backends('bad-token'), 0, 'no upstream connection was opened')
  })

  t.test('a client that half-closes while its statement waits for approval: withdrawn, refused, then EOF', async t => {
    const approving = await startGateway({
      pg: gw.pg,
      rules: [...DEFAULT_RULES, { id: 'agents-schema', when: { groups: ['agents'], class: ['schema-change'] }, action: 'approve', approvers: ['dba'] }],
    })
    t.teardown(() => approving.stop())
    const got = await exchange(approving.port, async (s, until) => {
      s.write(Buffer.concat([startup('approval-fin'), serializePasswordMessage(await approving.token())]))
      await until(loggedIn)
      s.write(serializeQuery('create table made_for_a_client_gone (id int)'))
      // the request is pending (its notice has come): now the client half-closes
      await until(b => messages(afterLogin(b)).some(m => m.code === 'N'))
      s.end()
    })
    const tail = messages(afterLogin(got.bytes))
    t.same(tail.map(m => m.code), ['N', 'E', 'Z'], 'the notice, the refusal, ReadyForQuery')
    t.match(fields(tail[1]), { S: 'ERROR', C: '57014', M: /^canceling statement due to user request/ })
    t.ok(got.ended, 'then EOF')
    t.same(approving.core.approvals.list().map(a => a.status), ['withdrawn'])
    const made = await direct.query(`select count(*)::int as n from pg_tables where tablename = 'made_for_a_client_gone'`)
    t.equal(made.rows[0].n, 0, 'nothing was created upstream')
    t.equal(await noBackendsLeft('approval-fin'), 0)
  })

  t.test('nothing the client sends is lost or misframed, whatever the timing and chunking', async t => {
    const app = 'chunked'
    const whole = await exchange(gw.port, s => void s.write(session(gw.port, app)))
    const reference = comparable(whole.bytes)
    t.ok(messages(afterLogin(whole.bytes)).filter(m => m.code === 'Z').length === 3, 'the reference answers all three batches')

    await t.test('the password and the first Query in one write, before the password request', async t => {
      const got = await exchange(gw.port, async (s, until) => {
        s.write(startup(app))
        await until(askedForPassword)
        s.write(Buffer.concat([serializePasswordMessage(token), QUERIES, TERMINATE]))
      })
      t.same(comparable(got.bytes), reference)
    })

    await t.test('the queries 0 to 10 ms after the password (while the gateway connects upstream)', async t => {
      for (let ms = 0; ms <= 10; ms++) {
        const got = await exchange(gw.port, async (s, until) => {
          s.write(startup(app))
          await until(askedForPassword)
          s.write(serializePasswordMessage(token))
          await wait(ms)
          s.write(Buffer.concat([QUERIES, TERMINATE]))
        })
        t.same(comparable(got.bytes), reference, `${ms} ms`)
      }
    })

    await t.test('the whole session split into chunks of 1 to 13 bytes', async t => {
      const bytes = session(gw.port, app)
      for (let size = 1; size <= 13; size++) {
        const got = await exchange(gw.port, async s => {
          for (let off = 0; off < bytes.length; off += size) {
            s.write(bytes.subarray(off, off + size))
            // one chunk per read on the other side: let it be read before the next is sent
            await turn()
          }
        })
        t.same(comparable(got.bytes), reference, `${size}-byte chunks`)
        // the same, ended by FIN instead of Terminate: the same answers
        const noX = bytes.subarray(0, bytes.length - TERMINATE.length)
        const fin = await exchange(gw.port, async s => {
          for (let off = 0; off < noX.length; off += size) {
            const chunk = noX.subarray(off, off + size)
            if (off + size >= noX.length) s.end(chunk)
            else s.write(chunk)
            await turn()
          }
        })
        t.same(comparable(fin.bytes), reference, `${size}-byte chunks, then FIN`)
      }
    })

    t.equal(await noBackendsLeft(app), 0, 'no upstream backend left')
  })

  t.test('node-postgres scenarios that tripped over these', async t => {
    await t.test('connect(); end() at once: no error, as directly', async t => {
      const outcome = async (connectionString: string) => {
        const client = new pg.Client({ connectionString, application_name: 'connect-end' })
        const errors: Error[] = []
        client.on('error', err => errors.push(err))
        // pg never settles connect() once end() was called before it finished: only watch it
        let connected = 'pending'
        client.connect().then(
          () => (connected = 'connected'),
          (err: Error) => (connected = `rejected: ${err.message}`),
        )
        await client.end()
        await wait(20)
        return { connected, errors: errors.length }
      }
      for (let i = 0; i < 5; i++) {
        const want = await outcome(gw.pg.url)
        const got = await outcome(await gw.url())
        t.same(got, want, `round ${i}`)
      }
      t.equal(await noBackendsLeft('connect-end'), 0)
    })

    await t.test('pipelined queries, then end(): each query ends as it does directly', async t => {
      const outcome = async (connectionString: string, app: string) => {
        const client = new pg.Client({ connectionString, application_name: app })
        const errors: string[] = []
        client.on('error', (err: Error) => errors.push(err.message))
        await client.connect()
        const queries = ['select 1 as n', 'select pg_sleep(0.1), 2 as n', 'select 3 as n'].map(sql =>
          client.query(sql).then(
            r => `rows ${r.rows[0].n}`,
            (err: Error) => `error ${err.message}`,
          ),
        )
        await client.end()
        return { queries: await Promise.all(queries), errors }
      }
      const want = await outcome(gw.pg.url, 'pipelined-end-direct')
      const got = await outcome(await gw.url(), 'pipelined-end')
      t.same(got, want)
      t.equal(await noBackendsLeft('pipelined-end'), 0)
    })

    await t.test('queries awaited, then end(): every answer, no error, no backend left', async t => {
      const client = new pg.Client({ connectionString: await gw.url(), application_name: 'awaited-end' })
      const errors: Error[] = []
      client.on('error', err => errors.push(err))
      await client.connect()
      const rows = await Promise.all([client.query('select 1 as n'), client.query('select 2 as n')])
      await client.end()
      t.same(rows.map(r => r.rows[0].n), [1, 2])
      t.same(errors, [])
      t.equal(await noBackendsLeft('awaited-end'), 0)
    })
  })
})
