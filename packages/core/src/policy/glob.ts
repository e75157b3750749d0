// Resource globs: `*` any run of characters except '.', `**` anything, `?` one character.
// A glob without '.' also matches the last dotted segment, so `customers` matches `public.customers`.
// A backslash makes the next character literal (`\*` is a star): claim templates expand their
// values glob-quoted (identity/templates.ts), so a tenant called `*` matches only `*`.
const cache = new Map<string, RegExp>()

function toRegExp(glob: string, star: string): RegExp {
  const key = star + glob
  let re = cache.get(key)
  if (re) return re
  let src = ''
  for (let i = 0; i < glob.length; i++) {
    const c = glob[i]
    if (c === '\\' && i + 1 < glob.length) {
      src += glob[++i]!.replace(/[\\^$.*?|+(){}[\]]/g, '\\$&')
    } else if (c === '*') {
      if (glob[i + 1] === '*') {
        src += '.*'
        i++
      } else src += star
    } else if (c === '?') src += '.'
    else src += c.replace(/[\\^$.|+(){}[\]]/g, '\\$&')
  }
  re = new RegExp('^' + src + '$', 's')
  if (cache.size > 10_000) cache.clear()
  cache.set(key, re)
  return re
}

export function matchResource(glob: string, resource: string): boolean {
  if (toRegExp(glob, '[^.]*').test(resource)) return true
  if (!glob.includes('.')) {
    const dot = resource.lastIndexOf('.')
    if (dot >= 0) return toRegExp(glob, '[^.]*').test(resource.slice(dot + 1))
  }
  return false
}

/** Names (subjects, targets, models): `*` matches anything. */
export function matchName(glob: string, name: string): boolean {
  if (glob === name) return true
  if (!glob.includes('*') && !glob.includes('?') && !glob.includes('\\')) return false
  return toRegExp(glob, '.*').test(name)
}
