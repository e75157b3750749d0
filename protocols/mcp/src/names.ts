// Tool names: `<target>_<tool>`, in the characters every MCP client accepts ([A-Za-z0-9_-], ≤ 64).
export function toolName(target: string, tool: string): string {
  return `${target.replace(/[^A-Za-z0-9_-]/g, '_')}_${tool}`.slice(0, 64)
}
