// JSON schema of the YAML config, as written by people (durations as `30s`, secrets as references).
// Every object closes itself (additionalProperties: false) so a misspelt key is an error, not a no-op.
import { CLASSES } from '../types.ts'
import { scopeSchema } from '../identity/scope.ts'

const duration = { $ref: '#/definitions/duration' }
const secretRef = { $ref: '#/definitions/secretRef' }
const strings = { type: 'array', items: { type: 'string' } }
const hostPort = { type: 'string', pattern: '^[^\\s]+:\\d{1,5}$' }

function object(properties: Record<string, unknown>, required: string[] = []) {
  return { type: 'object', properties, required, additionalProperties: false }
}

// `x-message` replaces ajv's per-branch noise for an anyOf with one sentence a person can act on.
const factCondition = {
  'x-message': 'must be a value (text, number, true/false) or a comparison { gt, gte, lt, lte, eq } with numbers',
  anyOf: [
    { type: ['string', 'number', 'boolean'] },
    object({
      gt: { type: 'number' },
      gte: { type: 'number' },
      lt: { type: 'number' },
      lte: { type: 'number' },
      eq: { type: ['string', 'number', 'boolean'] },
    }),
  ],
}

const target = object(
  {
    name: { type: 'string', minLength: 1 },
    protocol: { enum: ['postgres', 'redis', 'http', 'mcp'] },
    /** mcp: the targets whose tools it serves */
    targets: strings,
    listen: hostPort,
    upstream: object({
      host: { type: 'string' },
      port: { type: 'integer', minimum: 1, maximum: 65535 },
      url: { type: 'string' },
      database: { type: 'string' },
      user: { type: 'string' },
      password: secretRef,
      tls: object({
        enabled: { type: 'boolean' },
        rejectUnauthorized: { type: 'boolean' },
        ca: { type: 'string' },
        servername: { type: 'string' },
      }),
      auth: object({ header: { type: 'string' }, value: { type: 'string' }, secret: secretRef }, ['header', 'secret']),
    }),
    tls: object({ cert: { type: 'string' }, key: { type: 'string' } }, ['cert', 'key']),
    limits: object({
      maxConnections: { type: 'integer', minimum: 1 },
      maxMessageBytes: { type: 'integer', minimum: 1 },
      maxStatementBytes: { type: 'integer', minimum: 1 },
      idleTimeout: duration,
      handshakeTimeout: duration,
    }),
    options: { type: 'object' },
    scope: scopeSchema,
  },
  ['name', 'protocol', 'listen'],
)

const rule = object(
  {
    id: { type: 'string', minLength: 1 },
    when: object({
      groups: strings,
      subjects: strings,
      targets: strings,
      class: { type: 'array', items: { enum: [...CLASSES] } },
      resources: strings,
      statement: { type: 'string' },
      operations: strings,
      facts: { type: 'object', additionalProperties: factCondition },
    }),
    action: { enum: ['allow', 'block', 'approve'] },
    approvers: strings,
    window: duration,
    timeout: duration,
    minApprovals: { type: 'integer', minimum: 1, maximum: 100 },
    reason: { type: 'string' },
  },
  ['id', 'action'],
)

const maskingRule = object(
  {
    id: { type: 'string', minLength: 1 },
    when: object({ targets: strings, groups: strings, subjects: strings }),
    columns: strings,
    fields: strings,
    keys: strings,
    detectors: strings,
    patterns: { type: 'array', items: object({ name: { type: 'string' }, regex: { type: 'string' } }, ['name', 'regex']) },
    method: { enum: ['redact', 'partial', 'hash', 'null'] },
  },
  ['id', 'method'],
)

const issuer = object(
  {
    issuer: { type: 'string', minLength: 1 },
    audience: { type: 'string', minLength: 1 },
    jwks: { type: 'string', pattern: '^https?://' },
    jwksTimeout: duration,
    jwksFile: { type: 'string' },
    algorithms: { type: 'array', items: { type: 'string' }, minItems: 1 },
    groupsClaim: { type: 'string' },
    clockSkew: duration,
    requireExp: { type: 'boolean' },
    secret: secretRef,
  },
  ['issuer', 'audience'],
)

const secretSource = {
  'x-message': 'must be one of { env: VAR }, { file: PATH } or { exec: [cmd, args…], ttl: 5m }',
  anyOf: [
    object({ env: { type: 'string', minLength: 1 } }, ['env']),
    object({ file: { type: 'string', minLength: 1 } }, ['file']),
    object({ exec: { type: 'array', items: { type: 'string' }, minItems: 1 }, ttl: duration }, ['exec']),
  ],
}

