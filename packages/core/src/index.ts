export * from './types.ts'
export * from './errors.ts'
export * from './masking/index.ts'
export * from './recording/index.ts'
export * from './config/types.ts'
export { parseConfig, loadConfig, resolvePaths, ConfigError, formatIssue } from './config/parse.ts'
export { parseDuration } from './config/duration.ts'
export { configSchema } from './config/schema.ts'
export { createSecretStore, type SecretStore } from './secrets/store.ts'
export { createIdentity, claimGroups, type Identity } from './identity/verify.ts'
export { createDevIssuer, type DevIssuer, type MintOptions } from './identity/dev-issuer.ts'
export { Revocations } from './identity/revocations.ts'
export { decide, ruleMatches, factsNamed, DEFAULT_DENY_REASON, type PolicyDecision } from './policy/decide.ts'
export { matchResource, matchName } from './policy/glob.ts'
export { fingerprint, policyVersion, statementHash } from './policy/fingerprint.ts'
export { createApprovals, approvalId, APPROVAL_UNAVAILABLE, type Approvals, type HoldRequest, type HoldOutcome } from './approvals/approvals.ts'
export { MemoryControlStore, grantKey } from './control/memory.ts'
export { IpcControlStore, ControlStoreHost, type IpcChannel } from './control/ipc.ts'
export { isShared } from './control/store.ts'
export type {
  ApprovalGrant,
  ControlChange,
  ControlHealth,
  ControlStore,
  InstanceInfo,
  KillRequest,
  RequestVerdict,
  SessionRecord,
} from './control/store.ts'
export { approvalSummary, webhookBody } from './approvals/webhook.ts'
export { ESTIMATE_FACTS, DEFAULT_ESTIMATE_TIMEOUT_MS, estimateFacts, withEstimate, unknownFacts, rulesName, runEstimate } from './approvals/estimate.ts'
export { createAuditLog, type AuditLog } from './audit/audit.ts'
export { Metrics } from './metrics/metrics.ts'
export { CoreSession } from './session/session.ts'
export { createCore, DEFAULT_UPLOAD_WAIT_MS, type Core, type CoreOptions, type CoreApprovals, type CoreControl, type SessionInfo, instanceId } from './core.ts'
export { expandScope, scopeIssues, scopeWarnings, type ScopeConfig, type SessionScope } from './identity/scope.ts'
export { attachClaims, principalClaims, expandAll, expandOne, globQuote, parseTemplate, hasTemplate, TemplateError } from './identity/templates.ts'
