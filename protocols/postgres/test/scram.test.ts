// The SCRAM-SHA-256 client keeps SaltedPassword per (password, salt, iterations) instead of running
// 4,096 HMAC rounds on the event loop for every upstream connection. Checked against an independent
// computation of RFC 5802's proof, and against a real Postgres 15: many logins with the right
// password, then the wrong one (which must not borrow the right one's entry), then the right one.
import t from 'tap'
import { createHash, createHmac, pbkdf2Sync } from 'node:crypto'
import { connect } from 'node:net'
import { once } from 'node:events'
import { startPostgres } from '@portcullis/fixtures/postgres'
import { ScramClient } from '../src/scram.ts'

const hmac = (key: Buffer, data: string) => createHmac('sha256', key).update(data).digest()

/** RFC 5802's ClientProof, computed from scratch */
function expectedProof(password: string, clientFirstBare: string, serverFirst: string, withoutProof: string): string {
  const a = new Map(serverFirst.split(',').map(p => [p.slice(0, 1), p.slice(2)] as [string, string]))
  const salted = pbkdf2Sync(password.normalize('NFKC'), Buffer.from(a.get('s')!, 'base64'), Number(a.get('i')), 32, 'sha256')
  const clientKey = hmac(salted, 'Client Key')
  const signature = hmac(createHash('sha256').update(clientKey).digest(), `${clientFirstBare},${serverFirst},${withoutProof}`)
  return Buffer.from(clientKey.map((b, i) => b ^ signature[i]!)).toString('base64')
}

function exchange(password: string, salt: string, iterations: number): { final: string; expected: string } {
  const c = new ScramClient(password)
  const clientFirstBare = c.clientFirst().toString().slice(3)
  const nonce = clientFirstBare.slice(clientFirstBare.indexOf('r=') + 2)
  const serverFirst = `r=${nonce}srv${Math.random().toString(36).slice(2)},s=${salt},i=${iterations}`
  const final = c.clientFinal(serverFirst).toString()
  const withoutProof = final.slice(0, final.indexOf(',p='))
  return { final, expected: `${withoutProof},p=${expectedProof(password, clientFirstBare, serverFirst, withoutProof)}` }
}

t.test('the proof is RFC 5802 for the first login and every one after it (kept SaltedPassword), per password, salt and count', async t => {
  const salt = Buffer.from('sixteen byte salt').toString('base64')
  for (let i = 0; i < 3; i++) {
    const { final, expected } = exchange('pencil', salt, 4096)
    t.equal(final, expected, `login ${i + 1}`)
  }
  const other = exchange('pencil2', salt, 4096)
  t.equal(other.final, other.expected, 'another password with the same salt')
  const resalted = exchange('pencil', Buffer.from('another salt').toString('base64'), 4096)
  t.equal(resalted.final, resalted.expected, 'the same password, another salt')
  const fewer = exchange('pencil', salt, 1000)
  t.equal(fewer.final, fewer.expected, 'the same password and salt, another count')
})

/** one SCRAM login to a real Postgres: the server's answer to our client-final */
async function login(host: string, port: number, user: string, database: string, password: string): Promise<'ok' | string> {
  const s = connect({ host, port })
  await once(s, 'connect')
  let buf = Buffer.alloc(0)
  const next = async (): Promise<{ type: string; body: Buffer }> => {
    for (;;) {
      if (buf.length >= 5 && buf.length >= 1 + buf.readInt32BE(1)) {
        const len = buf.readInt32BE(1)
        const m = { type: String.fromCharCode(buf[0]!), body: buf.subarray(5, 1 + len) }
        buf = buf.subarray(1 + len)
        return m
      }
      const [d] = (await once(s, 'data')) as [Buffer]
      buf = Buffer.concat([buf, d])
    }
  }
  const msg = (type: string, body: Buffer) => {
    const h = Buffer.alloc(5)
    h.write(type, 0, 'latin1')
    h.writeInt32BE(4 + body.length, 1)
    return Buffer.concat([h, body])
  }
  const params = Buffer.from(`user\0${user}\0database\0${database}\0\0`)
  const startup = Buffer.alloc(8)
  startup.writeInt32BE(8 + params.length, 0)
  startup.writeInt32BE(196608, 4)
  s.write(Buffer.concat([startup, params]))
  try {
    const c = new ScramClient(password)
    await next() // AuthenticationSASL
    const first = c.clientFirst()
    const mech = Buffer.from('SCRAM-SHA-256\0')
    const len = Buffer.alloc(4)
    len.writeInt32BE(first.length)
    s.write(msg('p', Buffer.concat([mech, len, first])))
    const cont = await next()
    if (cont.type !== 'R') return `server: ${cont.body.toString('latin1')}`
    s.write(msg('p', c.clientFinal(cont.body.subarray(4).toString())))
    const fin = await next()
    if (fin.type !== 'R') return fin.body.toString('latin1').split('\0').find(f => f.startsWith('C'))!.slice(1)
    c.verifyServerFinal(fin.body.subarray(4).toString())
    return 'ok'
  } finally {
    s.destroy()
  }
}

t.test('a real Postgres 15 takes every login with the kept SaltedPassword and still refuses a wrong password', async t => {
  const pg = await startPostgres()
  t.teardown(() => pg.stop())
  for (let i = 0; i < 5; i++) t.equal(await login(pg.host, pg.port, pg.user, pg.database, pg.password), 'ok', `login ${i + 1}`)
  t.equal(await login(pg.host, pg.port, pg.user, pg.database, pg.password + 'x'), '28P01', 'a wrong password: invalid_password')
  t.equal(await login(pg.host, pg.port, pg.user, pg.database, pg.password), 'ok', 'the right one again')
})
