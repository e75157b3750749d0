import type { ProtocolCodec } from '@portcullis/core'
import { serveHttp } from './serve.ts'
import { sniffHttp } from './sniff.ts'

/** HTTP/1.1 reverse proxy for LLM and vector-DB APIs (profiles: openai, qdrant, pinecone, generic) */
export const httpCodec: ProtocolCodec = {
  protocol: 'http',
  sniff: sniffHttp,
  serve: serveHttp,
}

export { explainHttp, classifyHttp, routeRules, type HttpRequestShape } from './classify.ts'
export { PROFILES, ROUTES, EXPORT_LIMIT, type ProfileName, type Route } from './profiles.ts'
export { SseMasker } from './sse.ts'
export { maskJson, maskJsonText } from './json-mask.ts'
export { sniffHttp } from './sniff.ts'
export { adoptConnection } from './serve.ts'
