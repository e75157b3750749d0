// A scope's upstream objects (OpenAI-compatible files, vector stores, batches) against a shared
// store: the same cases for Postgres and Redis (core's control-ipc test runs them on memory over
// IPC). Two instances: what one records, the other reads; the first owner of an id keeps it.
import type { ControlStore } from '@portcullis/core'
import type { Test } from 'tap'

export function objectCases(t: Test, two: (t: Test) => Promise<[ControlStore, ControlStore]>): void {
  void t.test('scoped objects: owned by the scope that put them, read from another instance, first owner kept, dropped by the owner only', async t => {
    const [a, b] = await two(t)
    const acme = 'user="acme"'
    const globex = 'user="globex"'
    await a.putObjects('llm', acme, 'file', ['file-1', 'file-2'])
    await b.putObjects('llm', globex, 'file', ['file-3'])
    t.same(await b.ownedObjects('llm', acme, 'file', ['file-3', 'file-2', 'file-1', 'file-9']), ['file-2', 'file-1'], 'the other instance reads acme’s, in the order asked')
    t.same(await a.ownedObjects('llm', globex, 'file', ['file-1', 'file-2', 'file-3']), ['file-3'])
    t.same(await a.ownedObjects('other-target', acme, 'file', ['file-1']), [], 'another target is another account')
    t.same(await a.ownedObjects('llm', acme, 'batch', ['file-1']), [], 'another kind is another object')
    await b.putObjects('llm', globex, 'file', ['file-1'])
    t.same(await a.ownedObjects('llm', globex, 'file', ['file-1']), [], 'putting an id another scope owns changes nothing')
    t.same(await a.ownedObjects('llm', acme, 'file', ['file-1']), ['file-1'])
    await b.dropObjects('llm', globex, 'file', ['file-1', 'file-3'])
    t.same(await a.ownedObjects('llm', acme, 'file', ['file-1']), ['file-1'], 'a drop by another scope leaves the owner’s')
    t.same(await a.ownedObjects('llm', globex, 'file', ['file-3']), [], 'the owner’s own drop forgets it')
    await a.dropObjects('llm', acme, 'file', ['file-1'])
    t.same(await b.ownedObjects('llm', acme, 'file', ['file-1', 'file-2']), ['file-2'])
  })
}
