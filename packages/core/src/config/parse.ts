// YAML text → validated, normalized Config. Every issue names file, line and key path, because the
// person reading `check-config` output has the file open, not the schema.
import { scopeIssues } from '../identity/scope.ts'
import { hasTemplate, parseTemplate } from '../identity/templates.ts'
import { readFile } from 'node:fs/promises'
import { dirname, isAbsolute, resolve } from 'node:path'
import { Ajv, type ErrorObject } from 'ajv'
import RE2 from 're2'
import { LineCounter, isMap, isSeq, parseDocument, type Document, type Node } from 'yaml'
import { PortcullisError } from '../errors.ts'
import type { SecretRef, TargetConfig } from '../types.ts'
import { parseDuration } from './duration.ts'
import { checkMaskingRules } from '../masking/index.ts'
import { configSchema } from './schema.ts'
import { targetOptionIssues } from './target-options.ts'
import type { Config, ConfigIssue, ConsoleConfig, IssuerConfig, RecordingUploadConfig, RuleConfig, SecretSource, SlackConfig } from './types.ts'

export class ConfigError extends PortcullisError {
  readonly issues: ConfigIssue[]
  constructor(issues: ConfigIssue[]) {
    issues = [...issues].sort((a, b) => a.line - b.line)
    super('CONFIG_INVALID', issues.map(formatIssue).join('\n'), { issues: issues.length })
    this.name = 'ConfigError'
    this.issues = issues
  }
}

export function formatIssue(i: ConfigIssue): string {
  return `${i.file}:${i.line}: ${i.path || '(top)'}: ${i.message}`
}

const ajv = new Ajv({ allErrors: true, strict: false, allowUnionTypes: true, verbose: true })
const validate = ajv.compile(configSchema)

export const DEFAULT_ALGORITHMS = ['RS256', 'ES256', 'EdDSA']
const DEFAULT_LIMITS = {
  maxConnections: 1000,
  maxMessageBytes: 64 * 1024 * 1024,
  idleTimeoutMs: 3_600_000,
  handshakeTimeoutMs: 10_000,
}

export async function loadConfig(file: string): Promise<Config> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new ConfigError([{ file, line: 0, path: '', message: `cannot read: ${(err as Error).message}` }])
  }
  return resolvePaths(parseConfig(text, file), dirname(resolve(file)))
}

/**
 * Relative paths in a config file mean relative to that file, not to wherever the gateway was
 * started from: `portcullis start --config deploy/portcullis.yaml` finds `./recordings` beside it.
 */
export function resolvePaths(config: Config, baseDir: string): Config {
  const abs = (p: string) => (isAbsolute(p) ? p : resolve(baseDir, p))
  config.recording.dir = abs(config.recording.dir)
  if (config.audit.destination !== 'stdout') config.audit.destination = abs(config.audit.destination)
  for (const i of config.identity.issuers) if (i.jwksFile) i.jwksFile = abs(i.jwksFile)
  for (const [name, s] of Object.entries(config.secrets)) if ('file' in s) config.secrets[name] = { file: abs(s.file) }
  for (const t of config.targets) {
    if (t.tls) t.tls = { cert: abs(t.tls.cert), key: abs(t.tls.key) }
    const ca = t.upstream.tls?.ca
    if (ca !== undefined && !ca.includes('-----BEGIN')) t.upstream.tls = { ...t.upstream.tls, ca: abs(ca) }
  }
  return config
}

export function parseConfig(text: string, file = '<config>'): Config {
  const lineCounter = new LineCounter()
  const doc = parseDocument(text, { lineCounter, prettyErrors: false, uniqueKeys: true })
  const lineOf = (offset: number) => lineCounter.linePos(offset).line
  if (doc.errors.length > 0) {
    throw new ConfigError(doc.errors.map(e => ({ file, line: lineOf(e.pos[0]), path: '', message: e.message.split('\n')[0] })))
  }
  const raw: unknown = doc.toJS() ?? {}
  const locate = (path: (string | number)[], key?: string) => locateLine(doc, path, key, lineOf)

  if (!validate(raw)) {
    throw new ConfigError(schemaIssues(validate.errors ?? [], raw, file, locate))
  }
  const issues: ConfigIssue[] = []
  const issue = (path: (string | number)[], message: string) =>
    issues.push({ file, line: locate(path), path: path.join('.'), message })
  const config = normalize(raw as RawConfig, file, issue)
  if (issues.length > 0) throw new ConfigError(issues)
  return config
}