// recording.upload: sealed recordings go to S3-compatible object storage (recording/upload/)
const byteSize = {
  'x-message': 'must be a size such as 512MiB, 1GiB or a number of bytes',
  anyOf: [{ type: 'integer', minimum: 1 }, { type: 'string', pattern: '^\\d+(\\.\\d+)?(B|KiB|MiB|GiB|TiB)$' }],
}
const recordingUpload = object(
  {
    s3: object(
      {
        endpoint: { type: 'string', pattern: '^https?://' },
        bucket: { type: 'string', minLength: 3, maxLength: 63 },
        prefix: { type: 'string' },
        region: { type: 'string', minLength: 1 },
        accessKeyId: secretRef,
        secretAccessKey: secretRef,
        forcePathStyle: { type: 'boolean' },
      },
      ['bucket'],
    ),
    maxSpool: byteSize,
    maxRetryDelay: duration,
  },
  ['s3'],
)

export const configSchema = {
  definitions: {
    duration: {
      'x-message': 'must be a duration such as 30s, 5m, 1h or a number of milliseconds',
      anyOf: [{ type: 'integer', minimum: 0 }, { type: 'string', pattern: '^\\d+(\\.\\d+)?(ms|s|m|h|d)$' }],
    },
    secretRef: { ...object({ secret: { type: 'string', minLength: 1 } }, ['secret']), 'x-secret-ref': true },
    secretSource,
  },
  ...object(
    {
      admin: object(
        {
          listen: hostPort,
          groups: strings,
          auditors: strings,
          metricsAuth: { type: 'boolean' },
          console: object(
            {
              issuer: { type: 'string', minLength: 1 },
              clientId: { type: 'string', minLength: 1 },
              clientSecret: secretRef,
              url: { type: 'string', pattern: '^https?://' },
              groupsClaim: { type: 'string', minLength: 1 },
              sessionTtl: duration,
            },
            ['issuer', 'clientId'],
          ),
        },
        ['listen'],
      ),
      identity: object({
        issuers: { type: 'array', items: issuer },
        revocations: {
          type: 'array',
          items: object({ subject: { type: 'string' }, jti: { type: 'string' } }),
        },
      }),
      secrets: { type: 'object', additionalProperties: { $ref: '#/definitions/secretSource' } },
      recording: object({
        dir: { type: 'string' },
        onFailure: { enum: ['block', 'allow'] },
        sign: object({ hmacKey: secretRef, ed25519Key: secretRef }),
        upload: recordingUpload,
      }),
      audit: object({ destination: { type: 'string' }, reads: { enum: ['each', 'summary'] } }),
      approvals: object({
        timeout: duration,
        // a Slack webhook URL is itself a credential: it may be a secret reference
        webhook: object({ url: { 'x-message': 'must be an http(s) URL or a secret reference { secret: NAME }', anyOf: [{ type: 'string', pattern: '^https?://' }, secretRef] }, format: { enum: ['json', 'slack'] } }, ['url']),
        estimate: object({ timeout: duration }),
        slack: object(
          {
            botToken: secretRef,
            signingSecret: secretRef,
            channel: { type: 'string', minLength: 1 },
            users: { type: 'object', additionalProperties: object({ subject: { type: 'string', minLength: 1 }, groups: strings }, ['groups']) },
            lookupByEmail: { type: 'boolean' },
            apiUrl: { type: 'string', pattern: '^https?://' },
          },
          ['botToken', 'signingSecret', 'channel', 'users'],
        ),
      }),
      controlStore: object({
        postgres: object(
          {
            host: { type: 'string', minLength: 1 },
            port: { type: 'integer', minimum: 1, maximum: 65535 },
            database: { type: 'string', minLength: 1 },
            user: { type: 'string', minLength: 1 },
            password: secretRef,
            tls: object({
              enabled: { type: 'boolean' },
              rejectUnauthorized: { type: 'boolean' },
              ca: { type: 'string' },
              servername: { type: 'string' },
            }),
            schema: { type: 'string', pattern: '^[a-z_][a-z0-9_]{0,62}$' },
          },
          ['host', 'database', 'user'],
        ),
        redis: object(
          {
            host: { type: 'string', minLength: 1 },
            port: { type: 'integer', minimum: 1, maximum: 65535 },
            user: { type: 'string', minLength: 1 },
            password: secretRef,
            db: { type: 'integer', minimum: 0 },
            tls: object({
              enabled: { type: 'boolean' },
              rejectUnauthorized: { type: 'boolean' },
              ca: { type: 'string' },
              servername: { type: 'string' },
            }),
            prefix: { type: 'string', minLength: 1 },
          },
          ['host'],
        ),
        lease: duration,
        heartbeat: duration,
        poll: duration,
      }),
      targets: { type: 'array', items: target },
      rules: { type: 'array', items: rule },
      masking: { type: 'array', items: maskingRule },
      maskingKey: secretRef,
      // node:cluster workers on this host: 'auto' = os.availableParallelism(); 1 = no cluster
      workers: { 'x-message': "must be 'auto' or a whole number from 1 to 256", anyOf: [{ const: 'auto' }, { type: 'integer', minimum: 1, maximum: 256 }] },
    },
    [],
  ),
}
