// Types for built.mjs (plain JavaScript so that the bin can read it before tsx is loaded).
export declare const ROOT: string
export declare const DIST: string
export declare const MANIFEST: string
export declare const MANIFEST_VERSION: number
export declare function stamp(file: string): [number, number] | undefined
export type BuiltEntry = { file: string; stale?: undefined } | { stale: string; file?: undefined }
export declare function builtEntry(entry: string): BuiltEntry
export declare function runtimeFor(entry: string, want?: string): BuiltEntry & { refuse?: string }
