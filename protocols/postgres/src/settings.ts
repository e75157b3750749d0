// One home for the server settings that change how the server reads SQL or who it runs as. The SQL
// classifier (SET, RESET, set_config), the StartupMessage (its parameters and `options`) and the
// backend's ParameterStatus reports all ask settingConcern, so a setting refused on one path is
// refused on every path.
//
// The gateway parses SQL as Postgres does with standard_conforming_strings on and a client
// encoding in which every ASCII byte is that ASCII character. A server that reads the text any
// other way could run as code what the gateway took for a literal, so such a setting is `admin`
// in SQL, refused at startup, and ends the session when the server reports it.

/** Settings under which the server would read SQL text unlike the gateway's parser. */
const PARSER_SETTINGS = new Set(['standard_conforming_strings', 'client_encoding'])

/**
 * Settings that change who the session runs as on the server: masking and policy are decided for
 * the target's upstream role. SET ROLE and SET SESSION AUTHORIZATION are these too (the grammar
 * names them `role` and `session_authorization`). RESET ROLE and SET ROLE NONE stay admin as
 * well: SET ROLE NONE returns to the login role, which may hold more than a role default
 * (`ALTER ROLE … SET role = restricted`) chosen to drop privileges; a rule can allow them.
 */
const IDENTITY_SETTINGS = new Set(['role', 'session_authorization'])

/** Settings that switch off what the server enforces (triggers, FKs, catalog protection) or load code. */
const ENFORCEMENT_SETTINGS = new Set([
  'session_replication_role', 'session_preload_libraries', 'local_preload_libraries', 'allow_system_table_mods',
  'ignore_system_indexes',
])

// search_path is a plain session setting. It does not change how SQL is read, and masking by column
// follows the table OIDs of RowDescription, not names. What it does change is what an unqualified
// name resolves to, so rules written against schema-qualified resources (`private.*`) do not match
// `secret` read through `SET search_path = private` — the README says so.
//
// escape_string_warning only warns; backslash_quote only decides whether the server accepts `\'` in
// E'…' strings, which the gateway parses the same way whatever it says once the client encoding is
// one of the safe ones below (a server that refuses the text runs nothing).

/**
 * Postgres's encoding names (src/common/encnames.c, pg_encname_tbl), cleaned as Postgres cleans
 * them → the encoding's official name (pg_enc2name_tbl). Encodings up to KOI8U are the server
 * encodings (PG_VALID_BE_ENCODING, PG_ENCODING_BE_LAST in src/include/mb/pg_wchar.h); the rest —
 * SJIS, BIG5, GBK, UHC, GB18030, JOHAB, SHIFT_JIS_2004 — are client-only.
 */
const ENCODING_NAMES: Record<string, string> = {
  abc: 'WIN1258', alt: 'WIN866', big5: 'BIG5', euccn: 'EUC_CN', eucjis2004: 'EUC_JIS_2004', eucjp: 'EUC_JP',
  euckr: 'EUC_KR', euctw: 'EUC_TW', gb18030: 'GB18030', gbk: 'GBK', iso88591: 'LATIN1', iso885910: 'LATIN6',
  iso885913: 'LATIN7', iso885914: 'LATIN8', iso885915: 'LATIN9', iso885916: 'LATIN10', iso88592: 'LATIN2',
  iso88593: 'LATIN3', iso88594: 'LATIN4', iso88595: 'ISO_8859_5', iso88596: 'ISO_8859_6', iso88597: 'ISO_8859_7',
  iso88598: 'ISO_8859_8', iso88599: 'LATIN5', johab: 'JOHAB', koi8: 'KOI8R', koi8r: 'KOI8R', koi8u: 'KOI8U',
  latin1: 'LATIN1', latin10: 'LATIN10', latin2: 'LATIN2', latin3: 'LATIN3', latin4: 'LATIN4', latin5: 'LATIN5',
  latin6: 'LATIN6', latin7: 'LATIN7', latin8: 'LATIN8', latin9: 'LATIN9', mskanji: 'SJIS',
  muleinternal: 'MULE_INTERNAL', shiftjis: 'SJIS', shiftjis2004: 'SHIFT_JIS_2004', sjis: 'SJIS',
  sqlascii: 'SQL_ASCII', tcvn: 'WIN1258', tcvn5712: 'WIN1258', uhc: 'UHC', unicode: 'UTF8', utf8: 'UTF8',
  vscii: 'WIN1258', win: 'WIN1251', win1250: 'WIN1250', win1251: 'WIN1251', win1252: 'WIN1252',
  win1253: 'WIN1253', win1254: 'WIN1254', win1255: 'WIN1255', win1256: 'WIN1256', win1257: 'WIN1257',
  win1258: 'WIN1258', win866: 'WIN866', win874: 'WIN874', win932: 'SJIS', win936: 'GBK', win949: 'UHC',
  win950: 'BIG5', windows1250: 'WIN1250', windows1251: 'WIN1251', windows1252: 'WIN1252',
  windows1253: 'WIN1253', windows1254: 'WIN1254', windows1255: 'WIN1255', windows1256: 'WIN1256',
  windows1257: 'WIN1257', windows1258: 'WIN1258', windows866: 'WIN866', windows874: 'WIN874',
  windows932: 'SJIS', windows936: 'GBK', windows949: 'UHC', windows950: 'BIG5',
}

