import t from 'tap'
import { CLASSES, PortcullisError, isPortcullisError } from '../src/index.ts'

t.test('classes are ordered from session to admin', async t => {
  t.same([...CLASSES], ['session', 'read', 'write', 'delete', 'bulk-delete', 'schema-change', 'admin'])
})

t.test('errors carry a stable code', async t => {
  const err = new PortcullisError('POLICY_BLOCKED', 'blocked by rule no-bulk', { rule: 'no-bulk' })
  t.ok(isPortcullisError(err, 'POLICY_BLOCKED'))
  t.notOk(isPortcullisError(err, 'AUTH_FAILED'))
  t.equal(err.details.rule, 'no-bulk')
})