function locateLine(
  doc: Document,
  path: (string | number)[],
  key: string | undefined,
  lineOf: (offset: number) => number,
): number {
  // Walk down as far as the document goes; a missing key reports its parent's line.
  let node: unknown = doc.contents
  for (const seg of path) {
    const next = isMap(node) || isSeq(node) ? node.get(seg, true) : undefined
    if (next === undefined) break
    node = next
  }
  if (key !== undefined && isMap(node)) {
    const pair = node.items.find(p => (p.key as { value?: unknown } | null)?.value === key)
    const k = pair?.key as Node | undefined
    if (k?.range) return lineOf(k.range[0])
  }
  const range = (node as Node | null)?.range
  return range ? lineOf(range[0]) : 1
}

function pointerToPath(pointer: string): (string | number)[] {
  if (pointer === '') return []
  return pointer
    .slice(1)
    .split('/')
    .map(s => s.replace(/~1/g, '/').replace(/~0/g, '~'))
    .map(s => (/^\d+$/.test(s) ? Number(s) : s))
}

function valueAt(root: unknown, path: (string | number)[]): unknown {
  let v = root as Record<string | number, unknown> | undefined
  for (const seg of path) v = v == null ? undefined : (v[seg] as Record<string | number, unknown>)
  return v
}

function schemaIssues(
  errors: ErrorObject[],
  raw: unknown,
  file: string,
  locate: (path: (string | number)[], key?: string) => number,
): ConfigIssue[] {
  // An anyOf that failed reports every branch's complaint; where the schema gives one sentence for
  // it (x-message), say that once and drop the branch noise under that key.
  const covered = new Map<string, string>()
  for (const e of errors) {
    const msg = (e.parentSchema as Record<string, unknown> | undefined)?.['x-message']
    if (e.keyword === 'anyOf' && typeof msg === 'string') covered.set(e.instancePath, msg)
  }
  const isCovered = (pointer: string) => {
    for (const c of covered.keys()) if (pointer === c || pointer.startsWith(c + '/')) return c
    return undefined
  }
  const out = new Map<string, ConfigIssue>()
  for (const e of errors) {
    let pointer = e.instancePath
    const cover = isCovered(pointer)
    let path = pointerToPath(cover ?? pointer)
    let where = path
    let key: string | undefined
    let message: string
    const parent = e.parentSchema as Record<string, unknown> | undefined
    if (cover !== undefined) {
      message = covered.get(cover)!
    } else if (parent?.['x-secret-ref'] === true && typeof valueAt(raw, path) === 'string') {
      message = 'secrets are referenced, never inline: write { secret: NAME } and define NAME under secrets'
    } else if (e.keyword === 'additionalProperties') {
      key = String(e.params.additionalProperty)
      where = [...path, key]
      message = 'unknown key'
    } else if (e.keyword === 'required') {
      where = [...path, String(e.params.missingProperty)]
      message = 'is required'
    } else if (e.keyword === 'enum') {
      message = `must be one of ${(e.params.allowedValues as unknown[]).join(', ')}`
    } else {
      message = e.message ?? 'is not valid'
    }
    const id = where.join('.')
    if (out.has(id)) continue
    out.set(id, { file, line: locate(key ? path : where, key), path: id, message })
  }
  return [...out.values()]
}

// ─── normalization: YAML shape → runtime shape, plus checks a schema can't express ───