/**
 * The allow-list: the server encodings (pg_enc2name_tbl up to PG_ENCODING_BE_LAST). Postgres can
 * store text only in encodings whose multibyte characters never contain an ASCII byte, so in each
 * of these a quote, a backslash or a `$` byte is that character wherever it stands — the gateway,
 * reading the bytes as UTF-8, sees the same tokens the server does (non-ASCII bytes at worst become
 * U+FFFD inside a literal or an identifier). The client-only encodings are exactly the ones whose
 * second byte can be `\` or `'` (0x5C in SJIS, BIG5, GBK…; 0x30-0x39 in GB18030's four-byte form).
 *
 * SQL_ASCII is on the list: the server does no conversion for it and validates the bytes as the
 * server encoding (pg_any_to_server), so the lexer still sees ASCII bytes as themselves. What
 * SQL_ASCII loses is meaning, not structure: non-ASCII text is whatever bytes the client sent.
 */
const SERVER_ENCODINGS = new Set([
  'SQL_ASCII', 'EUC_JP', 'EUC_CN', 'EUC_KR', 'EUC_TW', 'EUC_JIS_2004', 'UTF8', 'MULE_INTERNAL', 'LATIN1', 'LATIN2',
  'LATIN3', 'LATIN4', 'LATIN5', 'LATIN6', 'LATIN7', 'LATIN8', 'LATIN9', 'LATIN10', 'WIN1256', 'WIN1258', 'WIN866',
  'WIN874', 'KOI8R', 'WIN1251', 'WIN1252', 'ISO_8859_5', 'ISO_8859_6', 'ISO_8859_7', 'ISO_8859_8', 'WIN1250',
  'WIN1253', 'WIN1254', 'WIN1255', 'WIN1257', 'KOI8U',
])

/** NAMEDATALEN: pg_char_to_encoding does not look up longer names */
const NAMEDATALEN = 64

/** The official name of an encoding as Postgres resolves it (pg_char_to_encoding), or undefined. */
export function encodingOf(name: string): string | undefined {
  if (name.length === 0 || Buffer.byteLength(name) >= NAMEDATALEN) return undefined
  // clean_encoding_name: ASCII letters and digits only, lower-cased
  const key = name.replace(/[^A-Za-z0-9]/g, '').toLowerCase()
  return Object.hasOwn(ENCODING_NAMES, key) ? ENCODING_NAMES[key] : undefined
}

/** Whether a client_encoding value names an encoding the gateway's parser reads as the server does. */
export function isParserSafeEncoding(name: string): boolean {
  const enc = encodingOf(name)
  return enc !== undefined && SERVER_ENCODINGS.has(enc)
}

/** Postgres's parse_bool: true, false, or undefined for a value it would reject. */
export function parseBool(value: string): boolean | undefined {
  const v = value.toLowerCase()
  const n = v.length
  if (n === 0) return undefined
  // unique prefixes of true / false / yes / no; `on` and `off` need two letters; 1 and 0 alone
  if ('true'.startsWith(v) && v[0] === 't') return true
  if ('false'.startsWith(v) && v[0] === 'f') return false
  if ('yes'.startsWith(v) && v[0] === 'y') return true
  if ('no'.startsWith(v) && v[0] === 'n') return false
  if (n >= 2 && 'on'.startsWith(v)) return true
  if (n >= 2 && 'off'.startsWith(v)) return false
  if (v === '1') return true
  if (v === '0') return false
  return undefined
}

