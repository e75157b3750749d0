// A statement is classified, checked (column lineage, scope), decided, and sent — or in its place
// a marker: SQL that fails to parse upstream, whose ErrorResponse is rewritten into the refusal
// (error-response.ts), so the upstream discards the rest of the batch as Postgres does.
import { randomBytes } from 'node:crypto'
import { isPortcullisError } from '@portcullis/core/errors'
import type { Decision, Operation } from '@portcullis/core/types'
import { deferredRefusal, statementAsSent } from './approval.ts'
import { serializeErrorResponse, serializeNoticeResponse } from './backend.ts'
import { hasColumnRules, lineageRefusal, rowLineage } from './column-lineage.ts'
import type { Connection, PendingOp } from './connection.ts'
import { expect, sentQuery } from './expectations.ts'
import { sendMarkerParse } from './extended-query.ts'
import { toClient, toUpstream } from './flow-control.ts'
import { serializeQuery } from './frontend.ts'
import { recordRequests } from './request-records.ts'
import { scopeRefusal } from './scope.ts'
import { EXECUTE, type Expectation, type Portal, QUERY, serializeDescribePortal, statementEffects } from './session-state.ts'
import { sqlstateOf } from './startup.ts'
import { isOverLimit, MAX_STATEMENT_BYTES, overLimit, STATEMENT_TOO_LONG, unclassified } from './statement-limit.ts'
import { fatal } from './teardown.ts'

const EXACT = Object.freeze({ exact: true })

/** why a statement is not sent: the ErrorResponse the client gets in its place */
export interface Refusal {
  sqlstate: string
  message: string
  detail?: string | undefined
}

export function refusalOf(err: unknown): Refusal {
  const refusal: Refusal = {
    sqlstate: sqlstateOf(err),
    message: isPortcullisError(err, 'APPROVAL_WITHDRAWN') ? `canceling statement due to user request: ${err.message}` : (err as Error).message,
  }
  const id = isPortcullisError(err) ? err.details.approvalId : undefined
  if (typeof id === 'string') refusal.detail = `approval request ${id}`
  return refusal
}

export function classify(c: Connection, sql: string): Operation {
  const tooLong = overLimit(sql, c.session.target.limits?.maxStatementBytes ?? MAX_STATEMENT_BYTES)
  if (tooLong) return tooLong
  try {
    // under column rules, lineage reads this text's own parse tree: no classification shared by skeleton
    return c.classifier.classifySql(sql, c.model.classifyContext(), hasColumnRules(c.session.masks) ? EXACT : undefined)
  } catch (err) {
    // fail closed: an operation that could not be understood is blocked by policy
    return unclassified(`could not classify: ${(err as Error).message}`)
  }
}

/** a statement that fails to parse upstream; its ErrorResponse is replaced by ours */
export function marker(c: Connection, label: string, sqlstate: string, message: string, extra: Record<string, string> = {}): string {
  const marker = `PORTCULLIS_REFUSED_${randomBytes(8).toString('hex')}`
  void label
  c.replacements.set(marker, { error: serializeErrorResponse('ERROR', sqlstate, message, extra), batch: c.sentBatches + 1 })
  return marker
}

/** returns a promise only when the statement waits for an approval */
export function decideAndSend(c: Connection, kind: 'Q' | 'E', what: string | Operation, raw: Buffer, portal?: Portal, portalName?: string): Promise<void> | undefined {
  const start = performance.now()
  const sql = typeof what === 'string' ? what : undefined
  const op = typeof what === 'string' ? classify(c, what) : what
  const batch = c.sentBatches + 1
  const pending: PendingOp = { kind, op, decision: undefined, batch, start, rows: 0, bytes: 0, masked: 0, done: false, portal, portalName, sql }
  // an empty query string runs nothing: Postgres answers EmptyQueryResponse
  if (sql !== undefined && sql.trim() === '') {
    c.sentBatches++
    sentQuery(c, QUERY)
    toUpstream(c, raw)
    return undefined
  }
  try {
    c.session.assertAlive()
  } catch (err) {
    fatal(c, sqlstateOf(err), (err as Error).message)
    return undefined
  }
  // the request is in the recording before its decision
  recordRequests(c, kind === 'E')
  // a statement over a masked column whose output the gateway cannot follow is refused before it runs
  const refused = lineageCheck(c, pending)
  if (refused) {
    // a catalog lookup first: the request waits in the recording, not held for its decision
    c.session.writeRequest?.()
    return refused.then(() => decideNext(c, pending, raw))
  }
  return decideNext(c, pending, raw)
}

