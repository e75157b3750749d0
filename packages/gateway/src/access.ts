// Who may see and do what on the admin listener, from a principal's groups. The JSON API and the web
// console both ask here, so a rule cannot differ between the two.
//   admins     (admin.groups, default [admins]): everything
//   approvers  (any group named as `approvers` by a rule): the requests they may act on, the
//              sessions those requests come from
//   auditors   (admin.auditors, default [auditors]): recordings and the audit log
import type { ApprovalRequest, Config, Principal } from '@portcullis/core'

export const DEFAULT_ADMIN_GROUPS = ['admins']
export const DEFAULT_AUDITOR_GROUPS = ['auditors']

export interface Roles {
  admin: boolean
  approver: boolean
  auditor: boolean
}

const member = (p: Principal, groups: readonly string[]) => p.groups.some((g) => groups.includes(g))

export function adminGroups(config: Config): string[] {
  return config.admin?.groups ?? DEFAULT_ADMIN_GROUPS
}

export function isAdmin(p: Principal, config: Config): boolean {
  return member(p, adminGroups(config))
}

export function rolesOf(p: Principal, config: Config): Roles {
  const approverGroups = new Set(config.rules.flatMap((r) => r.approvers ?? []))
  return {
    admin: isAdmin(p, config),
    approver: p.groups.some((g) => approverGroups.has(g)),
    auditor: member(p, config.admin?.auditors ?? DEFAULT_AUDITOR_GROUPS),
  }
}

/** may see this request (list and fetch): admins, its own requester, its approver groups */
export function maySeeApproval(p: Principal, a: ApprovalRequest, config: Config): boolean {
  return isAdmin(p, config) || a.principal.subject === p.subject || mayDecide(p, a)
}

/** may approve or deny it (core decides again: never one's own request) */
export function mayDecide(p: Principal, a: ApprovalRequest): boolean {
  return a.approvers.some((g) => p.groups.includes(g)) && a.principal.subject !== p.subject
}
