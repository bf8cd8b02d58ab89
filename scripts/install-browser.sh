#!/usr/bin/env bash
# The playground's browser tests (tests/browser/) drive Debian's headless Chromium through its chromedriver.
# Installs the two packages when either is missing (apt-get as root, or sudo without a password); when that is
# impossible it FAILS, loudly, so the browser tests are never skipped in silence.
set -euo pipefail

have() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }
die() {
	printf '\n!! install-browser FAILED: %s\n!! The browser tests need them: apt-get install chromium chromium-driver\n\n' "$*" >&2
	exit 1
}

have && exit 0
if [[ "$(id -u)" == 0 ]]; then
	as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
	as_root=(sudo -n)
else
	die "chromium or chromedriver is missing and this user cannot install packages"
fi
command -v apt-get >/dev/null 2>&1 || die "chromium or chromedriver is missing and there is no apt-get"
echo "== installing chromium and chromium-driver (Debian packages) for the browser tests" >&2
"${as_root[@]}" apt-get update -q || die "apt-get update failed"
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q --no-install-recommends chromium chromium-driver ||
	die "apt-get install chromium chromium-driver failed"
have || die "chromium or chromedriver still missing after apt-get install"
