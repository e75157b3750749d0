// Types for v8-flags.mjs (plain JavaScript: the bin applies it before it loads anything else).
export declare function applyV8Flags(env?: NodeJS.ProcessEnv): void
