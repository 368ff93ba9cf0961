#!/usr/bin/env bash
# The fleet tests (tests/fleet/) put Debian's HAProxy in front of several gateway
# processes. Install it when missing and we may; otherwise say what to do.
set -euo pipefail
if command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ]; then
    exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
    apt-get -o DPkg::Lock::Timeout=600 update -qq
    # The tests start their own haproxy with deploy/haproxy.cfg; the package's service
    # is not needed (in a container without an init system it does not start anyway).
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends haproxy >/dev/null
    exit 0
fi
echo "haproxy is missing: run 'sudo apt-get install -y haproxy' (fleet tests will fail)" >&2
exit 1
