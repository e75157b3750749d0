// Errors carry a stable code so that codecs can map them to protocol-native errors and tests can
// assert on them without matching message text.
export type ErrorCode =
  | 'AUTH_FAILED'
  | 'TOKEN_EXPIRED'
  | 'REVOKED'
  | 'SESSION_CLOSED'
  | 'POLICY_BLOCKED'
  | 'APPROVAL_DENIED'
  | 'APPROVAL_TIMEOUT'
  | 'APPROVAL_WITHDRAWN'
  /** the caller may not decide this request (own request, not in an approver group) */
  | 'APPROVAL_FORBIDDEN'
  | 'APPROVAL_NOT_FOUND'
  /** already approved, denied, expired or withdrawn */
  | 'APPROVAL_NOT_PENDING'
  /** minApprovals: this approver's yes is already counted (each approver counts once) */
  | 'APPROVAL_ALREADY_COUNTED'
  /** the control store (approvals, revocations, sessions of other instances) cannot be reached */
  | 'CONTROL_STORE_UNAVAILABLE'
  | 'RECORDING_FAILED'
  /** the audit log cannot be written: operations are refused until it can (fail closed) */
  | 'AUDIT_FAILED'
  | 'CONFIG_INVALID'
  | 'SECRET_UNAVAILABLE'
  | 'PROTOCOL_ERROR'
  | 'MESSAGE_TOO_LARGE'
  | 'UPSTREAM_UNAVAILABLE'
  | 'UPSTREAM_TIMEOUT'
  | 'SHUTDOWN'

export class PortcullisError extends Error {
  readonly code: ErrorCode
  /** extra, non-secret facts for the client error (approval id, rule) */
  readonly details: Record<string, unknown>
  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}) {
    super(message)
    this.name = 'PortcullisError'
    this.code = code
    this.details = details
  }
}

export function isPortcullisError(err: unknown, code?: ErrorCode): err is PortcullisError {
  return err instanceof PortcullisError && (code === undefined || err.code === code)
}
