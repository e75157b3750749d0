// The HTTP reference proxy: nginx proxy_pass with upstream keep-alive and no buffering (so SSE
// streams through), one worker like the one event loop of a Portcullis process.
import { mkdtempSync, writeFileSync, rmSync, chmodSync } from 'node:fs'
import { join } from 'node:path'
import { daemon, freePort, waitForPort, which } from './proc.ts'
import { Unavailable } from './types.ts'

export interface Nginx { host: string; port: number; stop(): Promise<void> }

export async function startNginx(tmp: string, upstream: { host: string; port: number }): Promise<Nginx> {
  const exe = which('nginx')
  if (!exe) throw new Unavailable('nginx not installed')
  const dir = mkdtempSync(join(tmp, 'nginx-'))
  chmodSync(dir, 0o777) // workers drop to nobody and write their temp files here
  const port = await freePort()
  const conf = join(dir, 'nginx.conf')
  writeFileSync(conf, `
worker_processes 1;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  upstream backend {
    server ${upstream.host}:${upstream.port};
    keepalive 128;
  }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
      proxy_request_buffering off;
    }
  }
}
`)
  const d = daemon(exe, ['-p', dir, '-e', 'stderr', '-c', conf, '-g', `daemon off; pid ${dir}/nginx.pid;`])
  try {
    await waitForPort(port, '127.0.0.1', 10_000, d.child)
  } catch (err) {
    throw new Error(`nginx did not start: ${(err as Error).message}\n${d.output()}`)
  }
  return { host: '127.0.0.1', port, async stop() { await d.stop(); rmSync(dir, { recursive: true, force: true }) } }
}
