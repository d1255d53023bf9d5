#!/usr/bin/env bash
# Services and system packages the tests need on a fresh machine.
set -euo pipefail

# PostgreSQL on 127.0.0.1:5432 (trust auth): install it if absent, start the local cluster if it is
# not running. The distributed-worker tests need it and, with CI=true, fail (never skip) without it.
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    if ! command -v pg_ctlcluster >/dev/null && command -v apt-get >/dev/null; then
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
        # A fresh cluster asks TCP clients for a password: the tests connect as postgres without one.
        hba="$(ls /etc/postgresql/*/main/pg_hba.conf | head -n1)"
        sed -i -E 's/^(host\s+all\s+all\s+127\.0\.0\.1\/32\s+)\S+/\1trust/' "$hba"
    fi
    if command -v pg_ctlcluster >/dev/null; then
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    fi
    for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not running on 127.0.0.1:5432" >&2; exit 1; }
psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1" >/dev/null \
    || { echo "PostgreSQL on 127.0.0.1:5432 refuses user postgres without a password (trust auth needed)" >&2; exit 1; }
psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 \
    || createdb -h 127.0.0.1 -U postgres test

# Headless Chromium for tests/test_dashboard.py: Debian's package, driven by the playwright
# Python package through executable_path (no `playwright install` download).
if [ ! -x /usr/bin/chromium ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
