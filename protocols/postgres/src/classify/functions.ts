// Server functions that act outside the data model: files, processes, other servers, configuration,
// replication. Matched by bare name whatever the schema (pg_catalog.pg_read_file, a shadowing copy in
// another schema, "pg_read_file" quoted): a call we cannot tell apart is treated as the dangerous one.
const ADMIN_FUNCTIONS = new Set([
  // other backends
  'pg_terminate_backend',
  'pg_cancel_backend',
  'pg_log_backend_memory_contexts',
  // the server's file system
  'pg_read_file',
  'pg_read_binary_file',
  'pg_ls_dir',
  'pg_stat_file',
  'pg_ls_logdir',
  'pg_ls_waldir',
  'pg_ls_tmpdir',
  'pg_ls_archive_statusdir',
  'pg_ls_logicalsnapdir',
  'pg_ls_logicalmapdir',
  'pg_ls_replslotdir',
  'lo_import',
  'lo_export',
  // adminpack
  'pg_file_write',
  'pg_file_rename',
  'pg_file_unlink',
  'pg_file_sync',
  'pg_logdir_ls',
  // configuration and server state; a set_config *call* is vetted like SET (analyze.ts), a
  // set_config named as a word (CREATE OPERATOR … PROCEDURE = set_config) stays admin
  'set_config',
  'pg_reload_conf',
  'pg_rotate_logfile',
  'pg_promote',
  'pg_switch_wal',
  'pg_create_restore_point',
  'pg_backup_start',
  'pg_backup_stop',
  'pg_start_backup',
  'pg_stop_backup',
  'pg_wal_replay_pause',
  'pg_wal_replay_resume',
  // replication
  'pg_create_physical_replication_slot',
  'pg_create_logical_replication_slot',
  'pg_copy_physical_replication_slot',
  'pg_copy_logical_replication_slot',
  'pg_drop_replication_slot',
  'pg_replication_slot_advance',
  'pg_logical_slot_get_changes',
  'pg_logical_slot_get_binary_changes',
  'pg_logical_emit_message',
  'pg_replication_origin_create',
  'pg_replication_origin_drop',
  // run SQL given as a string: its class cannot be seen
  'query_to_xml',
  'query_to_xmlschema',
  'query_to_xml_and_xmlschema',
])

// Functions that change state (or send data, like NOTIFY) although called from a SELECT.
const WRITE_FUNCTIONS = new Set(['pg_notify', 'nextval', 'setval', 'lo_create', 'lo_creat', 'lo_unlink', 'lo_put', 'lo_from_bytea', 'lowrite'])

/** 'admin' | 'write' | undefined for a function's bare name (lower-cased: quoting hides nothing). */
export function functionClass(name: string): 'admin' | 'write' | undefined {
  const n = name.toLowerCase()
  if (ADMIN_FUNCTIONS.has(n)) return 'admin'
  // dblink, dblink_exec, dblink_connect, dblink_send_query, …
  if (n.startsWith('dblink')) return 'admin'
  // pg_create_<kind>_replication_slot, whatever kinds come next
  if (n.startsWith('pg_create_') && n.endsWith('_replication_slot')) return 'admin'
  if (WRITE_FUNCTIONS.has(n)) return 'write'
  return undefined
}
