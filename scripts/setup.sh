#!/usr/bin/env bash
# Idempotent set-up: system data/browser (when apt is usable as root) and the .venv with layrot.
# Re-running it is cheap: pip only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    # Real offline data for the default task, a headless browser for the report's tests, and a
    # C++ compiler for layrot_core's CPU kernels.
    missing=()
    [ -d /usr/share/datasets/fashion-mnist ] || missing+=(dataset-fashion-mnist)
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    command -v g++ >/dev/null 2>&1 || missing+=(g++)  # compiles layrot_core's CPU kernels
    if [ ${#missing[@]} -gt 0 ]; then
        echo "setup: apt-get install ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
