// V8 settings of the gateway process, applied before any WebAssembly is compiled: by the bin for
// every command, and by the bench's gateway child so that the bench measures the same process.
//
// --liftoff-only: WebAssembly (libpg_query, the SQL parser; PGlite in the demo) stays on V8's
// baseline compiler instead of being recompiled by TurboFan once it gets hot. That recompilation of
// the parser runs on V8's worker threads in zones of tens of MB each; glibc keeps what they freed in
// those threads' malloc arenas, so the gateway's RSS stayed ~100 MB higher for good after its first
// SQL statements (a 1M-row stream: peak ~215 -> ~150 MB), and the compile burst competes with
// traffic for the CPU. The price is a slower cold parse of a statement never seen before (about
// 1.3x in a micro-benchmark); cached classifications do not parse. PORTCULLIS_WASM_TIERUP=1 keeps
// V8's default.
import { setFlagsFromString } from 'node:v8'

export function applyV8Flags(env = process.env) {
  if (env.PORTCULLIS_WASM_TIERUP === '1') return
  setFlagsFromString('--liftoff-only')
}
