// minApprovals and defer mode's release against a shared store: the same cases for Postgres and
// Redis (and the memory store in core's tests): two instances, decisions given at the same moment.
import type { ApprovalRequest, ControlStore, RequestVerdict } from '@portcullis/core'
import { isPortcullisError } from '@portcullis/core'
import type { Test } from 'tap'

type T = Test

const vote = (by: string, grant?: RequestVerdict['grant']): RequestVerdict => ({ status: 'approved', decidedBy: by, vote: { by, at: Date.now() }, ...(grant ? { grant } : {}) })
const code = (p: Promise<unknown>) => p.then(() => 'ok', (e: unknown) => (isPortcullisError(e) ? e.code : String(e)))

export function voteCases(
  t: T,
  /** two instances of one store, started; the first one holds the requests */
  two: (t: T) => Promise<[ControlStore, ControlStore]>,
  request: (id: string, instance: string, over?: Partial<ApprovalRequest>) => ApprovalRequest,
): void {
  void t.test('minApprovals 2: two approvers at once on two instances make one approval, with both votes', async t => {
    const [a, b] = await two(t)
    await a.putRequest(request('r-two', 'a', { minApprovals: 2, approvals: [], window: 60_000 }))
    const grant = { subject: 'agent-1', target: 'docs-db', fingerprint: 'f-two', until: Date.now() + 60_000, approvalId: 'r-two' }
    const first = await a.decide('r-two', vote('dora', grant))
    t.equal(first.status, 'pending', 'one vote of two: still pending')
    t.equal(await a.findGrant('agent-1', 'docs-db', 'f-two'), undefined, 'no window before the approval')
    const [x, y] = await Promise.all([code(a.decide('r-two', vote('dave', grant))), code(b.decide('r-two', vote('dan', grant)))])
    t.same([x, y].sort(), ['APPROVAL_NOT_PENDING', 'ok'], 'of two third-and-second votes at once, one approves and the other finds it decided')
    const done = (await b.getRequest('r-two'))!
    t.equal(done.status, 'approved')
    t.equal(done.approvals?.length, 2, 'exactly the two votes that approved it')
    t.equal(done.approvals?.[0]?.by, 'dora')
    t.ok(await b.findGrant('agent-1', 'docs-db', 'f-two'), 'the window is written with the approval')
  })

  void t.test('the same approver twice at once, on two instances, counts once', async t => {
    const [a, b] = await two(t)
    await a.putRequest(request('r-dup', 'a', { minApprovals: 2, approvals: [] }))
    const codes = await Promise.all([code(a.decide('r-dup', vote('dora'))), code(b.decide('r-dup', vote('dora')))])
    t.same(codes.sort(), ['APPROVAL_ALREADY_COUNTED', 'ok'])
    const r = (await a.getRequest('r-dup'))!
    t.equal(r.status, 'pending')
    t.same(r.approvals?.map(v => v.by), ['dora'])
  })

  void t.test('minApprovals 1: of two approvers at once, one decides', async t => {
    const [a, b] = await two(t)
    await a.putRequest(request('r-one', 'a', { minApprovals: 1, approvals: [] }))
    const codes = await Promise.all([code(a.decide('r-one', vote('dora'))), code(b.decide('r-one', vote('dave')))])
    t.same(codes.sort(), ['APPROVAL_NOT_PENDING', 'ok'])
    t.equal((await a.getRequest('r-one'))!.approvals?.length, 1)
  })

  void t.test('defer mode: an approved request is released once, whoever asks at the same moment', async t => {
    const [a, b] = await two(t)
    await a.putRequest(request('r-def', 'a', { minApprovals: 1, approvals: [], mode: 'defer' }))
    t.equal(await b.release('r-def'), undefined, 'not while pending')
    await b.decide('r-def', vote('dora'))
    const got = await Promise.all([a.release('r-def'), b.release('r-def'), a.release('r-def')])
    t.equal(got.filter(Boolean).length, 1, 'exactly one release')
    t.ok((await a.getRequest('r-def'))!.released, 'the request says when')
    await a.putRequest(request('r-wait', 'a', { minApprovals: 1, approvals: [], mode: 'wait' }))
    await b.decide('r-wait', vote('dora'))
    t.equal(await b.release('r-wait'), undefined, 'a wait-mode request is never released by a retry')
    await a.putRequest(request('r-old', 'a', { minApprovals: 1, approvals: [], mode: 'defer', expires: Date.now() + 400 }))
    await b.decide('r-old', vote('dora'))
    const until = Date.now() + 400
    while (Date.now() < until + 50) await new Promise(r => setTimeout(r, 50))
    t.equal(await b.release('r-old'), undefined, 'nor past its expiry')
  })
}
