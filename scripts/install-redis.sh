#!/usr/bin/env bash
# The shared session store's tests (tests/integration/test_sessions_redis.py) start a real redis-server.
# Installs Debian's redis-server when it is missing (apt-get as root, or sudo without a password); when that is
# impossible it FAILS, loudly, so those tests are never skipped in silence.
set -euo pipefail

die() {
	printf '\n!! install-redis FAILED: %s\n!! The session-store tests need it: apt-get install redis-server\n\n' "$*" >&2
	exit 1
}

command -v redis-server >/dev/null 2>&1 && exit 0
if [[ "$(id -u)" == 0 ]]; then
	as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
	as_root=(sudo -n)
else
	die "redis-server is missing and this user cannot install packages"
fi
command -v apt-get >/dev/null 2>&1 || die "redis-server is missing and there is no apt-get"
echo "== installing redis-server (Debian package) for the session-store tests" >&2
"${as_root[@]}" apt-get update -q || die "apt-get update failed"
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q --no-install-recommends redis-server ||
	die "apt-get install redis-server failed"
command -v redis-server >/dev/null 2>&1 || die "redis-server still missing after apt-get install"
