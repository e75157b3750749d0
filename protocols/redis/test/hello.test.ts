// HELLO's arguments as Redis 7 reads them (networking.c helloCommand): the answers a client gets
// before anything reaches the upstream.
import t from 'tap'
import { carriesToken, parseHello } from '../src/hello.ts'

t.test('HELLO with and without options', async (t) => {
  t.same(parseHello(['HELLO']), {})
  t.same(parseHello(['HELLO', '3']), { version: 3 })
  t.same(parseHello(['hello', '2', 'auth', 'default', 'tok', 'setname', 'app']), { version: 2, token: 'tok', setname: 'app' })
  t.same(parseHello(['HELLO', '3', 'SETNAME', 'app', 'AUTH', 'u', 'p']), { version: 3, token: 'p', setname: 'app' })
})

t.test('what Redis refuses is refused with its words', async (t) => {
  t.equal(String(parseHello(['HELLO', '4'])), '-NOPROTO unsupported protocol version\r\n')
  t.equal(String(parseHello(['HELLO', 'x'])), '-NOPROTO unsupported protocol version\r\n')
  // AUTH without its password is not an AUTH: the token never comes from a short option
  t.equal(String(parseHello(['HELLO', '3', 'AUTH', 'user'])), "-ERR Syntax error in HELLO option 'AUTH'\r\n")
  t.equal(String(parseHello(['HELLO', '3', 'SETNAME'])), "-ERR Syntax error in HELLO option 'SETNAME'\r\n")
})

t.test('AUTH and HELLO in any case carry a token; nothing else does', async (t) => {
  for (const name of ['AUTH', 'auth', 'AuTh', 'HELLO', 'hello']) t.ok(carriesToken(Buffer.from(name)), name)
  for (const name of ['GET', 'AUTHX', 'HELL', 'HELLO!', '']) t.notOk(carriesToken(Buffer.from(name)), name)
  t.notOk(carriesToken(undefined))
})
