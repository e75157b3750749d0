// The options of an MCP target (protocols/mcp reads them with `num(…)`, which falls back to the
// default on anything that is not a positive number): without this check a typo (`maxrows`) or a
// string (`maxRows: "100"`) was silently the default, and `stateless: "true"` a stateful target on
// several workers. Unknown keys are errors, as everywhere else in the config.

const positive = (v: unknown) => (typeof v === 'number' && Number.isInteger(v) && v > 0 ? undefined : 'must be a whole number above 0')
const texts = (v: unknown) => (Array.isArray(v) && v.every(s => typeof s === 'string' && s !== '') ? undefined : 'must be a list of text')
const bool = (v: unknown) => (typeof v === 'boolean' ? undefined : 'must be true or false')

const MCP_OPTIONS: Record<string, (v: unknown) => string | undefined> = {
  path: v => (typeof v === 'string' && v.startsWith('/') && !/[\s?#]/.test(v) ? undefined : 'must be a path starting with / (no query)'),
  resource: v => (typeof v === 'string' && /^https?:\/\//.test(v) && URL.canParse(v) ? undefined : 'must be an http(s) URL'),
  authorizationServers: v => texts(v) ?? ((v as string[]).every(s => URL.canParse(s)) ? undefined : 'must be a list of URLs'),
  scopes: texts,
  stateless: bool,
  sniff: bool,
  poolSize: positive,
  poolIdleMs: positive,
  maxRows: positive,
  maxReplyBytes: positive,
  maxRequestBytes: positive,
  maxSessions: positive,
  sessionIdleMs: positive,
}

/** [key, message] for each option of an MCP target that its server would misread */
export function mcpOptionIssues(options: Record<string, unknown>): Array<[string, string]> {
  const out: Array<[string, string]> = []
  for (const [key, value] of Object.entries(options)) {
    const check = MCP_OPTIONS[key]
    if (!check) out.push([key, `unknown key (mcp options: ${Object.keys(MCP_OPTIONS).join(', ')})`])
    else {
      const message = check(value)
      if (message) out.push([key, message])
    }
  }
  return out
}
