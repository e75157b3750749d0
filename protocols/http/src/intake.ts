// Request intake: the route found, the body read whole when it is inspected (JSON, bounded by
// maxMessageBytes; 100 Continue only once it is wanted), the request classified and recorded. A body
// the route streams is not read here: forwarding sends it on as it comes.
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { AuditEvent, Session, TargetConfig } from '@portcullis/core'
import { hasBody, readBody } from './body.ts'
import { classifyHttp, findRoute, routeRules, type FoundRoute } from './classify.ts'
import { httpError } from './errors.ts'
import { recordable } from './headers.ts'
import { tokenHeader } from './identity.ts'
import { isJsonType } from './inspect.ts'
import type { Route } from './profiles.ts'
import type { Stats } from './relay.ts'

export interface Intake {
  found: FoundRoute
  withBody: boolean
  /** the body as the client sent it, when it was read */
  raw: Buffer | undefined
  parsed: unknown
  op: ReturnType<typeof classifyHttp>
}

const targetRoutes = new WeakMap<TargetConfig, Route[]>()

/** the target's route rules, compiled once per config generation */
function routesOf(target: TargetConfig): Route[] {
  let r = targetRoutes.get(target)
  if (!r) targetRoutes.set(target, (r = routeRules(target.options.routes)))
  return r
}

export async function intake(
  req: IncomingMessage,
  res: ServerResponse,
  session: Session,
  expectsContinue: boolean,
  event: Partial<AuditEvent>,
  stats: Stats,
): Promise<Intake> {
  const target = session.target
  const method = (req.method ?? 'GET').toUpperCase()
  const path = req.url ?? '/'
  const profile = target.options.profile as string | undefined
  const routes = routesOf(target)
  const found = findRoute({ method, path, profile, routes })
  const route = found.route
  const ct = req.headers['content-type']
  const withBody = hasBody(req)
  const inspectBody = withBody && route?.body !== 'stream' && (route?.body === 'json' || isJsonType(ct))
  let raw: Buffer | undefined
  let parsed: unknown
  if (inspectBody) {
    if (expectsContinue) res.writeContinue()
    raw = await readBody(req, target.limits.maxMessageBytes)
    stats.requestBytes = raw.length
    if (raw.length > 0) {
      try {
        parsed = JSON.parse(raw.toString('utf8'))
      } catch {
        throw httpError(400, 'bad_request', 'request body is not valid JSON')
      }
    }
  }
  const op = classifyHttp({ method, path, body: parsed, rawBody: raw, profile, routes, found })
  if (op.error) throw httpError(400, 'bad_request', op.error)
  event.class = op.class
  event.resources = op.resources
  event.fingerprint = op.fingerprint
  event.statement = op.statement
  session.record('request', { method, path, headers: recordable(req.headers, tokenHeader(target)), ...(raw ? { body: raw } : withBody ? { streamed: true } : {}) })
  return { found, withBody, raw, parsed, op }
}
