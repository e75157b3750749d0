// What an approver sees of a Redis command held for approval, the hash the request binds to, and
// the error defer mode answers with. Called only when a rule asks for approval.
//
// Shown: the command and its arguments. Key names are shown as they are (they name what is
// touched); every other argument is a value: masked by the method of a key rule covering a key of
// the command, or of a field rule naming the argument before it (HSET key field value), and
// otherwise run through the detectors. The hash covers every argument byte as sent.
import { statementHash, type Decision, type MaskMethod, type MaskPlan, type StatementAsSent } from '@portcullis/core'
import { errorReply } from './resp.ts'

/** the prefix of defer mode's error reply: `-PENDING <id> …` */
export const PENDING_PREFIX = 'PENDING'

const SHOWN_ARG_MAX = 200
const SHOWN_ARGS_MAX = 64

function shown(arg: Buffer): string {
  const s = arg.toString('utf8')
  const cut = s.length > SHOWN_ARG_MAX ? s.slice(0, SHOWN_ARG_MAX) + `…(${arg.length} bytes)` : s
  // one line, quoted like redis-cli does
  return JSON.stringify(cut)
}

export function sentCommand(args: readonly Buffer[], keys: readonly string[], plan: MaskPlan): StatementAsSent {
  const name = args[0]?.toString('latin1').toUpperCase() ?? ''
  const keySet = new Set(keys)
  let keyMethod: MaskMethod | undefined
  if (!plan.empty && plan.hasKeyRules !== false) for (const k of keys) keyMethod ??= plan.forKey(k)
  const parameters: string[] = []
  for (let i = 1; i < args.length && parameters.length < SHOWN_ARGS_MAX; i++) {
    const a = args[i]!
    const text = a.toString('utf8')
    if (plan.empty || keySet.has(text)) {
      parameters.push(shown(a))
      continue
    }
    const method = keyMethod ?? (plan.hasFieldRules !== false && i >= 2 ? plan.forField(args[i - 1]!.toString('utf8')) : undefined)
    if (method) {
      const out = plan.apply(method, text)
      parameters.push(out === null ? '(nil)' : JSON.stringify(out))
    } else parameters.push(plan.hasDetectors ? JSON.stringify(plan.scan(text).text) : shown(a))
  }
  if (args.length - 1 > parameters.length) parameters.push(`… ${args.length - 1 - parameters.length} more arguments`)
  return { text: [name, ...parameters].join(' '), parameters, hash: statementHash(name, args.slice(1) as Buffer[]) }
}

/** defer mode's reply: the request id first, so a client can read it without parsing prose */
export function pendingReply(decision: Decision): Buffer {
  const id = decision.approvalId!
  return errorReply(
    PENDING_PREFIX,
    `${id} approval pending (rule ${decision.rule ?? 'default'}); the command was not run. Poll GET /api/approvals/${id} or run: portcullis approvals wait ${id}; once approved, send the identical command again (it runs once)`,
  )
}
