// The same three instances sharing one Redis control store: cases (1)–(4) of issue 12 (the store
// outage, case 5, is the Postgres file's; the Redis store's own outage and reconnect are in
// packages/store/test/redis.test.ts).
import { multiInstance } from './multi-instance.ts'

multiInstance('redis')