interface RawConfig {
  admin?: Config['admin']
  identity?: { issuers?: RawIssuer[]; revocations?: { subject?: string; jti?: string }[] }
  secrets?: Record<string, { env?: string; file?: string; exec?: string[]; ttl?: string | number }>
  recording?: { dir?: string; onFailure?: 'block' | 'allow'; sign?: { hmacKey?: SecretRef; ed25519Key?: SecretRef }; upload?: RawUpload }
  audit?: { destination?: string; reads?: 'each' | 'summary' }
  approvals?: {
    timeout?: string | number
    webhook?: { url: string | SecretRef; format?: 'json' | 'slack' }
    estimate?: { timeout?: string | number }
    slack?: { botToken: SecretRef; signingSecret: SecretRef; channel: string; users: SlackConfig['users']; lookupByEmail?: boolean; apiUrl?: string }
  }
  controlStore?: {
    postgres?: Omit<NonNullable<Config['controlStore']['postgres']>, 'port' | 'schema'> & { port?: number; schema?: string }
    redis?: Omit<NonNullable<Config['controlStore']['redis']>, 'port' | 'prefix'> & { port?: number; prefix?: string }
    lease?: string | number
    heartbeat?: string | number
    poll?: string | number
  }
  targets?: RawTarget[]
  rules?: (Omit<RuleConfig, 'window' | 'timeout' | 'when'> & { when?: RuleConfig['when']; window?: string | number; timeout?: string | number })[]
  masking?: Config['masking']
  maskingKey?: SecretRef
  workers?: 'auto' | number
}
interface RawIssuer extends Omit<IssuerConfig, 'algorithms' | 'groupsClaim' | 'clockSkew' | 'requireExp' | 'jwksTimeout'> {
  jwksTimeout?: string | number
  requireExp?: boolean
  algorithms?: string[]
  groupsClaim?: string
  clockSkew?: string | number
}
interface RawTarget extends Omit<TargetConfig, 'limits' | 'options' | 'upstream'> {
  upstream?: TargetConfig['upstream']
  limits?: { maxConnections?: number; maxMessageBytes?: number; maxStatementBytes?: number; idleTimeout?: string | number; handshakeTimeout?: string | number }
  options?: Record<string, unknown>
}

type Issue = (path: (string | number)[], message: string) => void

// ─── recording.upload ───
interface RawUpload {
  s3: Omit<RecordingUploadConfig['s3'], 'prefix' | 'region' | 'forcePathStyle'> & { prefix?: string; region?: string; forcePathStyle?: boolean }
  maxSpool?: number | string
  maxRetryDelay?: number | string
}

const SIZE_UNITS: Record<string, number> = { B: 1, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, TiB: 1024 ** 4 }

function parseSize(v: number | string): number {
  if (typeof v === 'number') return v
  const m = /^(\d+(?:\.\d+)?)(B|KiB|MiB|GiB|TiB)$/.exec(v)!
  return Math.floor(Number(m[1]) * SIZE_UNITS[m[2]])
}

function normalizeUpload(raw: RawUpload, issue: Issue, checkRef: (ref: SecretRef | undefined, path: (string | number)[]) => void): RecordingUploadConfig {
  const path = ['recording', 'upload', 's3']
  const s3 = raw.s3
  if ((s3.accessKeyId === undefined) !== (s3.secretAccessKey === undefined))
    issue(path, 'accessKeyId and secretAccessKey go together (or neither: the AWS SDK default credentials)')
  if (s3.endpoint !== undefined && !URL.canParse(s3.endpoint)) issue([...path, 'endpoint'], 'is not a valid URL')
  if (!/^[a-z0-9][a-z0-9.-]+[a-z0-9]$/.test(s3.bucket)) issue([...path, 'bucket'], 'is not a valid bucket name (lower-case letters, digits, dots, hyphens)')
  checkRef(s3.accessKeyId, [...path, 'accessKeyId'])
  checkRef(s3.secretAccessKey, [...path, 'secretAccessKey'])
  let prefix = s3.prefix ?? ''
  if (prefix.startsWith('/')) issue([...path, 'prefix'], 'must not start with /')
  if (prefix !== '' && !prefix.endsWith('/')) prefix += '/'
  return {
    s3: {
      ...s3,
      prefix,
      region: s3.region ?? 'us-east-1',
      forcePathStyle: s3.forcePathStyle ?? s3.endpoint !== undefined,
    },
    maxSpoolBytes: parseSize(raw.maxSpool ?? '1GiB'),
    maxRetryDelayMs: parseDuration(raw.maxRetryDelay ?? '1m'),
  }
}

