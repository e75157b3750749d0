// The console's static assets, bundled: htmx from its npm package (node_modules, never a CDN) and
// the console's own stylesheet, each served under a content hash so it can be cached for good.
import { createHash } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createRequire } from 'node:module'

export interface Asset {
  path: string
  type: string
  body: Buffer
}

const STYLE = `
:root{--fg:#1b1f24;--muted:#57606a;--line:#d0d7de;--bg:#fff;--accent:#0b5cad;--bad:#b42318;--good:#1a7f37;--warn:#9a6700}
*{box-sizing:border-box}
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:var(--fg);background:var(--bg);margin:0}
header{display:flex;flex-wrap:wrap;gap:.5rem 1.5rem;align-items:center;padding:.6rem 1rem;border-bottom:1px solid var(--line);background:#f6f8fa}
header .brand{font-weight:600}
nav ul{display:flex;flex-wrap:wrap;gap:.25rem .9rem;list-style:none;margin:0;padding:0}
nav a{color:var(--accent);text-decoration:none;padding:.2rem .1rem}
nav a[aria-current=page]{font-weight:600;border-bottom:2px solid var(--accent)}
header .who{margin-left:auto;display:flex;gap:.6rem;align-items:center;color:var(--muted)}
main{padding:1rem;max-width:80rem}
h1{font-size:1.35rem;margin:.2rem 0 1rem}
h2{font-size:1.1rem;margin:1.5rem 0 .6rem}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid var(--line);padding:.45rem .4rem;text-align:left;vertical-align:top}
th{font-size:.85rem;color:var(--muted);font-weight:600}
code,pre{font:13px/1.4 ui-monospace,SFMono-Regular,Menlo,monospace;white-space:pre-wrap;word-break:break-word}
pre{background:#f6f8fa;border:1px solid var(--line);padding:.5rem;margin:.3rem 0;max-height:20rem;overflow:auto}
a:focus-visible,button:focus-visible,input:focus-visible,select:focus-visible,textarea:focus-visible{outline:3px solid #f2b300;outline-offset:1px}
button{font:inherit;padding:.35rem .8rem;border:1px solid var(--line);border-radius:6px;background:#f6f8fa;cursor:pointer}
button.primary{background:var(--good);border-color:var(--good);color:#fff}
button.danger{background:var(--bad);border-color:var(--bad);color:#fff}
input,select,textarea{font:inherit;padding:.3rem .45rem;border:1px solid var(--line);border-radius:6px;max-width:100%}
label{display:inline-flex;flex-direction:column;gap:.15rem;font-size:.85rem;color:var(--muted)}
form.filters{display:flex;flex-wrap:wrap;gap:.6rem;align-items:flex-end;margin-bottom:1rem}
.card{border:1px solid var(--line);border-radius:8px;padding:.8rem;margin:.0 0 .8rem}
.card dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem .8rem;margin:.4rem 0}
.card dt{color:var(--muted)}
.card dd{margin:0;word-break:break-word}
.actions{display:flex;flex-wrap:wrap;gap:.5rem;align-items:flex-end;margin-top:.5rem}
.badge{display:inline-block;padding:0 .45rem;border-radius:999px;font-size:.8rem;border:1px solid currentColor}
.ok{color:var(--good)}.bad{color:var(--bad)}.warn{color:var(--warn)}.muted{color:var(--muted)}
.flash{padding:.5rem .8rem;border-radius:6px;margin-bottom:1rem;border:1px solid var(--line)}
.flash.bad{border-color:var(--bad)}
tr.broken td{background:#fff1f0}
.integrity{font-weight:600}
.sr-only{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
@media (max-width:700px){
  table.stack thead{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0)}
  table.stack tr{display:block;border-bottom:1px solid var(--line);padding:.4rem 0}
  table.stack td{display:block;border:0;padding:.15rem .2rem}
  table.stack td[data-label]::before{content:attr(data-label) ": ";color:var(--muted);font-size:.85rem}
  header .who{margin-left:0}
  main{padding:.7rem}
}
`

function hashed(name: string, ext: string, type: string, body: Buffer): Asset {
  const h = createHash('sha256').update(body).digest('hex').slice(0, 16)
  return { path: `/console/assets/${name}-${h}.${ext}`, type, body }
}

const require = createRequire(import.meta.url)

export const HTMX = hashed('htmx', 'js', 'text/javascript; charset=utf-8', readFileSync(require.resolve('htmx.org/dist/htmx.min.js')))
export const CSS = hashed('console', 'css', 'text/css; charset=utf-8', Buffer.from(STYLE))
export const ASSETS = new Map([HTMX, CSS].map((a) => [a.path, a]))
