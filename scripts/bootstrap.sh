#!/bin/sh
# Makes a fresh clone runnable: pnpm, the workspace's npm packages, and (with --test) the Debian
# packages the tests start as real peers. Idempotent and quiet when everything is already there.
set -e
cd "$(dirname "$0")/.."

if ! command -v pnpm >/dev/null 2>&1; then
  echo "bootstrap: installing pnpm" >&2
  npm i -g pnpm@10 >/dev/null 2>&1 || npm i -g pnpm@10
fi

need_apt=""
if [ "$1" = "--test" ]; then
  command -v redis-server >/dev/null 2>&1 || need_apt="$need_apt redis-server redis-tools"
  [ -e /usr/lib/redis/modules/redisearch.so ] || need_apt="$need_apt redis-redisearch"
  command -v psql >/dev/null 2>&1 || need_apt="$need_apt postgresql-15 postgresql-client-15"
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt="$need_apt postgresql-15"
  command -v pgbench >/dev/null 2>&1 || need_apt="$need_apt postgresql-contrib"
  /usr/bin/python3 -c 'import psycopg2, redis' >/dev/null 2>&1 || need_apt="$need_apt python3-psycopg2 python3-redis"
  [ -e /usr/share/java/postgresql.jar ] || need_apt="$need_apt libpostgresql-jdbc-java"
  command -v javac >/dev/null 2>&1 || need_apt="$need_apt default-jdk-headless"
  command -v curl >/dev/null 2>&1 || need_apt="$need_apt curl"
  # several gateway instances behind one address (packages/gateway/test/multi-instance.test.ts)
  command -v haproxy >/dev/null 2>&1 || need_apt="$need_apt haproxy"
  # reference proxies for `pnpm bench` (CI runs the quick set after the tests)
  command -v pgbouncer >/dev/null 2>&1 || need_apt="$need_apt pgbouncer"
  command -v nutcracker >/dev/null 2>&1 || need_apt="$need_apt nutcracker"
  command -v nginx >/dev/null 2>&1 || need_apt="$need_apt nginx-light"
  command -v openssl >/dev/null 2>&1 || need_apt="$need_apt openssl"
  # the web console's browser tests (puppeteer-core drives it; nothing is downloaded at run time)
  command -v chromium >/dev/null 2>&1 || need_apt="$need_apt chromium"
fi
if [ -n "$need_apt" ]; then
  if [ "$(id -u)" = "0" ]; then
    echo "bootstrap: apt-get install$need_apt" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $need_apt >/dev/null
  else
    echo "bootstrap: please install:$need_apt (tests that need them will fail)" >&2
  fi
fi

# --frozen-lockfile on CI: the lockfile is the truth; locally keep it in sync
if [ -n "$CI" ]; then pnpm install --frozen-lockfile --reporter=silent
else pnpm install --reporter=silent; fi
