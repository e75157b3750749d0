// Recordings off the machine: sealed recordings to S3-compatible object storage (spool.ts), and
// reading them back from s3:// URLs (s3.ts).
export { createUploader, SINGLE_PUT_MAX, type Uploader, type UploaderOptions } from './spool.ts'
export { downloadObject, parseS3Url, s3Client, s3ClientFromEnv } from './s3.ts'