/** the catalog lookups an op's lineage needs, done ahead (failures are met again at Execute) */
export function lineageLookups(c: Connection, op: Operation, round = 0): Promise<void> | undefined {
  const l = rowLineage(op, c.session.masks, c.catalog, c.model.classifyContext())
  if (!(l instanceof Promise) || round >= 8) return undefined
  return l.then(
    () => lineageLookups(c, op, round + 1),
    () => undefined,
  )
}

/** undefined when the check is done; else a promise that settles when it is (catalog lookup) */
export function lineageCheck(c: Connection, pending: PendingOp): Promise<void> | undefined {
  const plan = c.session.masks
  let why: string | undefined | Promise<void>
  try {
    why = lineageRefusal(pending.op, plan, c.catalog, c.model.classifyContext())
  } catch (err) {
    why = `masking: cannot follow the statement's columns: ${(err as Error).message}`
  }
  if (why instanceof Promise) {
    return why.then(
      () => lineageCheck(c, pending),
      err => {
        pending.op = { ...pending.op, class: 'admin', error: `masking: ${(err as Error).message}` }
      },
    )
  }
  if (why !== undefined) pending.op = { ...pending.op, class: 'admin', error: why }
  else {
    const l = rowLineage(pending.op, plan, c.catalog, c.model.classifyContext())
    if (l && !(l instanceof Promise)) pending.lineage = l
  }
  return undefined
}

export function decideNext(c: Connection, pending: PendingOp, raw: Buffer): Promise<void> | undefined {
  // an earlier message of this batch failed (a Parse Postgres refused): the server skips this
  // Execute up to the Sync, so there is nothing to decide, and no approver is asked about it
  if (pending.kind === 'E' && c.model.skippingToSync) return skippedInBatch(c, pending)
  // a statement that could change the session's scope is refused whatever the rules say (scope.ts)
  const outOfScope = scopeRefusal(pending.op, c.session.scope, c.scoped)
  if (outOfScope) pending.op = { ...pending.op, class: 'admin', error: outOfScope }
  const op = pending.op
  let decision: Decision | undefined
  try {
    const estimator = c.texts.estimator(pending.kind, op, pending.sql, pending.portal, false)
    decision = estimator ? c.session.decideNow(op, { estimator }) : c.session.decideNow(op)
  } catch (err) {
    send(c, pending, raw, undefined, refusalOf(err))
    return undefined
  }
  if (decision) {
    send(c, pending, raw, decision)
    return undefined
  }
  return waitForApproval(c, pending, raw)
}

export async function waitForApproval(c: Connection, pending: PendingOp, raw: Buffer): Promise<void> {
  let decision: Decision | undefined
  let refusal: Refusal | undefined
  const controller = new AbortController()
  c.pendingDecision = controller
  try {
    const defer = c.session.target.options.approvalMode === 'defer'
    const estimator = c.texts.estimator(pending.kind, pending.op, pending.sql, pending.portal, true)
    decision = await c.session.decide(pending.op, {
      signal: controller.signal,
      defer,
      sent: () => statementAsSent(pending, raw, c.session.masks, c.classifier.dependsOnSession(pending.op)),
      ...(estimator ? { estimator } : {}),
      onPending: request => {
        if (defer) return
        toClient(c, 
          serializeNoticeResponse(`statement held for approval: request ${request.id}`, {
            D: `rule ${request.rule} requires approval by ${request.approvers.join(', ') || 'an approver'}`,
            H: `approve with: portcullis approvals approve ${request.id}`,
          }),
        )
      },
    })
  } catch (err) {
    refusal = refusalOf(err)
  } finally {
    if (c.pendingDecision === controller) c.pendingDecision = undefined
  }
  if (c.closed) return
  // the batch failed while the Execute was held (errorResponse withdrew the request): it never runs
  if (pending.kind === 'E' && c.model.skippingToSync) return void skippedInBatch(c, pending)
  send(c, pending, raw, decision, refusal)
}

