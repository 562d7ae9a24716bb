#!/usr/bin/env bash
# The Debian packages some tests need, installed when missing, so that `make test` passes
# on a fresh machine: PostgreSQL (tests/ops/test_operations.py starts its own server) and
# Chromium (the explanation report is tested in a real browser, headless).
set -euo pipefail

# need PACKAGE CHECK: install PACKAGE unless CHECK succeeds.
need() {
    if eval "$2" >/dev/null 2>&1; then
        return
    fi
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if ! command -v sudo >/dev/null 2>&1 || ! sudo -n true 2>/dev/null; then
            echo "make test: the tests need the Debian package $1, which is not installed;" \
                "install it (apt-get install $1) and run make test again" >&2
            exit 1
        fi
        sudo="sudo -n"
    fi
    echo "make test: installing the Debian package $1, which the tests need"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "$1" >/dev/null
}

need postgresql "ls /usr/lib/postgresql/*/bin/pg_ctl"
need chromium "command -v chromium"
