// An Operation's own audit fields as JSON text, made once per Operation object (and shared by the
// exact copies a codec makes of one): a module of its own, without the sink, so that a classifier
// can name its copies without loading the log.

const operationTexts = new WeakMap<object, OperationText>()

/**
 * `copy` (not frozen yet) carries `original`'s class, resources, fingerprint and statement unchanged
 * (a copy made for its own lineage: the Postgres classifier's texts of one skeleton): its audit lines
 * use the JSON made for `original`, so a statement that differs from the last one only in its
 * constants costs no serialization of those fields. The link is a property that no spread, JSON or
 * key listing sees, not a WeakMap entry: a codec that makes such a copy per statement (per Query)
 * pays no ephemeron insert and no share of the scavenges for it.
 */
export function withAuditFieldsOf<T extends object>(copy: T, original: object): T {
  Object.defineProperty(copy, ORIGIN, { value: originOf(original), enumerable: false })
  return copy
}

const ORIGIN = Symbol('portcullis.auditFieldsOf')

function originOf(op: object): object {
  return (op as { [ORIGIN]?: object })[ORIGIN] ?? op
}

/**
 * An operation's own audit fields as JSON text (`json`, see operationJson) and, once a file's batch
 * first asked for it, that text as UTF-8 bytes followed by the ',' of the fields after it (`bytes`,
 * audit.ts writeOutcome copies it into the batch instead of encoding the text again per line)
 */
export interface OperationText {
  readonly json: string
  bytes: Buffer | undefined
}

type AuditFields = { class: string; resources: readonly string[]; fingerprint: string; statement: string }

/** operationJson's text of `op` and its bytes, made once per Operation object */
export function operationText(op: AuditFields): OperationText {
  const key = originOf(op)
  let text = operationTexts.get(key)
  if (text === undefined) {
    // what JSON.stringify of the four fields writes, field by field (no object to build and walk)
    let resources = '['
    for (let i = 0; i < op.resources.length; i++) resources += (i === 0 ? '' : ',') + JSON.stringify(op.resources[i] ?? null)
    const json = `"class":${JSON.stringify(op.class)},"resources":${resources}],"fingerprint":${JSON.stringify(op.fingerprint)},"statement":${JSON.stringify(op.statement)}`
    text = { json, bytes: undefined }
    operationTexts.set(key, text)
  }
  return text
}

/**
 * An operation's own audit fields (class, resources, fingerprint, statement) as JSON text without
 * braces, made once per Operation object: a codec that caches its Operations (Redis: per command
 * frame) pays one JSON.stringify of them, not one per line.
 */
export function operationJson(op: AuditFields): string {
  return operationText(op).json
}
