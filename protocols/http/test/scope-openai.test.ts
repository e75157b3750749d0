// OpenAI-compatible stored objects under a scope: files, uploads, vector stores and batches are usable only
// by the scope that created them through the gateway (the control store keeps who). Two tenants,
// the official `openai` SDK as the client, the OpenAI-shaped stand-in upstream
// (fixtures/src/openai-objects.ts: the OpenAI API cannot run here). Asserted on the bytes each
// client got and on what the upstream holds afterwards.
import t from 'tap'
import { join } from 'node:path'
import { readdir } from 'node:fs/promises'
import OpenAI, { toFile } from 'openai'
import { Agent, request } from 'undici'
import { MemoryControlStore, readRecording, type ControlHealth } from '@portcullis/core'
import { startHttpUpstream } from '@portcullis/fixtures/http-upstream'
import { startCoreGateway, type CoreGateway } from './core-harness.ts'

const RULES = `
  - { id: agents-all, when: { groups: [agents] }, action: allow }`

async function client(t: { teardown(fn: () => unknown): void }, gw: CoreGateway, sub: string, tenant: string): Promise<OpenAI> {
  const token = await gw.issuer.mint({ sub, groups: ['agents'], extra: { tenant } })
  // the gateway holds a connection to the token it first saw: one pool per caller
  const agent = new Agent({ connections: 2 })
  t.teardown(() => agent.close())
  return new OpenAI({ baseURL: `${gw.url}/v1`, apiKey: token, maxRetries: 0, fetchOptions: { dispatcher: agent } as Record<string, unknown> })
}

/** the status the SDK's error carries, or 200 when the call succeeded */
async function status(p: Promise<unknown>): Promise<number> {
  try {
    await p
    return 200
  } catch (err) {
    return (err as { status?: number }).status ?? -1
  }
}

/** the raw bytes the client got for a call */
async function bytes(p: { asResponse(): Promise<Response> }): Promise<string> {
  return (await p.asResponse()).text()
}

