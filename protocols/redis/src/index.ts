// The Redis codec: RESP2/RESP3 and inline commands in front of one Redis target.
import type { ProtocolCodec } from '@portcullis/core'
import { serveRedis } from './serve.ts'
import { sniffRedis } from './sniff.ts'

export const redisCodec: ProtocolCodec = {
  protocol: 'redis',
  sniff: sniffRedis,
  serve: serveRedis,
}

export { serveRedis } from './serve.ts'
export { sniffRedis } from './sniff.ts'
export { explainRedis } from './explain.ts'
export { explainScope } from './scope.ts'
export { classifyCommand, classifyToOperation, toOperation, type ClassifyOptions } from './classify.ts'
export { RequestFramer, type RedisRequest, type RequestLimits } from './request-framer.ts'
export { ReplyFramer, type RedisReply } from './reply-framer.ts'
export { splitCommandLine } from './split-args.ts'
export { BUILTIN_COMMANDS, keyPositions, resolveCommand, type CommandMeta } from './commands.ts'
