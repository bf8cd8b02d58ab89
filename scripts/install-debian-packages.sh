#!/usr/bin/env bash
# Installs Debian packages that some tests need when a command they provide is missing (apt-get as root, or sudo
# without a password); when that is impossible it FAILS, loudly, so those tests are never skipped in silence.
#   usage: install-debian-packages.sh "WHAT NEEDS THEM" "COMMAND..." PACKAGE...
#   e.g.   install-debian-packages.sh "the browser tests" "chromium chromedriver" chromium chromium-driver
set -euo pipefail

(($# >= 3)) || { echo "usage: $0 'what needs them' 'command...' package..." >&2; exit 2; }
purpose=$1
read -r -a commands <<<"$2"
shift 2
packages=("$@")

die() {
	printf '\n!! installing %s FAILED: %s\n!! %s need them: apt-get install %s\n\n' \
		"${packages[*]}" "$*" "$purpose" "${packages[*]}" >&2
	exit 1
}
have() {
	local cmd
	for cmd in "${commands[@]}"; do command -v "$cmd" >/dev/null 2>&1 || return 1; done
}

have && exit 0
if [[ "$(id -u)" == 0 ]]; then
	as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
	as_root=(sudo -n)
else
	die "${commands[*]}: missing, and this user cannot install packages"
fi
command -v apt-get >/dev/null 2>&1 || die "${commands[*]}: missing, and there is no apt-get"
echo "== installing ${packages[*]} (Debian packages) for $purpose" >&2
"${as_root[@]}" apt-get update -q || die "apt-get update failed"
DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -q --no-install-recommends "${packages[@]}" ||
	die "apt-get install ${packages[*]} failed"
have || die "${commands[*]}: still missing after apt-get install"