/** A setting's name as Postgres looks it up: case-insensitively. */
export function settingName(name: string): string {
  return name.toLowerCase()
}

/**
 * THE vetting function: why setting `name` to `value` would make the server read SQL unlike the
 * gateway, run as someone else, or stop enforcing, or undefined when the setting is safe.
 *
 * `value` is the text the setting is given; null for RESET / SET … TO DEFAULT / FROM CURRENT (back
 * to a value the startup checks already vetted); undefined when it is not known (an expression):
 * a setting whose safety depends on its value is then refused, fail closed.
 *
 * `scoped`: the settings of the target's scope (scope.ts), lower-cased. The gateway sets them from
 * the caller's token and nobody changes them: not to a value, not back to a default (RESET would
 * return to the gateway's value, and is refused all the same so that no path needs an exception).
 */
export function settingConcern(name: string, value: string | null | undefined, scoped?: ReadonlySet<string>): string | undefined {
  const n = settingName(name)
  if (scoped?.has(n)) return `${n} is this session's scope, set by Portcullis from the caller's token; it cannot be changed`
  if (IDENTITY_SETTINGS.has(n)) return `${n} changes who the session runs as on the server; through Portcullis the session runs as the target's upstream role`
  if (ENFORCEMENT_SETTINGS.has(n)) return `${n} changes what the server enforces`
  if (!PARSER_SETTINGS.has(n) || value === null) return undefined
  if (n === 'standard_conforming_strings') {
    if (value !== undefined && parseBool(value) === true) return undefined
    return `standard_conforming_strings must stay on through Portcullis (with it off the server reads backslashes in '…' strings as escapes, unlike the gateway's parser)`
  }
  // client_encoding
  if (value !== undefined && isParserSafeEncoding(value)) return undefined
  return `client_encoding ${value ?? '(an expression)'} is not accepted through Portcullis (only server encodings: in a client-only encoding a multibyte character can hide a quote or a backslash from the gateway's parser)`
}

// ---- the StartupMessage --------------------------------------------------------------------------

/** C isspace in the "C" locale, as pg_split_opts uses it */
function isSpace(c: string): boolean {
  return c === ' ' || c === '\t' || c === '\n' || c === '\v' || c === '\f' || c === '\r'
}

/**
 * The `options` startup parameter split into arguments exactly as Postgres does
 * (pg_split_opts, src/backend/utils/init/postinit.c): whitespace separates, a backslash makes the
 * next character literal (so `\ ` is a space inside an argument and `\\` a backslash).
 */
export function splitStartupOptions(options: string): string[] {
  const args: string[] = []
  let i = 0
  while (i < options.length) {
    while (i < options.length && isSpace(options[i])) i++
    if (i >= options.length) break
    let arg = ''
    let escaped = false
    for (; i < options.length; i++) {
      const c = options[i]
      if (isSpace(c) && !escaped) break
      if (!escaped && c === '\\') escaped = true
      else {
        escaped = false
        arg += c
      }
    }
    args.push(arg)
  }
  return args
}

export interface StartupSetting {
  name: string
  value: string
}

/**
 * The settings of the `options` arguments as process_postgres_switches reads them (getopt over
 * "B:bC:c:D:d:EeFf:h:ijk:lN:nOPp:r:S:sTt:v:W:-:", src/backend/tcop/postgres.c): `-c name=value`,
 * `-cname=value` and `--name=value`, the name's dashes read as underscores (ParseLongOption). The
 * server's other switches (-B, -e, -F, -P, -S…) each set some setting by letter; they are refused
 * rather than modelled, so what reaches the server is always a named setting that was vetted.
 */