/**
 * An Execute behind a failed message of its batch: nothing goes upstream for it, as the server
 * would skip it; ReadyForQuery completes it (audited as skipped), and the client gets the one
 * ErrorResponse its batch earned, as from Postgres.
 */
function skippedInBatch(c: Connection, pending: PendingOp): undefined {
  pending.error = 'skipped after an earlier error in the batch'
  c.ops.push(pending)
  return undefined
}

/** the statement goes upstream, or in its place a marker whose error becomes the refusal */
export function send(c: Connection, pending: PendingOp, raw: Buffer, decision: Decision | undefined, refusal?: Refusal): void {
  const kind = pending.kind
  pending.decision = decision
  if (decision?.deferred) refusal = deferredRefusal(decision)
  // blocked by its error, not by a rule: Postgres's own code for a limit, the limit's own words
  else if (decision && decision.action !== 'allow' && isOverLimit(pending.op)) refusal = { sqlstate: STATEMENT_TOO_LONG, message: pending.op.error! }
  else if (decision && decision.action !== 'allow') {
    const rule = decision.rule ?? 'default'
    refusal = {
      sqlstate: '42501',
      message: decision.approvalId
        ? `blocked by rule ${rule}: ${decision.reason} (approval request ${decision.approvalId})`
        : `blocked by rule ${rule}: ${decision.reason}`,
      detail: decision.approvalId ? `approval request ${decision.approvalId}` : undefined,
    }
  }
  if (refusal) {
    pending.error = refusal.message
    const markerSql = marker(c, 'refused', refusal.sqlstate, refusal.message, refusal.detail ? { D: refusal.detail } : {})
    if (kind === 'Q') {
      c.sentBatches++
      sentQuery(c, QUERY)
      toUpstream(c, serializeQuery(markerSql))
    } else sendMarkerParse(c, markerSql, pending.batch)
    c.ops.push(pending)
    return
  }
  // what its statements change (SQL PREPARE, DECLARE, …) takes effect at their CommandComplete
  const effects = statementEffects(pending.op, c.classifier.statementBody)
  const copy = pending.op.facts.copy
  if (typeof copy === 'string' && copy.includes('from-stdin')) c.copyInPending = true
  if (kind === 'Q') {
    c.sentBatches++
    if (!sentQuery(c, effects ? { code: 0x51, batch: pending.batch, effects } : QUERY)) pending.error = 'skipped after an earlier error in the batch'
  } else {
    const portal = pending.portal!
    const plan = c.session.masks
    if (plan.empty) expect(c, effects ? { code: 0x45, batch: pending.batch, effects } : EXECUTE)
    else {
      // masking never depends on the client's Describe: without one of its own in this batch (or
      // a row shape already known for this portal), the gateway asks for the RowDescription
      const known = portal.shapeKnown && portal.shapePlan === plan && portal.shapeGeneration === c.catalog.generation
      if (!known && portal.describedBatch !== pending.batch) {
        expect(c, { code: 0x44, batch: pending.batch, portal, injected: true })
        toUpstream(c, serializeDescribePortal(pending.portalName!))
      }
      const e: Expectation = { code: 0x45, batch: pending.batch, portal }
      if (effects) e.effects = effects
      expect(c, e)
    }
  }
  c.ops.push(pending)
  toUpstream(c, raw)
}