t.test('files, vector stores and batches: only the scope that created them through the gateway', async t => {
  const up = await startHttpUpstream()
  t.teardown(() => up.stop())
  const gw = await startCoreGateway(t, { upstreamUrl: up.url, rules: RULES, scope: `{ user: '\${claims.tenant}' }` })
  const acme = await client(t, gw, 'alice', 'acme')
  const acmeBob = await client(t, gw, 'bob', 'acme')
  const globex = await client(t, gw, 'gina', 'globex')

  const acmeFile = await acme.files.create({ file: await toFile(Buffer.from('acme pricing sheet: widgets 10 EUR'), 'acme.txt'), purpose: 'assistants' })
  const globexFile = await globex.files.create({ file: await toFile(Buffer.from('globex merger plan: confidential'), 'globex.txt'), purpose: 'assistants' })
  t.not(acmeFile.id, globexFile.id)

  t.test('by id: the other tenant’s file is refused (GET, content, DELETE); the same tenant’s other subject may use it', async t => {
    for (const [what, call] of [
      ['retrieve', () => acme.files.retrieve(globexFile.id)],
      ['content', () => acme.files.content(globexFile.id)],
      ['delete', () => acme.files.delete(globexFile.id)],
    ] as const) {
      const before = up.requests.length
      t.equal(await status(call()), 403, what)
      t.notOk(up.requests.slice(before).some(r => r.path.includes(globexFile.id)), `${what}: never reached the upstream`)
    }
    t.ok(up.objects.ids().includes(globexFile.id), 'the globex file is still there')
    t.equal(await status(acme.files.retrieve('file-does-not-exist')), 403, 'an unknown id is refused like a foreign one: no oracle')
    t.equal((await acme.files.retrieve(acmeFile.id)).filename, 'acme.txt')
    t.equal(await (await acmeBob.files.content(acmeFile.id)).text(), 'acme pricing sheet: widgets 10 EUR', 'a scope is the tenant, not the subject')
    t.equal(await status(globex.files.content(acmeFile.id)), 403)
  })

  t.test('a path spelled so that the upstream might normalize it into a stored-object route is refused', async t => {
    const token = await gw.issuer.mint({ sub: 'alice', groups: ['agents'], extra: { tenant: 'acme' } })
    const agent = new Agent({ connections: 1 })
    t.teardown(() => agent.close())
    for (const path of [`/v1/./files/${globexFile.id}`, `/v1//files/${globexFile.id}`, `/V1/files/${globexFile.id}`, `/v1/Files/${globexFile.id}`, `/v1/files/x/../${globexFile.id}`, `/v1/models/%2e%2e/files/${globexFile.id}`, `/v1/files/${acmeFile.id}%2F..%2F${globexFile.id}`]) {
      const before = up.requests.length
      const res = await request(gw.url + path, { dispatcher: agent, headers: { authorization: `Bearer ${token}` } })
      const text = await res.body.text()
      // 400 where the classifier already refuses the spelling (an empty segment, an encoded slash)
      t.ok(res.statusCode === 403 || res.statusCode === 400, `${path}: refused (${res.statusCode})`)
      t.notMatch(text, /globex/)
      t.equal(up.requests.length, before, `${path}: never reached the upstream`)
    }
  })

  t.test('lists show the scope’s own objects only, down to the bytes', async t => {
    const seen = await bytes(acme.files.list())
    t.match(seen, acmeFile.id)
    t.notMatch(seen, globexFile.id, 'no id of the other tenant in the bytes')
    t.notMatch(seen, /globex/)
    const upstreamSaw = up.requests.filter(r => r.path.startsWith('/v1/files') && r.method === 'GET').length
    t.ok(upstreamSaw > 0, 'the upstream was asked for the whole list (and the gateway filtered it)')
    const listed = []
    for await (const f of globex.files.list()) listed.push(f.id)
    t.same(listed, [globexFile.id])
  })

  t.test('vector stores: create from own files only; attach, batch and search refused on the other tenant’s ids', async t => {
    t.equal(await status(acme.vectorStores.create({ name: 'stolen', file_ids: [globexFile.id] })), 403, 'a vector store made of the other tenant’s file')
    const acmeStore = await acme.vectorStores.create({ name: 'acme-kb', file_ids: [acmeFile.id] })
    const globexStore = await globex.vectorStores.create({ name: 'globex-kb', file_ids: [globexFile.id] })
    t.equal(await status(acme.vectorStores.files.create(acmeStore.id, { file_id: globexFile.id })), 403, 'attaching the other tenant’s file to one’s own store')
    t.equal(await status(acme.vectorStores.fileBatches.create(acmeStore.id, { file_ids: [acmeFile.id, globexFile.id] })), 403, 'one foreign id in a file batch')
    t.equal(await status(acme.vectorStores.search(globexStore.id, { query: 'merger plan' })), 403, 'searching the other tenant’s store')
    t.equal(await status(acme.vectorStores.retrieve(globexStore.id)), 403)
    t.equal(await status(acme.vectorStores.delete(globexStore.id)), 403)
    t.equal(await status(acme.vectorStores.files.list(globexStore.id)), 403)
    const upstreamFiles = await (await fetch(`${up.url}/v1/vector_stores/${acmeStore.id}/files`)).json()
    t.same(upstreamFiles.data.map((f: { id: string }) => f.id), [acmeFile.id], 'the upstream store holds the tenant’s file only')
    const hits = await bytes(acme.vectorStores.search(acmeStore.id, { query: 'pricing merger' }))
    t.match(hits, /acme pricing sheet/)
    t.notMatch(hits, /globex|merger plan/, 'no byte of the other tenant’s text')
    const stores = await bytes(acme.vectorStores.list())
    t.match(stores, acmeStore.id)
    t.notMatch(stores, globexStore.id)
    t.equal(await status(globex.vectorStores.files.retrieve(acmeFile.id, { vector_store_id: acmeStore.id })), 403)
  })

  t.test('batches: input files and batch ids of the other tenant are refused; the output file is the batch owner’s', async t => {
    const line = JSON.stringify({ custom_id: 'r1', method: 'POST', url: '/v1/chat/completions', body: { model: 'gpt-4o-mini', messages: [] } })
    const globexInput = await globex.files.create({ file: await toFile(Buffer.from(line), 'in.jsonl'), purpose: 'batch' })
    t.equal(await status(acme.batches.create({ input_file_id: globexInput.id, endpoint: '/v1/chat/completions', completion_window: '24h' })), 403)
    const globexBatch = await globex.batches.create({ input_file_id: globexInput.id, endpoint: '/v1/chat/completions', completion_window: '24h' })
    t.equal(await status(acme.batches.retrieve(globexBatch.id)), 403)
    t.equal(await status(acme.batches.cancel(globexBatch.id)), 403)
    t.equal(await status(acme.files.content(globexBatch.output_file_id!)), 403, 'the other tenant’s batch output')
    t.match(await (await globex.files.content(globexBatch.output_file_id!)).text(), /"custom_id":"r1"/, 'its owner reads it')
    const batches = await bytes(acme.batches.list())
    t.notMatch(batches, globexBatch.id)
    t.notMatch(batches, globexInput.id)
  })

  t.test('a page filtered down to nothing is followed, so the SDK’s auto-pagination reaches the scope’s later objects', async t => {
    // upstream order: …, then three globex files, then one acme file
    for (let i = 0; i < 3; i++) await globex.files.create({ file: await toFile(Buffer.from(`globex ${i}`), `g${i}.txt`), purpose: 'assistants' })
    const late = await acme.files.create({ file: await toFile(Buffer.from('acme late'), 'late.txt'), purpose: 'assistants' })
    const listed: string[] = []
    for await (const f of acme.files.list({ limit: 2 })) listed.push(f.id)
    t.same(listed, [acmeFile.id, late.id])
  })

  t.test('a delete forgets the id; the upstream lost only the tenant’s file', async t => {
    const gone = await acme.files.create({ file: await toFile(Buffer.from('to delete'), 'd.txt'), purpose: 'assistants' })
    t.equal((await acme.files.delete(gone.id)).deleted, true)
    t.notOk(up.objects.ids().includes(gone.id))
    t.equal(await status(acme.files.retrieve(gone.id)), 403, 'forgotten: refused before the upstream')
    t.ok(up.objects.ids().includes(globexFile.id))
  })

  t.test('uploads: the other tenant’s upload id is refused for parts, complete and cancel; the completed file is the owner’s', async t => {
    const make = (c: OpenAI, name: string, size: number) => c.uploads.create({ bytes: size, filename: name, mime_type: 'text/plain', purpose: 'assistants' })
    const globexUpload = await make(globex, 'globex-big.txt', 22)
    const acmeUpload = await make(acme, 'acme-big.txt', 20)
    t.not(globexUpload.id, acmeUpload.id)
    const globexPart = await globex.uploads.parts.create(globexUpload.id, { data: await toFile(Buffer.from('globex part one, '), 'p1') })
    for (const [what, call] of [
      ['parts', async () => acme.uploads.parts.create(globexUpload.id, { data: await toFile(Buffer.from('acme injected'), 'x') })],
      ['complete', () => acme.uploads.complete(globexUpload.id, { part_ids: [globexPart.id] })],
      ['cancel', () => acme.uploads.cancel(globexUpload.id)],
    ] as const) {
      const before = up.requests.length
      t.equal(await status(call()), 403, what)
      t.notOk(up.requests.slice(before).some(r => r.path.includes(globexUpload.id)), `${what}: never reached the upstream`)
    }
    t.equal(await status(acme.uploads.cancel('upload_does_not_exist')), 403, 'an unknown upload id is refused like a foreign one')
    // the owner goes on: its upload is untouched by the refused calls
    await globex.uploads.parts.create(globexUpload.id, { data: await toFile(Buffer.from('part two'), 'p2') })
    const parts = up.requests.filter(r => r.method === 'POST' && r.path === `/v1/uploads/${globexUpload.id}/parts`).length
    t.equal(parts, 2, 'only the owner’s parts reached the upload')
    const done = await globex.uploads.complete(globexUpload.id, { part_ids: [globexPart.id] })
    t.equal(done.status, 'completed')
    const made = done.file!.id
    t.equal(await (await globex.files.content(made)).text(), 'globex part one, ', 'its owner reads the completed file')
    t.equal(await status(acme.files.content(made)), 403, 'the completed file is the upload owner’s, not the other tenant’s')
    t.notMatch(await bytes(acme.files.list()), made)
    // acme's own upload: parts, complete and cancel pass for it
    const acmePart = await acme.uploads.parts.create(acmeUpload.id, { data: await toFile(Buffer.from('acme upload content!'), 'a1') })
    const acmeDone = await acme.uploads.complete(acmeUpload.id, { part_ids: [acmePart.id] })
    t.equal(await (await acme.files.content(acmeDone.file!.id)).text(), 'acme upload content!')
    t.equal(await status(globex.uploads.cancel(acmeUpload.id)), 403)
    const spare = await make(acme, 'spare.txt', 1)
    t.equal((await acme.uploads.cancel(spare.id)).status, 'cancelled')
  })

  t.test('recording and audit show the scope on each operation', async t => {
    const refused = gw.audit().filter(l => l.error === 'scope_refused')
    t.ok(refused.length >= 10, 'each refusal is audited')
    t.ok(refused.every(l => l.scope === 'user="acme"' || l.scope === 'user="globex"'), 'with the scope it ran under')
    const operations = gw.audit().filter(l => l.statement !== undefined && l.class !== 'session')
    t.ok(operations.length >= 30, `${operations.length} operations audited`)
    t.same(operations.filter(l => l.scope !== 'user="acme"' && l.scope !== 'user="globex"'), [], 'every operation’s audit line names its scope')
    const events: Record<string, unknown>[] = []
    const decisions: Record<string, unknown>[] = []
    for (const day of await readdir(gw.recordings))
      for (const f of await readdir(join(gw.recordings, day)))
        for await (const e of readRecording(join(gw.recordings, day, f))) {
          events.push(e.payload as Record<string, unknown>)
          if (e.type === 'decision') decisions.push(e.payload as Record<string, unknown>)
        }
    t.ok(decisions.length >= 30)
    t.same(decisions.filter(d => d.scope !== 'user="acme"' && d.scope !== 'user="globex"'), [], 'every decision record names its scope')
    t.ok(events.some(e => e.event === 'authenticated' && e.scope === 'user="acme"'), 'the session’s scope')
    t.ok(events.some(e => e.event === 'scope-refused' && /was not created through the gateway under this session's scope/.test(String(e.reason))), 'refusals with their reason')
    t.ok(events.some(e => e.event === 'scope-applied' && /owned: file /.test(String(e.applied))), 'ownership checks that passed')
    t.ok(events.some(e => e.event === 'scope-applied' && e.applied === 'the answer filtered to the scope'), 'filtered lists')
  })
})

t.test('while the control store is away the owner cannot be read: stored objects are refused (fail closed)', async t => {
  const up = await startHttpUpstream()
  t.teardown(() => up.stop())
  // a memory store that can report itself away, as a shared store does during an outage
  let away = false
  class Flaky extends MemoryControlStore {
    override health(): ControlHealth {
      return away ? { kind: 'memory', ok: false, error: 'test outage' } : super.health()
    }
  }
  const gw = await startCoreGateway(t, { upstreamUrl: up.url, rules: RULES, scope: `{ user: '\${claims.tenant}' }`, controlStore: new Flaky() })
  const acme = await client(t, gw, 'alice', 'acme')
  const made = await acme.files.create({ file: await toFile(Buffer.from('x'), 'x.txt'), purpose: 'assistants' })
  t.equal((await acme.files.retrieve(made.id)).id, made.id)
  away = true
  const before = up.requests.length
  const err = await acme.files.retrieve(made.id).catch(e => e)
  t.equal(err.status, 503)
  t.match(err.error, { code: 'control_store_unavailable' })
  t.equal(up.requests.length, before, 'nothing reached the upstream')
  // a create is sent, but its answer cannot be recorded as the scope's: the client gets no id
  const refused = await acme.files.create({ file: await toFile(Buffer.from('y'), 'y.txt'), purpose: 'assistants' }).catch(e => e)
  t.equal(refused.status, 503)
  t.equal(up.objects.ids().length, 2, 'the upstream made it')
  t.notMatch(`${refused.message} ${JSON.stringify(refused.error)}`, /file-\d/, 'but no object id reached the client')
})
