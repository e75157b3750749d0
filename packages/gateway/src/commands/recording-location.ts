// What `verify` and `replay` read: a local file, or an uploaded recording at s3://bucket/key. An
// object is fetched into a private temp dir, read there like a local file, and removed. The store
// is the one --config FILE's recording.upload.s3 names (endpoint, region, credentials through its
// secret references), or without --config the AWS SDK's environment (AWS_ENDPOINT_URL_S3 or
// AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the default chain).
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createSecretStore, downloadObject, loadConfig, parseS3Url, s3Client, s3ClientFromEnv } from '@portcullis/core'
import { UsageError } from '../args.ts'

export async function withRecording<T>(location: string, configFile: string | undefined, use: (file: string) => Promise<T>): Promise<T> {
  const url = parseS3Url(location)
  if (!url) return use(location)
  let client
  let closeSecrets = () => {}
  if (configFile !== undefined) {
    const config = await loadConfig(configFile)
    const upload = config.recording.upload
    if (!upload) throw new UsageError(`${configFile} has no recording.upload.s3 to read ${location} with`)
    const secrets = createSecretStore(config.secrets)
    closeSecrets = () => secrets.close()
    client = s3Client(upload.s3, ref => secrets.get(ref))
  } else {
    client = s3ClientFromEnv()
  }
  const dir = await mkdtemp(join(tmpdir(), 'portcullis-recording-'))
  try {
    const file = join(dir, 'recording.pcr')
    await downloadObject(client, url.bucket, url.key, file)
    return await use(file)
  } finally {
    client.destroy()
    closeSecrets()
    await rm(dir, { recursive: true, force: true })
  }
}