function normalize(raw: RawConfig, file: string, issue: Issue): Config {
  const secrets: Record<string, SecretSource> = {}
  for (const [name, s] of Object.entries(raw.secrets ?? {})) {
    if (s.env !== undefined) secrets[name] = { env: s.env }
    else if (s.file !== undefined) secrets[name] = { file: s.file }
    else secrets[name] = { exec: s.exec ?? [], ttl: parseDuration(s.ttl ?? '5m') }
  }
  const checkRef = (ref: SecretRef | undefined, path: (string | number)[]) => {
    if (ref && !(ref.secret in secrets)) issue([...path, 'secret'], `unknown secret "${ref.secret}" (define it under secrets)`)
  }

  const issuers: IssuerConfig[] = (raw.identity?.issuers ?? []).map((i, n) => {
    const algorithms = i.algorithms ?? DEFAULT_ALGORITHMS
    const path = ['identity', 'issuers', n]
    if (!i.jwks && !i.jwksFile && !i.secret) issue(path, 'needs jwks (URL), jwksFile or secret')
    if (i.jwks !== undefined && !URL.canParse(i.jwks)) issue([...path, 'jwks'], 'is not a valid URL')
    if (algorithms.some(a => a === 'none')) issue([...path, 'algorithms'], 'alg none is never accepted')
    if (algorithms.some(a => a.startsWith('HS')) && !i.secret)
      issue([...path, 'algorithms'], 'HS* algorithms need a shared secret (secret: { secret: NAME })')
    if (i.secret && algorithms.some(a => !a.startsWith('HS')) && i.algorithms === undefined)
      issue([...path, 'algorithms'], 'an issuer with a shared secret must list its HS* algorithms')
    checkRef(i.secret, path)
    const { jwksTimeout: _timeout, ...rest } = i
    return {
      ...rest,
      algorithms,
      groupsClaim: i.groupsClaim ?? 'groups',
      clockSkew: parseDuration(i.clockSkew ?? '30s'),
      requireExp: i.requireExp ?? true,
      ...(i.jwksTimeout !== undefined ? { jwksTimeout: parseDuration(i.jwksTimeout) } : {}),
    }
  })

  const targets: TargetConfig[] = []
  const seenTargets = new Set<string>()
  const seenListen = new Map<string, string>()
  for (const [n, t] of (raw.targets ?? []).entries()) {
    const path = ['targets', n]
    if (seenTargets.has(t.name)) issue([...path, 'name'], `duplicate target name "${t.name}"`)
    seenTargets.add(t.name)
    // port 0 asks the OS for a fresh port each time, so two targets on ':0' never collide
    const ephemeral = t.listen.endsWith(':0')
    if (!ephemeral && seenListen.has(t.listen)) issue([...path, 'listen'], `${t.listen} is already the listen address of target "${seenListen.get(t.listen)}"`)
    seenListen.set(t.listen, t.name)
    for (const [key, message] of targetOptionIssues(t.protocol, t.options ?? {})) issue([...path, 'options', key], message)
    if (t.protocol === 'mcp') {
      // an MCP target has no upstream of its own: its tools reach the targets it names, through their codecs
      t.upstream ??= {}
      if (!t.targets || t.targets.length === 0) issue([...path, 'targets'], 'mcp targets need targets: the targets whose tools they serve')
    } else {
      if (t.targets !== undefined) issue([...path, 'targets'], 'only mcp targets name other targets')
      if (!t.upstream) issue(path, `${t.protocol} targets need upstream`)
      t.upstream ??= {}
    }
    if (t.protocol === 'http' && !t.upstream.url) issue([...path, 'upstream'], 'http targets need upstream.url')
    if (t.protocol !== 'http' && t.protocol !== 'mcp' && (!t.upstream.host || !t.upstream.port))
      issue([...path, 'upstream'], `${t.protocol} targets need upstream.host and upstream.port`)
    const auth = t.upstream.auth as (Omit<NonNullable<TargetConfig['upstream']['auth']>, 'value'> & { value?: string }) | undefined
    if (auth) {
      // an Authorization header means a bearer token unless said otherwise; other headers (x-api-key,
      // api-key) carry the bare key
      if (auth.value === undefined) auth.value = auth.header.toLowerCase() === 'authorization' ? 'Bearer {secret}' : '{secret}'
      else if (!auth.value.includes('{secret}'))
        issue([...path, 'upstream', 'auth', 'value'], 'must contain {secret} where the credential goes')
    }
    if (t.scope) for (const [at, message] of scopeIssues(t.scope, t)) issue([...path, 'scope', ...at], message)
    checkRef(t.upstream.password, [...path, 'upstream', 'password'])
    checkRef(t.upstream.auth?.secret, [...path, 'upstream', 'auth', 'secret'])
    const l = t.limits ?? {}
    targets.push({
      ...t,
      upstream: t.upstream ?? {},
      limits: {
        maxConnections: l.maxConnections ?? DEFAULT_LIMITS.maxConnections,
        maxMessageBytes: l.maxMessageBytes ?? DEFAULT_LIMITS.maxMessageBytes,
        ...(l.maxStatementBytes !== undefined ? { maxStatementBytes: l.maxStatementBytes } : {}),
        idleTimeoutMs: l.idleTimeout !== undefined ? parseDuration(l.idleTimeout) : DEFAULT_LIMITS.idleTimeoutMs,
        handshakeTimeoutMs:
          l.handshakeTimeout !== undefined ? parseDuration(l.handshakeTimeout) : DEFAULT_LIMITS.handshakeTimeoutMs,
      },
      options: t.options ?? {},
    })
  }

  for (const [n, t] of targets.entries()) {
    for (const [i, name] of (t.targets ?? []).entries()) {
      const named = targets.find(o => o.name === name)
      if (!named) issue(['targets', n, 'targets', i], `unknown target "${name}"`)
      else if (named.protocol === 'mcp') issue(['targets', n, 'targets', i], `"${name}" is an mcp target: an MCP target serves postgres, redis and http targets`)
    }
  }

  const rules: RuleConfig[] = []
  const seenRules = new Set<string>()
  for (const [n, r] of (raw.rules ?? []).entries()) {
    const path = ['rules', n]
    if (seenRules.has(r.id)) issue([...path, 'id'], `duplicate rule id "${r.id}"`)
    seenRules.add(r.id)
    if (r.action === 'approve' && !(r.approvers && r.approvers.length > 0))
      issue([...path, 'approvers'], 'an approve rule needs approvers (groups)')
    const templates: Array<[string, (string | number)[]]> = [
      ...(r.when?.resources ?? []).map((v, i): [string, (string | number)[]] => [v, ['resources', i]]),
      ...(r.when?.subjects ?? []).map((v, i): [string, (string | number)[]] => [v, ['subjects', i]]),
      ...Object.entries(r.when?.facts ?? {}).flatMap(([k, v]): Array<[string, (string | number)[]]> => (typeof v === 'string' ? [[v, ['facts', k]]] : [])),
      ...(r.when?.statement !== undefined ? [[r.when.statement, ['statement']] as [string, (string | number)[]]] : []),
    ]
    for (const [v, at] of templates) {
      if (!hasTemplate(v)) continue
      try {
        parseTemplate(v)
      } catch (err) {
        issue([...path, 'when', ...at], (err as Error).message)
      }
    }
    if (r.when?.statement !== undefined) {
      try {
        // a template stands for quoted literal text: check the pattern around it
        new RE2(r.when.statement.replace(/\$\{[^}]*\}/g, 'x'))
      } catch (err) {
        issue([...path, 'when', 'statement'], `bad pattern: ${(err as Error).message}`)
      }
    }
    for (const t of r.when?.targets ?? [])
      if (!seenTargetsAll(raw).has(t) && !/[*?]/.test(t)) issue([...path, 'when', 'targets'], `unknown target "${t}"`)
    const rule: RuleConfig = { id: r.id, when: r.when ?? {}, action: r.action }
    if (r.approvers) rule.approvers = r.approvers
    if (r.window !== undefined) rule.window = parseDuration(r.window)
    if (r.timeout !== undefined) rule.timeout = parseDuration(r.timeout)
    if (r.minApprovals !== undefined) {
      if (r.action !== 'approve') issue([...path, 'minApprovals'], 'minApprovals applies to approve rules only')
      rule.minApprovals = r.minApprovals
    }
    if (r.reason !== undefined) rule.reason = r.reason
    rules.push(rule)
  }

  // The masking engine knows its detectors and pattern limits; ask it rather than repeat them here.
  for (const problem of checkMaskingRules(raw.masking ?? [])) {
    const path = problem.path
      .replace(/\[(\d+)\]/g, '.$1')
      .split('.')
      .filter(Boolean)
      .map(s => (/^\d+$/.test(s) ? Number(s) : s))
    issue(['masking', ...path], problem.message)
  }

  checkRef(raw.maskingKey, ['maskingKey'])
  checkRef(raw.recording?.sign?.hmacKey, ['recording', 'sign', 'hmacKey'])
  checkRef(raw.recording?.sign?.ed25519Key, ['recording', 'sign', 'ed25519Key'])
  const hookUrl = raw.approvals?.webhook?.url
  if (hookUrl !== undefined && typeof hookUrl !== 'string') checkRef(hookUrl, ['approvals', 'webhook', 'url'])
  checkRef(raw.controlStore?.postgres?.password, ['controlStore', 'postgres', 'password'])
  checkRef(raw.controlStore?.redis?.password, ['controlStore', 'redis', 'password'])
  const rawStore = raw.controlStore ?? {}
  const controlStore: Config['controlStore'] = {
    leaseMs: parseDuration(rawStore.lease ?? '15s'),
    heartbeatMs: parseDuration(rawStore.heartbeat ?? '5s'),
    pollMs: parseDuration(rawStore.poll ?? '2s'),
  }
  // a lease renewed less often than it lasts would lapse between heartbeats of a live instance
  if (controlStore.heartbeatMs * 2 > controlStore.leaseMs)
    issue(['controlStore', rawStore.heartbeat !== undefined ? 'heartbeat' : 'lease'], 'heartbeat must be at most half the lease')
  if (rawStore.postgres) {
    const pg = rawStore.postgres
    controlStore.postgres = { ...pg, port: pg.port ?? 5432, schema: pg.schema ?? 'portcullis_control' }
  }
  if (rawStore.redis) {
    if (rawStore.postgres) issue(['controlStore', 'redis'], 'one control store: postgres or redis, not both')
    const r = rawStore.redis
    controlStore.redis = { ...r, port: r.port ?? 6379, prefix: r.prefix ?? 'portcullis:control:' }
  }

  const config: Config = {
    identity: { issuers, revocations: raw.identity?.revocations ?? [] },
    secrets,
    recording: {
      dir: raw.recording?.dir ?? './recordings',
      onFailure: raw.recording?.onFailure ?? 'block',
      ...(raw.recording?.sign ? { sign: raw.recording.sign } : {}),
      ...(raw.recording?.upload ? { upload: normalizeUpload(raw.recording.upload, issue, checkRef) } : {}),
    },
    audit: { destination: raw.audit?.destination ?? 'stdout', reads: raw.audit?.reads ?? 'each' },
    approvals: {
      timeoutMs: parseDuration(raw.approvals?.timeout ?? '5m'),
      ...(raw.approvals?.webhook
        ? { webhook: { url: raw.approvals.webhook.url, format: raw.approvals.webhook.format ?? 'json' } }
        : {}),
      ...(raw.approvals?.estimate?.timeout !== undefined ? { estimateTimeoutMs: parseDuration(raw.approvals.estimate.timeout) } : {}),
      ...(raw.approvals?.slack ? { slack: slackConfig(raw.approvals.slack, issue, checkRef, raw.admin !== undefined) } : {}),
    },
    controlStore,
    targets,
    rules,
    masking: raw.masking ?? [],
    workers: raw.workers ?? 1,
    file,
  }
  if (raw.admin) {
    const { console: consoleRaw, ...admin } = raw.admin as NonNullable<Config['admin']> & { console?: Record<string, unknown> }
    config.admin = admin
    if (consoleRaw) {
      const { sessionTtl, ...c } = consoleRaw as unknown as ConsoleConfig & { sessionTtl?: string | number }
      config.admin.console = { ...c, ...(sessionTtl !== undefined ? { sessionTtl: parseDuration(sessionTtl) } : {}) }
    }
  }
  if (raw.maskingKey) config.maskingKey = raw.maskingKey
  return config
}

