#!/usr/bin/env bash
# Browser tests drive Debian's chromium (Playwright's own browser download does not work
# without internet) and take screenshots of Chinese pages, which need CJK fonts
# (fonts-noto-cjk). Install what is missing when we may; otherwise say what to do.
set -euo pipefail
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -d /usr/share/fonts/opentype/noto ] && ls /usr/share/fonts/opentype/noto | grep -qi cjk \
    || missing+=(fonts-noto-cjk)
if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    exit 0
fi
echo "missing: ${missing[*]}: run 'sudo apt-get install -y ${missing[*]}' (browser tests will fail)" >&2
exit 1
