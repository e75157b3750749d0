// The object store a recording goes to, through the AWS SDK. Credentials come from secret
// references (re-read every few minutes, so a rotated key is picked up) or, without them, from the
// SDK's default chain (env AWS_*, web identity, instance role). Nothing here logs a credential.
import { createWriteStream } from 'node:fs'
import { pipeline } from 'node:stream/promises'
import type { Readable } from 'node:stream'
import { GetObjectCommand, S3Client } from '@aws-sdk/client-s3'
import { PortcullisError } from '../../errors.ts'
import type { SecretRef } from '../../types.ts'
import type { S3UploadConfig } from '../../config/types.ts'

const CREDENTIALS_TTL_MS = 5 * 60_000
// the SDK's own console warnings (one per failed streaming attempt) would repeat what the uploader
// logs once per outage
const quiet = { trace() {}, debug() {}, info() {}, warn() {}, error() {} }

export function s3Client(cfg: S3UploadConfig, secret: (ref: SecretRef) => Promise<string>): S3Client {
  const { accessKeyId, secretAccessKey } = cfg
  return new S3Client({
    region: cfg.region,
    forcePathStyle: cfg.forcePathStyle,
    ...(cfg.endpoint !== undefined ? { endpoint: cfg.endpoint } : {}),
    ...(accessKeyId && secretAccessKey
      ? {
          credentials: async () => ({
            accessKeyId: await secret(accessKeyId),
            secretAccessKey: await secret(secretAccessKey),
            // the SDK keeps a provider's answer until it expires
            expiration: new Date(Date.now() + CREDENTIALS_TTL_MS),
          }),
        }
      : {}),
    // the uploader retries with its own backoff (spool.ts): one attempt per call here
    maxAttempts: 1,
    logger: quiet,
    // a checksum is what we send (Content-MD5) and compare (ETag); the SDK's default CRC32 trailers
    // use aws-chunked uploads that S3-compatible stores do not all accept
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  })
}

/** s3://bucket/key → { bucket, key }; undefined for anything else (a local path) */
export function parseS3Url(location: string): { bucket: string; key: string } | undefined {
  if (!location.startsWith('s3://')) return undefined
  const rest = location.slice('s3://'.length)
  const slash = rest.indexOf('/')
  if (slash <= 0 || slash === rest.length - 1) throw new PortcullisError('CONFIG_INVALID', `not an object URL (s3://bucket/key): ${location}`)
  return { bucket: rest.slice(0, slash), key: rest.slice(slash + 1) }
}

/**
 * The client a CLI command uses for s3:// URLs: the config's recording.upload.s3 when there is one
 * (its endpoint, region and credentials), else the AWS SDK's own environment (AWS_ENDPOINT_URL_S3 or
 * AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the default chain).
 */
export function s3ClientFromEnv(env: NodeJS.ProcessEnv = process.env): S3Client {
  const endpoint = env.AWS_ENDPOINT_URL_S3 ?? env.AWS_ENDPOINT_URL
  return new S3Client({
    region: env.AWS_REGION ?? env.AWS_DEFAULT_REGION ?? 'us-east-1',
    ...(endpoint ? { endpoint, forcePathStyle: true } : {}),
    maxAttempts: 3,
    logger: quiet,
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
  })
}

/** downloads an object to `file` (created exclusively, 0600) */
export async function downloadObject(client: S3Client, bucket: string, key: string, file: string): Promise<void> {
  const res = await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }))
  if (!res.Body) throw new PortcullisError('RECORDING_FAILED', `s3://${bucket}/${key}: empty response`)
  await pipeline(res.Body as Readable, createWriteStream(file, { flags: 'wx', mode: 0o600 }))
}