function slackConfig(raw: NonNullable<NonNullable<RawConfig['approvals']>['slack']>, issue: Issue, checkRef: (ref: SecretRef | undefined, path: (string | number)[]) => void, admin: boolean): SlackConfig {
  // the buttons call POST /slack/interactions on the admin listener: without one they could not decide
  if (!admin) issue(['approvals', 'slack'], 'needs admin.listen: Slack sends button clicks to the admin listener (/slack/interactions)')
  checkRef(raw.botToken, ['approvals', 'slack', 'botToken'])
  checkRef(raw.signingSecret, ['approvals', 'slack', 'signingSecret'])
  const lookupByEmail = raw.lookupByEmail === true
  for (const key of Object.keys(raw.users ?? {})) {
    // a key is a Slack user id, or an email when the Web API is asked who has it
    if (key.includes('@') && !lookupByEmail) issue(['approvals', 'slack', 'users', key], 'an email key needs lookupByEmail: true')
    else if (!key.includes('@') && !/^[UW][A-Z0-9]{2,}$/.test(key)) issue(['approvals', 'slack', 'users', key], 'must be a Slack user id (U…/W…) or, with lookupByEmail, an email')
  }
  return { botToken: raw.botToken, signingSecret: raw.signingSecret, channel: raw.channel, users: raw.users ?? {}, lookupByEmail, apiUrl: (raw.apiUrl ?? 'https://slack.com/api').replace(/\/+$/, '') }
}

function seenTargetsAll(raw: RawConfig): Set<string> {
  return new Set((raw.targets ?? []).map(t => t.name))
}
