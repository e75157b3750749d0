export * from './types.ts'
export * from './errors.ts'
export * from './masking/index.ts'
export * from './recording/index.ts'
