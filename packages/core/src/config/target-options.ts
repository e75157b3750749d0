// The options of a target, checked per protocol. The codecs read them leniently (`typeof v ===
// 'number' ? v : default`), so without this check a typo (`bulkDeletekeys`, `maxrows`), a string
// (`explainTimeout: "500"`, `stateless: "true"`) or a misspelt value (`approvalMode: deffer`,
// `multiplex: "no"`) was silently the default — for `approvalMode` that is `wait`, for a route rule
// without a `path` it was no rule at all. Unknown keys are errors, as everywhere else in the config.
import { CLASSES } from '../types.ts'

type Check = (v: unknown) => string | undefined

const positive: Check = v => (typeof v === 'number' && Number.isInteger(v) && v > 0 ? undefined : 'must be a whole number above 0')
const texts: Check = v => (Array.isArray(v) && v.every(s => typeof s === 'string' && s !== '') ? undefined : 'must be a list of text')
const bool: Check = v => (typeof v === 'boolean' ? undefined : 'must be true or false')
const oneOf = (...values: string[]): Check => v => (typeof v === 'string' && values.includes(v) ? undefined : `must be one of ${values.join(', ')}`)
/** a number of ms, or a duration text (`'30s'`, `'2m'`, `'500ms'`) as protocols/http's durationMs reads it */
const duration: Check = v => {
  if (typeof v === 'number') return Number.isFinite(v) && v > 0 ? undefined : 'must be a number of ms above 0 or a duration such as 30s'
  if (typeof v === 'string' && /^\s*\d+(?:\.\d+)?\s*(ms|s|m)?\s*$/.test(v) && Number.parseFloat(v) > 0) return undefined
  return 'must be a number of ms above 0 or a duration such as 30s'
}
const mediaTypes: Check = v => texts(v) ?? ((v as string[]).every(s => /^[\w.+-]+\/(\*|[\w.+-]+)$/.test(s)) ? undefined : 'must be a list of media types such as audio/* or image/png')
const className: Check = v => (typeof v === 'string' && (CLASSES as readonly string[]).includes(v) ? undefined : `must be one of ${CLASSES.join(', ')}`)

/** each element of a list of objects, field by field; `required` fields must be present */
const listOf = (fields: Record<string, Check>, required: string[]): Check => v => {
  if (!Array.isArray(v)) return 'must be a list'
  for (let i = 0; i < v.length; i++) {
    const item = v[i] as Record<string, unknown>
    if (!item || typeof item !== 'object' || Array.isArray(item)) return `item ${i} must be a map`
    for (const key of required) if (item[key] === undefined) return `item ${i} needs ${key}`
    for (const [key, value] of Object.entries(item)) {
      const check = fields[key]
      if (!check) return `item ${i}: unknown key ${key} (keys: ${Object.keys(fields).join(', ')})`
      const message = check(value)
      if (message) return `item ${i}: ${key} ${message}`
    }
  }
  return undefined
}

const methods: Check = v => {
  const ok = (m: unknown) => typeof m === 'string' && /^[A-Za-z]+$/.test(m)
  return ok(v) || (Array.isArray(v) && v.length > 0 && v.every(ok)) ? undefined : 'must be an HTTP method or a list of them'
}
const routePath: Check = v => (typeof v === 'string' && v.startsWith('/') ? undefined : 'must be a path starting with /')
const text: Check = v => (typeof v === 'string' && v !== '' ? undefined : 'must be text')

/** options every codec's listener reads */
const COMMON: Record<string, Check> = {
  sniff: bool,
  approvalMode: oneOf('wait', 'defer'),
}

const OPTIONS: Record<string, Record<string, Check>> = {
  postgres: {
    ...COMMON,
    requireTls: bool,
    explainTimeout: positive,
  },
  redis: {
    ...COMMON,
    bulkDeleteKeys: positive,
    scripts: oneOf('admin', 'write'),
    pingBeforeAuth: bool,
    commandInfo: oneOf('builtin', 'upstream'),
    multiplex: bool,
  },
  http: {
    ...COMMON,
    profile: oneOf('openai', 'qdrant', 'pinecone', 'mcp', 'generic'),
    mcp: v => {
      if (!v || typeof v !== 'object' || Array.isArray(v)) return 'must be a map (tools: [{ name, class }])'
      const extra = Object.keys(v).filter(k => k !== 'tools')
      if (extra.length) return `unknown key ${extra[0]} (keys: tools)`
      const tools = (v as { tools?: unknown }).tools
      return tools === undefined ? undefined : listOf({ name: text, class: className }, ['name', 'class'])(tools)
    },
    routes: listOf({ method: methods, path: routePath, operation: text, class: className, body: oneOf('json', 'stream') }, ['path', 'class']),
    tokenHeader: v => (typeof v === 'string' && /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/.test(v) ? undefined : 'must be an HTTP header name'),
    upstreamTimeout: duration,
    upstreamBodyTimeout: duration,
    maskRequests: bool,
    maxUploadBytes: positive,
    maxHeaderBytes: positive,
    upstreamConnections: positive,
    recordBodyBytes: v => (typeof v === 'number' && Number.isInteger(v) && v >= 0 ? undefined : 'must be a whole number of bytes (0: none)'),
    unmaskedResponseTypes: mediaTypes,
  },
  mcp: {
    sniff: bool,
    path: v => (typeof v === 'string' && v.startsWith('/') && !/[\s?#]/.test(v) ? undefined : 'must be a path starting with / (no query)'),
    resource: v => (typeof v === 'string' && /^https?:\/\//.test(v) && URL.canParse(v) ? undefined : 'must be an http(s) URL'),
    authorizationServers: v => texts(v) ?? ((v as string[]).every(s => URL.canParse(s)) ? undefined : 'must be a list of URLs'),
    scopes: texts,
    stateless: bool,
    poolSize: positive,
    poolIdleMs: positive,
    maxRows: positive,
    maxReplyBytes: positive,
    maxRequestBytes: positive,
    maxSessions: positive,
    sessionIdleMs: positive,
  },
}

/** [key, message] for each option of a target that its codec would misread */
export function targetOptionIssues(protocol: string, options: Record<string, unknown>): Array<[string, string]> {
  const known = OPTIONS[protocol]
  if (!known) return []
  const out: Array<[string, string]> = []
  for (const [key, value] of Object.entries(options)) {
    const check = known[key]
    if (!check) out.push([key, `unknown key (${protocol} options: ${Object.keys(known).join(', ')})`])
    else {
      const message = check(value)
      if (message) out.push([key, message])
    }
  }
  return out
}
