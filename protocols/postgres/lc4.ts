import { loadModule, parseSync } from '@libpg-query/parser'
await loadModule()
for (const s of ["select 'a' -- c\n 'b'", "select 'a' --c\n'b'", "select 'a'\n-- c\n'b'", "select 'a'\n 'b'", "select 'a' \n--c\n 'b'", "select b'01'\n'10'", "select x'01'\n'1'", "select U&'a'\n'b'", "select e'a'\n'\\n'", "select 'a'\r'b'", "select 'a'\f\n'b'", "select N'x'", "select 1\v", "select E'\\v'"]) {
  try { const r = parseSync(s) as any; console.log(JSON.stringify(s), JSON.stringify(r.stmts[0].stmt.SelectStmt.targetList.map((t: any) => t.ResTarget.val))) } catch (e) { console.log(JSON.stringify(s), 'ERR', (e as Error).message) }
}
