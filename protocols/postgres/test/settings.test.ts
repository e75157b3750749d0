import t from 'tap'
import { encodingOf, isParserSafeEncoding, parseBool, settingConcern, splitStartupOptions, startupOptionSettings, vetStartupParameters } from '../src/settings.ts'

t.test('encoding names resolve as Postgres resolves them; only server encodings are safe for the parser', async t => {
  for (const [name, enc] of [['UTF8', 'UTF8'], ['unicode', 'UTF8'], ['utf-8', 'UTF8'], ['Utf_8', 'UTF8'], ['ISO-8859-1', 'LATIN1'], ['iso8859_15', 'LATIN9'], ['KOI8', 'KOI8R'], ['win', 'WIN1251'], ['ALT', 'WIN866'], ['TCVN5712', 'WIN1258'], ['Shift_JIS', 'SJIS'], ['MS-KANJI', 'SJIS'], ['SHIFT-JIS-2004', 'SHIFT_JIS_2004'], ['Windows-949', 'UHC'], ['cp949', undefined], ['', undefined], ['x'.repeat(64) + 'utf8', undefined]] as const) {
    t.equal(encodingOf(name), enc, `${name} → ${enc}`)
  }
  // every server encoding (pg_enc2name_tbl up to PG_ENCODING_BE_LAST) is safe, every client-only one is not
  const server = ['SQL_ASCII', 'EUC_JP', 'EUC_CN', 'EUC_KR', 'EUC_TW', 'EUC_JIS_2004', 'UTF8', 'MULE_INTERNAL', 'LATIN1', 'LATIN2', 'LATIN3', 'LATIN4', 'LATIN5', 'LATIN6', 'LATIN7', 'LATIN8', 'LATIN9', 'LATIN10', 'WIN1256', 'WIN1258', 'WIN866', 'WIN874', 'KOI8R', 'WIN1251', 'WIN1252', 'ISO_8859_5', 'ISO_8859_6', 'ISO_8859_7', 'ISO_8859_8', 'WIN1250', 'WIN1253', 'WIN1254', 'WIN1255', 'WIN1257', 'KOI8U']
  for (const e of server) t.ok(isParserSafeEncoding(e), `${e} is safe`)
  for (const e of ['SJIS', 'BIG5', 'GBK', 'UHC', 'GB18030', 'JOHAB', 'SHIFT_JIS_2004', 'win932', 'win936', 'win950', 'windows949', 'mskanji', 'shiftjis2004', 'no-such']) t.notOk(isParserSafeEncoding(e), `${e} is not`)
})

t.test('booleans parse as Postgres parses them: prefixes, two letters for on/off', async t => {
  for (const [v, b] of [['on', true], ['ON', true], ['t', true], ['tru', true], ['yes', true], ['y', true], ['1', true], ['of', false], ['off', false], ['f', false], ['no', false], ['0', false], ['o', undefined], ['', undefined], [' on', undefined], ['truee', undefined], ['offf', undefined], ['01', undefined]] as const) {
    t.equal(parseBool(v), b, JSON.stringify(v))
  }
})

t.test('settingConcern: parser settings by value, identity and enforcement always, the rest never', async t => {
  t.equal(settingConcern('standard_conforming_strings', 'on'), undefined)
  t.equal(settingConcern('standard_conforming_strings', null), undefined, 'RESET goes back to a vetted value')
  t.match(settingConcern('standard_conforming_strings', undefined), /must stay on/, 'an unknown value fails closed')
  t.match(settingConcern('Client_Encoding', 'sjis'), /client_encoding sjis/)
  t.match(settingConcern('role', null), /who the session runs as/, 'RESET ROLE is a change of identity too')
  t.equal(settingConcern('search_path', 'evil, public'), undefined)
  t.equal(settingConcern('statement_timeout', undefined), undefined)
})

t.test('options split like pg_split_opts and read like process_postgres_switches', async t => {
  t.same(splitStartupOptions('  -c a=b\t--c-d=e\\ f  -cx=\\\\y '), ['-c', 'a=b', '--c-d=e f', '-cx=\\y'])
  t.same(splitStartupOptions('-c a=b\\'), ['-c', 'a=b'], 'a trailing backslash escapes nothing')
  t.same(startupOptionSettings(splitStartupOptions('-c a=b --c-d=e\\ f -cx=\\\\y -c search-path=s-1')), {
    settings: [{ name: 'a', value: 'b' }, { name: 'c_d', value: 'e f' }, { name: 'x', value: '\\y' }, { name: 'search_path', value: 's-1' }],
  })
  t.same(startupOptionSettings(['--']), { settings: [] })
  t.match(startupOptionSettings(['--', 'x']), { refused: /invalid command-line argument/ })
  t.match(startupOptionSettings(['-e']), { refused: /switch -e is not accepted/ })
})

t.test('vetStartupParameters: everything passes but the gateway\'s own; options re-written as vetted', async t => {
  t.same(vetStartupParameters({ user: 'u', database: 'd', application_name: 'a', options: '--statement-timeout=5s  -c  application_name=my\\ app', TimeZone: 'UTC', '_pq_.x': '1' }), {
    parameters: { application_name: 'a', options: '-c statement_timeout=5s -c application_name=my\\ app', TimeZone: 'UTC' },
  })
  t.same(vetStartupParameters({ options: '   ' }), { parameters: {} })
  t.match(vetStartupParameters({ options: '-c client_encoding=SJIS' }), { refused: /client_encoding SJIS/ })
})
