// The request bytes a recording holds are the bytes the client sent, whatever happens to the
// buffer they were gathered in. A run held for its decision (Session.holdRequest) may be written
// late: an Execute skipped after an error in its batch gets no decision, so its run is recorded at
// the next record, after the next run has been gathered. Its buffer must not be reused meanwhile.
import t from 'tap'
import { Frame } from '../src/framer.ts'
import { Outbox } from '../src/outbox.ts'
import { noteRequest, recordRequests } from '../src/request-records.ts'
import { bind, execute, sync } from './wire.ts'
import type { Connection } from '../src/connection.ts'

/** a frame of `msg` in a chunk of its own (its own ArrayBuffer), as from a separate socket read */
const alone = (msg: Buffer) => {
  const chunk = Buffer.alloc(msg.length)
  msg.copy(chunk)
  return new Frame(chunk[0]!, chunk, 0, chunk.length, 5)
}

function connection() {
  const records: { type: string; request: { type: string; bytes: Buffer } }[] = []
  let held: { type: string; bytes: Buffer } | undefined
  const writeHeld = () => {
    if (held) records.push({ type: 'request', request: held })
    held = undefined
  }
  // what core's session does with a held request (held-records.ts): written before any other record
  const session = {
    holdRequest(request: { type: string; bytes: Buffer }) {
      writeHeld()
      held = request
    },
    record(type: string, request: { type: string; bytes: Buffer }) {
      writeHeld()
      records.push({ type, request })
    },
  }
  const c = { recordedAhead: 0, requestTypes: '', requestRun: new Outbox(), inbox: [] as Frame[], session }
  return { c: c as unknown as Connection, records, writeHeld }
}

t.test('a run held for its decision keeps its bytes while the next run is gathered', async t => {
  const { c, records, writeHeld } = connection()
  const first = [bind('', ''), execute('')]
  // Bind and Execute read apart: the run is built in the box's own buffer, not a view of one chunk
  for (const m of first) noteRequest(c, alone(m))
  const ahead = alone(sync())
  c.inbox = [ahead]
  recordRequests(c, true)
  t.equal(records.length, 0, 'held for its decision')
  // the Sync already read joined the held run; when its turn comes it is not noted again
  c.inbox = []
  noteRequest(c, ahead)
  // no decision comes (skipped in its batch): the next messages are gathered and recorded
  const second = [bind('', 'next'), execute(''), sync()]
  for (const m of second) noteRequest(c, alone(m))
  recordRequests(c)
  writeHeld()
  t.same(
    records.map((r) => [r.request.type, r.request.bytes.toString('hex')]),
    [
      ['BES', Buffer.concat([...first, sync()]).toString('hex')],
      ['BES', Buffer.concat(second).toString('hex')],
    ],
    'each record has exactly the bytes its messages came as, in order',
  )
})

t.test('a run recorded at once gives its buffer back for the next run', async t => {
  const { c, records } = connection()
  for (let round = 0; round < 3; round++) {
    const msgs = [bind('', `p${round}`), execute(`p${round}`), sync()]
    for (const m of msgs) noteRequest(c, alone(m))
    recordRequests(c)
    // the recorder copies what it is given (core's recorder does); a copy here, before the reuse
    const last = records.at(-1)!
    last.request = { ...last.request, bytes: Buffer.from(last.request.bytes) }
    t.equal(last.request.bytes.toString('hex'), Buffer.concat(msgs).toString('hex'), `round ${round}`)
  }
})
