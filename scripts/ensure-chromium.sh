#!/usr/bin/env bash
# Browser tests drive Debian's chromium (Playwright's own browser download does not work
# without internet). Install it when missing and we may; otherwise say what to do.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
    exit 0
fi
echo "chromium is missing: run 'sudo apt-get install -y chromium' (browser tests will fail)" >&2
exit 1
