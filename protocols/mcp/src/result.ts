// What a tool call answers: structured content (for programs) plus a text rendering (for models),
// and errors as MCP tool errors that carry the target's own code (SQLSTATE, Redis error word, HTTP
// status). Error text comes from the gateway's codecs, which never put upstream addresses or
// credentials in it; connection-level failures are reduced to a fixed sentence for the same reason.
import type { CallToolResult } from '@modelcontextprotocol/sdk/types.js'

/** the text rendering is cut here; structured content has its own row / byte bounds */
const TEXT_MAX = 64 * 1024

export function ok(structured: Record<string, unknown>, text: string): CallToolResult {
  return { structuredContent: structured, content: [{ type: 'text', text: cut(text) }] }
}

export function toolError(message: string, detail: Record<string, unknown> = {}): CallToolResult {
  const lines = [message, ...Object.entries(detail).map(([k, v]) => `${k}: ${typeof v === 'string' ? v : JSON.stringify(v)}`)]
  return { isError: true, structuredContent: { error: message, ...detail }, content: [{ type: 'text', text: cut(lines.join('\n')) }] }
}

/** defer mode: the call was not run; the id is what check_approval and a re-call need */
export function pendingError(target: string, approvalId: string, message: string, code: string): CallToolResult {
  return toolError(`approval pending: request ${approvalId} on ${target}; the call was not run. Call check_approval with this id; once approved, make the identical call again (it runs once).`, {
    code,
    approvalId,
    target,
    upstreamMessage: message,
  })
}

/** a connection failure, said without the error's own text (it may name addresses) */
export function unreachable(target: string): CallToolResult {
  return toolError(`target ${target} could not be reached through the gateway`, { code: 'UNAVAILABLE', target })
}

function cut(s: string): string {
  return s.length > TEXT_MAX ? s.slice(0, TEXT_MAX) + `\n… (${s.length - TEXT_MAX} more characters)` : s
}

/** rows as a small text table: one header line, one line per row, values JSON-quoted where needed */
export function renderRows(columns: string[], rows: Record<string, unknown>[]): string {
  const cell = (v: unknown) => (v === null || v === undefined ? 'NULL' : typeof v === 'string' ? v.replace(/[\r\n\t]/g, ' ') : JSON.stringify(v))
  return [columns.join('\t'), ...rows.map((r) => columns.map((c) => cell(r[c])).join('\t'))].join('\n')
}
