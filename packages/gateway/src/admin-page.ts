// A one-page approvals console served at GET /. The token is kept in sessionStorage of the
// browser tab only and sent as a bearer header; the page itself holds no data until it has one.
export const ADMIN_PAGE = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Portcullis approvals</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px system-ui,sans-serif;margin:2rem;max-width:70rem}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.4rem;text-align:left;vertical-align:top}
code{font-size:12px;white-space:pre-wrap}button{margin-right:.3rem}#msg{color:#a00}
</style></head><body>
<h1>Pending approvals</h1>
<p><label>Bearer token <input id="token" type="password" size="50" autocomplete="off"></label>
<button id="save">Use token</button> <span id="msg"></span></p>
<table><thead><tr><th>Id</th><th>Who</th><th>Target</th><th>Class</th><th>Statement</th><th>Expires</th><th></th></tr></thead>
<tbody id="rows"><tr><td colspan="7">Enter a token to list requests.</td></tr></tbody></table>
<script>
const $ = (id) => document.getElementById(id)
const token = () => sessionStorage.getItem('portcullis-token') || ''
const esc = (s) => String(s).replace(/[&<>"']/g, (c) => '&#' + c.charCodeAt(0) + ';')
async function call(method, path, body) {
  const res = await fetch(path, { method, headers: { authorization: 'Bearer ' + token(), 'content-type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined })
  const data = await res.json()
  if (!res.ok) throw new Error(data.error ? data.error.code + ': ' + data.error.message : res.statusText)
  return data
}
async function refresh() {
  if (!token()) return
  try {
    const { approvals } = await call('GET', '/api/approvals')
    $('msg').textContent = ''
    $('rows').innerHTML = approvals.length === 0 ? '<tr><td colspan="7">Nothing pending.</td></tr>' :
      approvals.map((a) => '<tr><td>' + esc(a.id) + '</td><td>' + esc(a.subject) + '</td><td>' + esc(a.target) +
        '</td><td>' + esc(a.class) + '</td><td><code>' + esc(a.statement) + '</code></td><td>' + esc(a.expires) +
        '</td><td><button data-act="approve" data-id="' + esc(a.id) + '">Approve</button>' +
        '<button data-act="deny" data-id="' + esc(a.id) + '">Deny</button></td></tr>').join('')
  } catch (e) { $('msg').textContent = e.message }
}
$('rows').addEventListener('click', async (ev) => {
  const b = ev.target.closest('button'); if (!b) return
  const reason = b.dataset.act === 'deny' ? prompt('Reason for denying?') || undefined : undefined
  try { await call('POST', '/api/approvals/' + encodeURIComponent(b.dataset.id) + '/' + b.dataset.act, reason ? { reason } : {}) }
  catch (e) { $('msg').textContent = e.message }
  refresh()
})
$('save').onclick = () => { sessionStorage.setItem('portcullis-token', $('token').value.trim()); $('token').value = ''; refresh() }
refresh(); setInterval(refresh, 3000)
</script></body></html>
`
