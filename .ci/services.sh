#!/usr/bin/env bash
# Services and system packages the tests need on a fresh machine.
set -euo pipefail

# PostgreSQL on 127.0.0.1:5432 (trust auth): start the local cluster if it is not running.
if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
    if command -v pg_ctlcluster >/dev/null; then
        pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
    fi
    for _ in $(seq 1 30); do pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null && break; sleep 1; done
fi
pg_isready -h 127.0.0.1 -p 5432 || { echo "PostgreSQL is not running on 127.0.0.1:5432" >&2; exit 1; }

# Headless Chromium for tests/test_dashboard.py: Debian's package, driven by the playwright
# Python package through executable_path (no `playwright install` download).
if [ ! -x /usr/bin/chromium ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
