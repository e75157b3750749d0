// A target's scope on Postgres: session settings (`scope: { settings: { app.tenant: '${claims.tenant}' } }`)
// that Row-Level Security policies read with current_setting('app.tenant').
//
// How they are set: as StartupMessage parameters of the gateway's own upstream connection, after
// the client's parameters were vetted (a client that names a scoped setting there, or in `options`,
// is refused). A StartupMessage parameter is a value, not SQL: nothing is concatenated into a
// statement, and the template layer has refused control characters (a NUL would end it). The server
// takes them as the session's defaults (source "client"), so RESET, RESET ALL and DISCARD ALL return
// to them by themselves, and so does the end of a transaction that changed them.
//
// What may not run under a scope (refused before the policy is asked, the reason in the decision):
//   - any statement that changes a scoped setting: SET [LOCAL|SESSION], RESET, set_config with
//     that name, ALTER ROLE/DATABASE … SET, CREATE/ALTER FUNCTION … SET;
//   - set_config with a name that is not a constant (it could be the scoped one), and writes to
//     pg_settings (its update rule is set_config);
//   - SET ROLE / SET SESSION AUTHORIZATION / RESET ROLE (another role may have BYPASSRLS), even
//     where a rule allows admin statements;
//   - CREATE / ALTER / DROP POLICY, ALTER TABLE … DISABLE / NO FORCE ROW LEVEL SECURITY, OWNER TO:
//     what the scope relies on, whatever a rule allows;
//   - what every tenant shares behind one upstream role, whatever RLS says: LISTEN / NOTIFY /
//     pg_notify, large objects (lo_*, pg_largeobject), other sessions' statements
//     (pg_stat_activity, pg_stat_statements, pg_locks, pg_prepared_xacts);
//   - code the gateway cannot read: DO blocks and CREATE/ALTER FUNCTION|PROCEDURE, CREATE LANGUAGE,
//     unless the scope says allowCode: true (a body can call set_config with any name).
// What it cannot see: a function already in the database whose body calls set_config with a name
// the caller chooses (the README says how to look for them).
import { PortcullisError, type Operation, type SessionScope, type TargetConfig } from '@portcullis/core'
import { settingConcern } from './settings.ts'

const NONE: ReadonlySet<string> = new Set()
const IDENTITY = new Set(['role', 'session_authorization'])

/** The scoped setting names of a target (known from the config before anyone authenticates). */
export function scopedSettings(target: TargetConfig): ReadonlySet<string> {
  const s = target.scope?.settings
  return s ? new Set(Object.keys(s).map(k => k.toLowerCase())) : NONE
}

/** The StartupMessage parameters that carry the scope; refuses a target with a scope and a session without one. */
export function scopeParameters(target: TargetConfig, scope: SessionScope | undefined): Record<string, string> {
  if (!target.scope?.settings) return {}
  if (!scope?.settings) throw new PortcullisError('AUTH_FAILED', 'scope: this target sets session settings from the token, and the session has none', { reason: 'scope-claim' })
  return { ...scope.settings }
}

/** Why `op` may not run under this scope, or undefined. */
export function scopeRefusal(op: Operation, scope: SessionScope | undefined, scoped: ReadonlySet<string>): string | undefined {
  if (!scope || scoped.size === 0) return undefined
  for (const s of op.statements) {
    const f = s.facts
    if (!f) continue
    if (f.settings !== undefined) {
      for (const name of String(f.settings).split(',')) {
        if (name === '*')
          return 'scope: a setting named by an expression (set_config with a non-constant name, a write to pg_settings) could change the session scope; refused'
        if (scoped.has(name)) return `scope: ${settingConcern(name, undefined, scoped)}`
        // another role may hold BYPASSRLS or own the tables: a rule that allows admin statements
        // does not allow leaving the scope's role
        if (IDENTITY.has(name)) return `scope: ${name} is refused under a scope (another role may bypass Row-Level Security)`
      }
    }
    if (f.rowSecurity === true)
      return 'scope: statements that change Row-Level Security (policies, DISABLE / NO FORCE ROW LEVEL SECURITY, OWNER TO) are refused under a scope'
    if (f.shared !== undefined)
      return `scope: ${String(f.shared).split(',').join(', ')}: shared by every tenant behind the gateway's one upstream role (Row-Level Security does not reach it); refused under a scope`
    if (f.code === true && !scope.allowCode)
      return 'scope: DO blocks and CREATE/ALTER FUNCTION or PROCEDURE are refused under a scope (their code could change the session scope); scope.allowCode lets them run'
  }
  return undefined
}

/**
 * Why a scoped session may not start on this upstream connection: its role is a superuser
 * (the server's own is_superuser report at startup), whom Row-Level Security never holds. A role
 * with BYPASSRLS is not reported; the README says to check for it.
 */
export function upstreamRoleRefusal(target: TargetConfig, parameterStatus: readonly Buffer[]): string | undefined {
  if (!target.scope?.settings) return undefined
  for (const raw of parameterStatus) {
    // S, int32 length, name NUL value NUL
    const body = raw.subarray(5)
    const nul = body.indexOf(0)
    if (nul < 0 || body.subarray(0, nul).toString('latin1') !== 'is_superuser') continue
    const value = body.subarray(nul + 1, body.indexOf(0, nul + 1)).toString('latin1')
    if (value === 'on')
      return "scope: the gateway's upstream role is a superuser, which Row-Level Security does not hold; scoped sessions are refused (use a plain role, see fixtures/sql/tenant-rls.sql)"
  }
  return undefined
}

/** `portcullis explain`: whether this statement would be refused under `scope` on `target` */
export function explainScope(op: Operation, target: TargetConfig, scope: SessionScope): { refuse?: string } {
  const why = scopeRefusal(op, scope, scopedSettings(target))
  return why ? { refuse: why } : {}
}
