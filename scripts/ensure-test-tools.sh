#!/usr/bin/env bash
# Installs the system tools the integration tests drive, only those missing: pg_dump/psql/pg_restore/pg_basebackup
# (PostgreSQL 15 client, matching the embedded test server), kubectl and the AWS CLI (independent
# clients that cross-check our test servers), promtool (Prometheus's linter for the metrics),
# gzip and openssl. Runs before `npm test`.
set -uo pipefail
missing=()
for tool in pg_dump pg_restore psql pg_basebackup; do command -v "$tool" >/dev/null 2>&1 || missing+=(postgresql-client); done
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)
command -v aws >/dev/null 2>&1 || missing+=(awscli)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v gzip >/dev/null 2>&1 || missing+=(gzip)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
[ ${#missing[@]} -eq 0 ] && exit 0
packages=$(printf '%s\n' "${missing[@]}" | sort -u | tr '\n' ' ')
if [ "$(id -u)" -ne 0 ]; then
  echo "The tests need these Debian packages: $packages— install them (sudo apt-get install -y $packages) and rerun." >&2
  exit 1
fi
echo "Installing $packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq && apt-get install -y -qq --no-install-recommends $packages
