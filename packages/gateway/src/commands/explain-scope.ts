// `portcullis explain` on a target with a `scope`: what the scope needs from a token, and, given
// the token's claims (`--claims JSON`), the scope expanded for that caller and whether it would
// refuse or rewrite the request. HTTP scopes check ids against the upstream or the control store
// at run time, so explain shows their expansion only.
import { expandScope, isPortcullisError, parseTemplate, type Operation, type Principal, type ScopeConfig, type SessionScope, type TargetConfig } from '@portcullis/core'
import { importExport } from '../codecs.ts'

/** the references a scope's templates make (`claims.tenant`, `sub`, `groups`), once each */
export function scopeNeeds(scope: ScopeConfig): string[] {
  const sources: string[] = [
    ...Object.values(scope.settings ?? {}),
    ...(scope.keys ?? []),
    ...(scope.channels ?? []),
    ...(scope.indexes ?? []),
    ...[scope.tag?.value, scope.filter?.value, scope.namespace, scope.user].filter((v): v is string => v !== undefined),
  ]
  const out = new Set<string>()
  for (const s of sources) for (const p of parseTemplate(s).parts) if (typeof p !== 'string') out.add(p.ref === 'claims' ? `claims.${p.path.join('.')}` : p.ref)
  return [...out]
}

export async function explainScope(
  target: TargetConfig,
  principal: Principal,
  claimsGiven: boolean,
  op: Operation,
  request: { sql?: string; command?: string },
): Promise<Record<string, unknown>> {
  const scope = target.scope!
  const needs = scopeNeeds(scope)
  if (!claimsGiven && needs.some(n => n.startsWith('claims.')))
    return { needs, note: `this target's scope is expanded from the token's claims: pass --claims '${JSON.stringify(Object.fromEntries(needs.filter(n => n.startsWith('claims.')).map(n => [n.slice(7), '…'])))}' to see it and whether it refuses this request` }
  let expanded: SessionScope
  try {
    expanded = expandScope(scope, principal)
  } catch (err) {
    if (isPortcullisError(err)) return { needs, refused: err.message, note: 'such a token is refused at login' }
    throw err
  }
  const out: Record<string, unknown> = { needs, applied: expanded.summary }
  if (target.protocol === 'postgres' && request.sql !== undefined) {
    const check = await importExport<(op: Operation, t: TargetConfig, s: SessionScope) => { refuse?: string }>('postgres', 'explainScope')
    Object.assign(out, check(op, target, expanded))
  } else if (target.protocol === 'redis' && request.command !== undefined) {
    const check = await importExport<(line: string, s: SessionScope) => Record<string, string>>('redis', 'explainScope')
    Object.assign(out, check(request.command, expanded))
  } else if (target.protocol === 'http') {
    out.note = 'HTTP scopes are applied at run time (filters AND-ed on, namespaces set, ids checked against the upstream or the control store)'
  }
  return out
}
