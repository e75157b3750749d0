// An error in an extended batch makes Postgres skip every message up to its Sync, a Query or a
// FunctionCall in the batch included (postgres.c: ignore_till_sync). A message after it that the
// gateway holds until that Query is answered (an Execute of a portal the batch's Bind made) goes on
// when the error says it was skipped: the session neither hangs nor, once the client leaves,
// outlives it (upstream backend gone, recording sealed).
import t from 'tap'
import pg from 'pg'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { verifyRecording } from '@portcullis/core'
import { startGateway } from './harness.ts'
import { RawSession, errorFields } from './raw-session.ts'
import { bind, describe, execute, parse, query, sync } from './wire.ts'
import { BufferWriter } from '../src/buffer-writer.ts'

/** FunctionCall pg_backend_pid(): oid 2026, no argument formats, no arguments, text result */
const functionCall = () => new BufferWriter().int32(2026).int16(0).int16(0).int16(0).message('F')
const wait = (ms: number) => new Promise(r => setTimeout(r, ms))

async function eventually(fn: () => Promise<boolean>): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    if (await fn()) return true
    await wait(50)
  }
  return false
}

t.test('a Query or FunctionCall skipped after an error in its unsynced batch', async t => {
  const gw = await startGateway()
  t.teardown(() => gw.stop())
  const direct = new pg.Client({ connectionString: gw.pg.url })
  await direct.connect()
  t.teardown(() => direct.end())
  const backends = async (app: string) => (await direct.query('select count(*)::int as n from pg_stat_activity where application_name = $1', [app])).rows[0].n as number
  const recordingWith = (text: string) =>
    readdirSync(gw.recordings, { recursive: true })
      .map(f => join(gw.recordings, String(f)))
      .find(f => /\.[a-z]+$/.test(f) && readFileSync(f).includes(text))
  async function sealed(text: string): Promise<string> {
    let status = 'no recording'
    await eventually(async () => {
      const file = recordingWith(text)
      if (file) status = (await verifyRecording(file)).status
      return status === 'intact'
    })
    return status
  }
  // Bind makes the unnamed portal; the Describe of a statement that does not exist fails upstream,
  // so the server skips the Execute, the FunctionCall (or Query) and the second Execute
  const batch = (tag: string, between: Buffer) => [parse('', `select 1 as ${tag}`), bind('', ''), describe('S', 'no_such_statement'), execute(''), between, execute('')]

  for (const how of ['FIN', 'RST'] as const) {
    t.test(`FunctionCall, then the client leaves with ${how}: no backend left, the recording sealed`, async t => {
      const app = `skipped-fastpath-${how.toLowerCase()}`
      const c = new RawSession(gw)
      await c.start(await gw.token(), { application_name: app })
      t.equal(await backends(app), 1)
      c.socket.write(Buffer.concat(batch(`skipped_${how.toLowerCase()}`, functionCall())))
      const got = await c.until('E')
      t.same(got?.map(f => f.code).join(''), '12E', 'ParseComplete, BindComplete, the Describe’s error')
      t.match(errorFields(got?.at(-1)), { S: 'ERROR', C: '26000' })
      if (how === 'FIN') {
        c.socket.end()
        t.same((await c.rest()).map(f => f.code), [], 'nothing more: no Sync was sent, so no ReadyForQuery, then EOF')
      } else c.socket.resetAndDestroy()
      t.ok(await eventually(async () => (await backends(app)) === 0), 'the upstream backend is gone')
      t.equal(await sealed(`skipped_${how.toLowerCase()}`), 'intact', 'the recording is sealed intact')
    })
  }

  for (const [what, between] of [
    ['FunctionCall', functionCall()],
    ['Query', query('select 2')],
  ] as const) {
    t.test(`${what}, then Sync: the batch ends with one ReadyForQuery, as from Postgres, and the session goes on`, async t => {
      const c = new RawSession(gw)
      await c.start(await gw.token(), { application_name: 'skipped-sync' })
      c.socket.write(Buffer.concat([...batch('skipped_sync', between), sync()]))
      const got = await c.until('Z')
      t.same(got?.map(f => f.code).join(''), '12EZ', 'ParseComplete, BindComplete, the error, ReadyForQuery')
      c.socket.write(query('select 3 as three'))
      const next = await c.until('Z')
      t.same(next?.map(f => f.code).join(''), 'TDCZ', 'the next query runs')
      c.socket.destroy()
    })
  }
})