export function startupOptionSettings(args: string[]): { settings: StartupSetting[] } | { refused: string } {
  const settings: StartupSetting[] = []
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]
    let spec: string
    if (arg === '--') {
      // getopt's end of switches: whatever follows is an argument the server refuses
      if (i + 1 < args.length) return { refused: `invalid command-line argument for server process: ${args[i + 1]}` }
      break
    } else if (arg.startsWith('--')) spec = arg.slice(2)
    else if (arg.startsWith('-c')) {
      if (arg.length > 2) spec = arg.slice(2)
      else if (i + 1 < args.length) spec = args[++i]
      else return { refused: 'options: -c requires a name=value argument' }
    } else if (arg.startsWith('-') && arg.length > 1) {
      return { refused: `options switch -${arg[1]} is not accepted through Portcullis (use -c name=value)` }
    } else return { refused: `invalid command-line argument for server process: ${arg}` }
    const eq = spec.indexOf('=')
    if (eq < 0) return { refused: `options: ${arg.startsWith('--') ? '--' : '-c '}${spec} requires a value` }
    settings.push({ name: spec.slice(0, eq).replace(/-/g, '_'), value: spec.slice(eq + 1) })
  }
  return { settings }
}

/** One `-c name=value` argument that pg_split_opts reads back as exactly name and value. */
function optionArgument(s: StartupSetting): string {
  let out = '-c '
  for (const c of `${s.name}=${s.value}`) out += c === '\\' || isSpace(c) ? '\\' + c : c
  return out
}

/** StartupMessage parameters the gateway sets itself from the target */
const GATEWAY_PARAMETERS = new Set(['user', 'database'])

/**
 * The client's StartupMessage parameters vetted like SQL SETs of them: what to send upstream, or
 * why the connection is refused. Every parameter passes except user/database (the target's) and
 * the `_pq_.` protocol options (answered by NegotiateProtocolVersion); `options` passes as the
 * vetted settings, re-written so the server splits them exactly as they were vetted. Like
 * Postgres, only the exact lower-case `user`, `database`, `options`, `replication` are special:
 * any other name is a setting, looked up case-insensitively (so `Client_Encoding` is vetted too).
 */
export function vetStartupParameters(client: Record<string, string>, scoped?: ReadonlySet<string>): { parameters: Record<string, string> } | { refused: string } {
  const parameters: Record<string, string> = {}
  for (const [name, value] of Object.entries(client)) {
    if (GATEWAY_PARAMETERS.has(name) || name.startsWith('_pq_.')) continue
    if (name === 'replication') {
      // a replication connection speaks the walsender protocol, which the gateway does not classify
      if (parseBool(value) !== false) return { refused: 'replication connections are not accepted through Portcullis' }
      parameters[name] = value
      continue
    }
    if (name === 'options') {
      const parsed = startupOptionSettings(splitStartupOptions(value))
      if ('refused' in parsed) return parsed
      for (const s of parsed.settings) {
        const why = settingConcern(s.name, s.value, scoped)
        if (why) return { refused: `options -c ${s.name}: ${why}` }
      }
      if (parsed.settings.length > 0) parameters.options = parsed.settings.map(optionArgument).join(' ')
      continue
    }
    const why = settingConcern(name, value, scoped)
    if (why) return { refused: why }
    parameters[name] = value
  }
  return { parameters }
}

// ---- ParameterStatus -----------------------------------------------------------------------------

/** Reported settings that tell who the session runs as (GUC_REPORT in Postgres 15: not `role`). */
const REPORTED_IDENTITY = new Set(['session_authorization', 'is_superuser', 'role'])

/**
 * The server's ParameterStatus reports for one upstream connection. The reports during startup
 * set the baseline of the session's identity; call started() at ReadyForQuery. After that, a
 * report that the server reads SQL unlike the gateway, or that the session runs as someone else
 * (session_authorization or is_superuser changed; Postgres 14+ reports only changes), is a reason
 * to end the session, whatever statement caused it — including one the classifier could not see
 * (a function whose body calls set_config).
 */
export class ServerSettings {
  private readonly identity = new Map<string, string>()
  private starting = true

  started(): void {
    this.starting = false
  }

  /** why this report ends the session (or refuses the connection), or undefined */
  report(name: string, value: string): string | undefined {
    const n = settingName(name)
    if (REPORTED_IDENTITY.has(n)) {
      const was = this.identity.get(n)
      if (this.starting && was === undefined) {
        this.identity.set(n, value)
        return undefined
      }
      if (was === value) return undefined
      return `the server reports that ${n} changed: the session no longer runs as the target's upstream role`
    }
    if (!PARSER_SETTINGS.has(n)) return undefined
    const why = settingConcern(n, value)
    return why && `the server reports ${n}=${value}: ${why}`
  }
}
