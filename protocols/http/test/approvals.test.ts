import t from 'tap'
import { startHttpUpstream } from '@portcullis/fixtures/http-upstream'
import { startGateway, type GatewayOptions, type Policy } from './harness.ts'

// deleting files needs a human; everything else is allowed
const policy: Policy = op => (op.class === 'delete' ? { action: 'approve', rule: 'deletes-need-approval' } : { action: 'allow', rule: 'agents' })
const auth = { authorization: 'Bearer dev-token-alice' }

async function setup(t: { teardown(fn: () => unknown): void }, opts: Partial<GatewayOptions> = {}) {
  const upstream = await startHttpUpstream()
  const gw = await startGateway({ upstreamUrl: upstream.url, policy, ...opts })
  t.teardown(async () => {
    await gw.stop()
    await upstream.stop()
  })
  return { upstream, gw }
}

const waitFor = async (cond: () => boolean) => {
  while (!cond()) await new Promise(r => setTimeout(r, 10))
}

t.test('an approve decision holds the request until an approver says yes', async t => {
  const { gw, upstream } = await setup(t)
  const pending = fetch(`${gw.url}/v1/files/file-1`, { method: 'DELETE', headers: auth })
  await waitFor(() => gw.approvals.pending.length === 1)
  t.equal(upstream.requests.length, 0, 'nothing reaches the upstream while held')
  t.equal(gw.approvals.pending[0].statement, 'DELETE /v1/files/file-1')
  gw.approvals.settle(gw.approvals.pending[0].id, true)
  const res = await pending
  t.equal(res.status, 200, 'the approved request went upstream (the fixture answers deleted: false for a file it does not have)')
  t.equal(upstream.requests.length, 1)
})

t.test('an approval that times out answers 403 with the request id', async t => {
  const { gw, upstream } = await setup(t, { approvalTimeoutMs: 100 })
  const res = await fetch(`${gw.url}/v1/files/file-1`, { method: 'DELETE', headers: auth })
  t.equal(res.status, 403)
  const body = (await res.json()) as any
  t.equal(body.error.code, 'policy_blocked')
  t.equal(body.error.rule, 'deletes-need-approval')
  t.equal(body.error.approvalId, gw.approvals.pending[0].id)
  t.equal(upstream.requests.length, 0)
  await gw.settled(1)
  t.equal(gw.audits[0].approvalId, gw.approvals.pending[0].id)
})

t.test('defer mode answers 202 at once; once approved, the same request passes', async t => {
  const { gw, upstream } = await setup(t, { options: { approvalMode: 'defer' } })
  const first = await fetch(`${gw.url}/v1/files/file-1`, { method: 'DELETE', headers: auth })
  t.equal(first.status, 202)
  const body = (await first.json()) as any
  const id = gw.approvals.pending[0].id
  t.same(body, { approval: { id, status: 'pending', poll: `/api/approvals/${id}`, wait: `portcullis approvals wait ${id}` } })
  t.equal(upstream.requests.length, 0)
  gw.approvals.settle(body.approval.id, true)
  const retry = await fetch(`${gw.url}/v1/files/file-1`, { method: 'DELETE', headers: auth })
  t.equal(retry.status, 200, 'the retry went upstream')
  t.equal(upstream.requests.length, 1)
  t.equal(gw.approvals.pending.length, 1, 'no second approval was asked for')
})
