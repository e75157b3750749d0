// @portcullis/mcp: Portcullis as an MCP server (Streamable HTTP), whose tools reach the gateway's
// other targets through their own codecs.
import type { ProtocolCodec } from '@portcullis/core'
import { serveMcp } from './serve.ts'

export { closeMcpSessions } from './serve.ts'
export { toolName } from './names.ts'

export const mcpCodec: ProtocolCodec = {
  protocol: 'mcp',
  // MCP speaks HTTP: a sniffing listener gives HTTP to the HTTP codec, so this codec never claims bytes
  sniff: () => false,
  serve: serveMcp,
}
