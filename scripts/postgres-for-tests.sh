#!/usr/bin/env bash
# Installs (Debian's package) and starts a local PostgreSQL for the webhook-service tests, with
# a superuser role `sdserve` (password `sdserve`) whose database the tests create their own
# databases through. Prints the line to eval:
#
#     eval "$(scripts/postgres-for-tests.sh)"   # sets SDSERVE_TEST_POSTGRES
#
# Needs root (or passwordless sudo) to install and start the server. Idempotent.
set -euo pipefail

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
as_postgres() { as_root runuser -u postgres -- "$@"; }

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    echo "installing postgresql (apt)" >&2
    as_root apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq postgresql >&2
fi
version=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! as_root pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main"' | grep -q .; then
    as_root pg_createcluster "$version" main >&2
fi
if ! as_root pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" && $4 == "online"' | grep -q .; then
    as_root pg_ctlcluster "$version" main start >&2
fi
port=$(as_root pg_lsclusters -h | awk -v v="$version" '$1 == v && $2 == "main" { print $3 }')
for _ in $(seq 1 50); do
    as_postgres psql -p "$port" -qtAc "SELECT 1" >/dev/null 2>&1 && break
    sleep 0.2
done
as_postgres psql -p "$port" -qtAc "SELECT 1 FROM pg_roles WHERE rolname = 'sdserve'" | grep -q 1 ||
    as_postgres psql -p "$port" -qc "CREATE ROLE sdserve LOGIN SUPERUSER PASSWORD 'sdserve'" >&2
as_postgres psql -p "$port" -qtAc "SELECT 1 FROM pg_database WHERE datname = 'sdserve'" | grep -q 1 ||
    as_postgres psql -p "$port" -qc "CREATE DATABASE sdserve OWNER sdserve" >&2
echo "export SDSERVE_TEST_POSTGRES=postgres://sdserve:sdserve@127.0.0.1:$port/sdserve"
