// Control stores that several gateway instances share. The gateway loads this package only when
// the config names one (controlStore.postgres or .redis); the memory store lives in @portcullis/core.
export { PostgresControlStore, type PostgresControlStoreOptions } from './postgres/store.ts'
export { migrate, SCHEMA_VERSION } from './postgres/schema.ts'
export { RedisControlStore, type RedisControlStoreOptions } from './redis/store.ts'
