// The per-(MCP session, target) pool: bounded, reused, idle connections closed, a broken one
// replaced for the next waiter, everything closed with the session.
import t from 'tap'
import { Pool } from '../src/pool.ts'

function counting(max: number, idleMs = 50) {
  let made = 0
  const destroyed: number[] = []
  const pool = new Pool<number>({ create: async () => ++made, destroy: (c) => void destroyed.push(c), max, idleMs })
  return { pool, made: () => made, destroyed }
}

t.test('at most max open; a caller past it waits for a release and gets that connection', async (t) => {
  const { pool, made } = counting(2)
  const a = await pool.acquire()
  const b = await pool.acquire()
  let third: number | undefined
  const waiting = pool.acquire().then((c) => (third = c))
  await new Promise((r) => setTimeout(r, 10))
  t.equal(third, undefined)
  t.equal(made(), 2)
  pool.release(a)
  await waiting
  t.equal(third, a)
  pool.release(b)
  pool.release(third!)
  t.equal(pool.size, 2)
  pool.close()
})

t.test('a broken connection is destroyed and the waiter gets a new one', async (t) => {
  const { pool, made, destroyed } = counting(1)
  const a = await pool.acquire()
  const waiting = pool.acquire()
  pool.release(a, true)
  const b = await waiting
  t.not(b, a)
  t.same(destroyed, [a])
  t.equal(made(), 2)
  pool.release(b)
  pool.close()
})

t.test('idle connections close; close() ends the rest and refuses new callers', async (t) => {
  const { pool, destroyed } = counting(2, 30)
  const a = await pool.acquire()
  pool.release(a)
  await new Promise((r) => setTimeout(r, 80))
  t.same(destroyed, [a])
  t.equal(pool.size, 0)
  const b = await pool.acquire()
  const c = await pool.acquire()
  const waiter = pool.acquire()
  pool.release(b)
  const got = await waiter
  t.equal(got, b)
  pool.close()
  t.same(destroyed, [a])
  pool.release(c)
  pool.release(got)
  t.same(destroyed.sort(), [a, b, c].sort())
  t.equal(pool.size, 0)
  await t.rejects(pool.acquire(), /ended/)
})
