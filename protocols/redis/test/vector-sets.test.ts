// Round trip of Redis 8 vector sets and KNN through the gateway. Redis 8 cannot run on these
// machines (no package); it runs here only where a Docker engine answers, through testcontainers.
import t from 'tap'
import { Redis } from 'ioredis'
import { startGateway } from './harness.ts'

async function dockerAnswers(): Promise<string | undefined> {
  try {
    const { getContainerRuntimeClient } = await import('testcontainers')
    await Promise.race([
      getContainerRuntimeClient(),
      new Promise((_, reject) => setTimeout(() => reject(new Error('no answer within 10s')), 10_000).unref()),
    ])
    return undefined
  } catch (err) {
    return (err as Error).message.split('\n')[0]
  }
}

const noDocker = await dockerAnswers()

const skip = noDocker === undefined ? false : `no Docker engine answers (${noDocker}): redis:8 cannot be started here`

t.test('vector sets on redis:8: VADD, VSIM with COUNT, VEMB, VREM through the gateway', { skip }, async t => {
  const { GenericContainer, Wait } = await import('testcontainers')
  const container = await new GenericContainer('redis:8').withExposedPorts(6379).withWaitStrategy(Wait.forLogMessage('Ready to accept connections')).start()
  t.teardown(() => container.stop())
  const gw = await startGateway(t, {
    external: { host: container.getHost(), port: container.getMappedPort(6379) },
    rules: `
  - { id: rw, when: { class: [read, write, delete] }, action: allow }
  - { id: wide, when: { facts: { topK: { gt: 50 } } }, action: block, reason: too many neighbours }`,
    masking: `  - { id: vecs, keys: ["private:*"], method: redact }`,
  })
  const r = new Redis({ port: gw.port, password: await gw.token(), lazyConnect: true, enableReadyCheck: false })
  t.teardown(() => r.disconnect())
  await r.connect()
  const blob = Buffer.from(new Float32Array([1, 0, 0, 0]).buffer)
  t.equal(await r.call('VADD', 'vs', 'FP32', blob, 'a'), 1)
  t.equal(await r.call('VADD', 'vs', 'VALUES', '4', '0', '1', '0', '0', 'b'), 1)
  t.same(await r.call('VSIM', 'vs', 'FP32', blob, 'COUNT', '1'), ['a'])
  await t.rejects(r.call('VSIM', 'vs', 'ELE', 'a', 'COUNT', '500'), /NOPERM blocked by rule wide: too many neighbours/)
  const emb = (await r.call('VEMB', 'vs', 'a')) as string[]
  t.equal(emb.length, 4)
  t.equal(await r.call('VCARD', 'vs'), 2)
  t.equal(await r.call('VREM', 'vs', 'b'), 1)
  await r.call('VADD', 'private:vs', 'VALUES', '2', '0.5', '0.5', 'secret-element')
  t.same(await r.call('VSIM', 'private:vs', 'VALUES', '2', '0.5', '0.5'), ['[REDACTED]'], 'VSIM results masked by key rule')
})
