// Session recordings: a framed, hash-chained, sealed binary log per session (FORMAT.md).
export { openRecorder, DEFAULT_MAX_BACKLOG } from './recorder.ts'
export type { Recorder, RecorderOptions } from './recorder.ts'
export { verifyRecording } from './verify.ts'
export type { VerifyResult, VerifyOptions } from './verify.ts'
export { readRecording } from './reader.ts'
export { formatTranscript } from './transcript.ts'
export type { RecordEntry, RecordingHeader, SealPayload } from './format.ts'
export * from './upload/index.ts'
