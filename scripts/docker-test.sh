#!/usr/bin/env bash
# End-to-end test of the Docker deployment, for real: build the image, `docker-compose up` two replicas behind
# the nginx load balancer, send requests through it on 127.0.0.1, stop a replica, `docker-compose down`.
#
# No container registry is reachable from CI or the dev machines, so `FROM python:3.11-slim` / `nginx` cannot be
# pulled. This script builds its own TEST-ONLY base images with debootstrap from Debian's packages (python3 for
# the service, nginx for the load balancer), imports them with `docker import` and passes them to the build as
# `--build-arg BASE_IMAGE=...`. They are cached in the daemon's image store (tag carries a recipe version), so
# only the first run pays for them. The product Dockerfile keeps its public default base.
#
# When no daemon is running it installs docker.io / docker-compose / debootstrap with apt (root) and starts
# dockerd itself, and stops only that daemon at the end. If docker truly cannot run it FAILS, loudly.
#
# Usage: scripts/docker-test.sh [all|bases|gpu|mirror]
#   all (default)  the end-to-end test (tests/deploy/test_docker_compose.py)
#   bases          only the daemon and the cached base images
#   gpu            build the ONNXRUNTIME=gpu image and check its CUDA provider's libraries (no GPU needed;
#                  downloads ~2.5 GB, so not part of `all`)
#   mirror         print the Debian mirror the base images are built from, and exit
# Environment:
#   DOCKERD=/path/to/dockerd    the daemon to start when none runs (default /usr/sbin/dockerd)
#   FWS_DOCKER_KEEP=1           leave a daemon this script started running
#   FWS_DOCKER_ONNXRUNTIME=cpu  which onnxruntime build the tested image gets (cpu|gpu)
#   DEBIAN_MIRROR=...           the mirror debootstrap uses (default: this machine's apt sources; no other)
set -euo pipefail
cd "$(dirname "$0")/.."

RECIPE_VERSION=1 # bump when the base-image recipes below change: a new tag forces a rebuild
SUITE=bookworm
PY_BASE="local/fws-python-base:${SUITE}-r${RECIPE_VERSION}"
LB_BASE="local/fws-nginx-base:${SUITE}-r${RECIPE_VERSION}"
REDIS_BASE="local/fws-redis-base:${SUITE}-r${RECIPE_VERSION}"
APP_IMAGE="fastweights-serve:docker-test"
ONNXRUNTIME="${FWS_DOCKER_ONNXRUNTIME:-cpu}"
PYTHON="${PYTHON:-.venv/bin/python}"
WORK="$(mktemp -d /tmp/fws-docker-test.XXXXXX)"
STARTED_DOCKERD_PID=""
# The preinstalled docker client is newer than Debian's daemon; BuildKit would need buildx, which is absent.
export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0

log() { printf '== docker-test: %s\n' "$*" >&2; }
die() {
	printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n' >&2
	printf '!! docker-test FAILED: %s\n' "$*" >&2
	printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n' >&2
	exit 1
}

cleanup() {
	local rc=$?
	if [[ -n "$STARTED_DOCKERD_PID" && "${FWS_DOCKER_KEEP:-0}" != 1 ]]; then
		log "stopping the dockerd this script started (pid $STARTED_DOCKERD_PID)"
		kill "$STARTED_DOCKERD_PID" 2>/dev/null || true
		for _ in $(seq 1 40); do kill -0 "$STARTED_DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
		kill -0 "$STARTED_DOCKERD_PID" 2>/dev/null && log "WARNING: dockerd $STARTED_DOCKERD_PID still running"
	fi
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT

as_root() {
	if [[ $(id -u) -eq 0 ]]; then "$@"; elif command -v sudo >/dev/null; then sudo -n "$@"; else return 1; fi
}

ensure_tools() {
	local missing=()
	command -v dockerd >/dev/null || missing+=(docker.io)
	command -v docker-compose >/dev/null || missing+=(docker-compose)
	command -v debootstrap >/dev/null || missing+=(debootstrap)
	[[ ${#missing[@]} -eq 0 ]] && return 0
	log "installing ${missing[*]} with apt"
	as_root apt-get update -qq || die "apt-get update failed (root needed to install ${missing[*]})"
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >"$WORK/apt.log" 2>&1 ||
		{ tail -20 "$WORK/apt.log" >&2; die "could not install ${missing[*]}"; }
}

ensure_daemon() {
	if docker info >/dev/null 2>&1; then
		log "using the running docker daemon ($(docker info -f '{{.ServerVersion}}'))"
		return 0
	fi
	log "no docker daemon answers: starting dockerd"
	local logfile=/tmp/fws-dockerd.log
	# A daemon killed without cleanup (a session ending) leaves its pid files; with no dockerd/containerd
	# running they are stale, and dockerd refuses to start if their pid now names another process.
	if ! pgrep -x dockerd >/dev/null; then
		as_root rm -f /var/run/docker.pid
		pgrep -x containerd >/dev/null || as_root rm -f /var/run/docker/containerd/containerd.pid
	fi
	[[ $(id -u) -eq 0 ]] || die "no docker daemon is running and only root can start one (run as root or start dockerd)"
	# setsid: the daemon must not get this script's terminal signals. Its pid (from its own pid file) is kept
	# to stop only this daemon at the end.
	setsid "${DOCKERD:-/usr/sbin/dockerd}" >"$logfile" 2>&1 </dev/null &
	local launcher=$!
	for _ in $(seq 1 60); do
		docker info >/dev/null 2>&1 && break
		kill -0 "$launcher" 2>/dev/null || break
		sleep 0.5
	done
	if ! docker info >/dev/null 2>&1; then
		tail -30 "$logfile" >&2 || true
		die "dockerd did not start (log: $logfile): docker cannot run on this machine"
	fi
	STARTED_DOCKERD_PID=$(cat /var/run/docker.pid 2>/dev/null || echo "$launcher")
	log "dockerd $(docker info -f '{{.ServerVersion}}') started (pid $STARTED_DOCKERD_PID)"
}

# The Debian mirror debootstrap uses: DEBIAN_MIRROR, else the first non-security `URIs:` (deb822) or `deb`
# line of this machine's apt sources (what apt reaches here). No built-in address: a machine whose apt knows
# no mirror fails clearly instead of trying one that may not be reachable.
APT_SOURCES_LIST="${APT_SOURCES_LIST:-/etc/apt/sources.list}"
APT_SOURCES_DIR="${APT_SOURCES_DIR:-/etc/apt/sources.list.d}"
debian_mirror() {
	if [[ -n "${DEBIAN_MIRROR:-}" ]]; then
		echo "$DEBIAN_MIRROR"
		return
	fi
	local uri
	uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' "$APT_SOURCES_DIR"/*.sources 2>/dev/null |
		grep -v security | head -1 || true)
	if [[ -z "$uri" ]]; then # one-line format, options such as [arch=amd64 signed-by=...] skipped
		uri=$(sed -n 's/^deb[[:space:]]\+\(\[[^]]*\][[:space:]]\+\)\?\([^[:space:]]\+\).*/\2/p' \
			"$APT_SOURCES_LIST" "$APT_SOURCES_DIR"/*.list 2>/dev/null | grep -v security | head -1 || true)
	fi
	[[ -n "$uri" ]] || return 1
	echo "$uri"
}

# debootstrap a minimal Debian with the given packages into $1, trust the host's extra CAs (the TLS proxy here
# re-signs package downloads), trim docs and caches.
bootstrap_root() {
	local root=$1 include=$2 mirror
	mirror=$(debian_mirror) ||
		die "no Debian mirror: apt's sources ($APT_SOURCES_LIST, $APT_SOURCES_DIR/*.sources) name none; set DEBIAN_MIRROR=<url>"
	log "debootstrap $SUITE (+$include) from $mirror"
	as_root debootstrap --variant=minbase --include="$include" "$SUITE" "$root" "$mirror" >"$WORK/debootstrap.log" 2>&1 ||
		{ tail -30 "$WORK/debootstrap.log" >&2; die "debootstrap failed"; }
	if [[ -d "$root/usr/local/share/ca-certificates" ]] && compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
		as_root cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
		as_root chroot "$root" update-ca-certificates >/dev/null 2>&1 || true
	fi
	as_root rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
		"$root"/usr/share/locale/* "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/* \
		"$root"/var/cache/debconf/*-old "$root"/var/log/*.log
}

ensure_python_base() {
	if docker image inspect "$PY_BASE" >/dev/null 2>&1; then
		log "base image $PY_BASE: cached"
		return
	fi
	local root="$WORK/python-root" t0=$SECONDS
	bootstrap_root "$root" python3,python3-venv,ca-certificates
	# `docker import` keeps no ENV/CMD: give them here. The CA variables make pip (inside the venv the product
	# Dockerfile creates) trust the re-signing proxy; they exist only in this test base.
	local ca=/etc/ssl/certs/ca-certificates.crt
	as_root tar -C "$root" -c . | docker import \
		--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'ENV LANG=C.UTF-8' \
		--change "ENV PIP_CERT=$ca SSL_CERT_FILE=$ca REQUESTS_CA_BUNDLE=$ca" \
		--change 'CMD ["python3"]' - "$PY_BASE" >/dev/null
	as_root rm -rf "$root"
	log "built $PY_BASE in $((SECONDS - t0)) s ($(image_size "$PY_BASE"))"
}

ensure_lb_base() {
	if docker image inspect "$LB_BASE" >/dev/null 2>&1; then
		log "base image $LB_BASE: cached"
		return
	fi
	local root="$WORK/nginx-root" t0=$SECONDS
	bootstrap_root "$root" nginx-light
	as_root tar -C "$root" -c . | docker import \
		--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'CMD ["nginx", "-g", "daemon off;"]' - "$LB_BASE" >/dev/null
	as_root rm -rf "$root"
	log "built $LB_BASE in $((SECONDS - t0)) s ($(image_size "$LB_BASE"))"
}

ensure_redis_base() {
	if docker image inspect "$REDIS_BASE" >/dev/null 2>&1; then
		log "base image $REDIS_BASE: cached"
		return
	fi
	local root="$WORK/redis-root" t0=$SECONDS
	bootstrap_root "$root" redis-server
	as_root tar -C "$root" -c . | docker import \
		--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
		--change 'CMD ["redis-server"]' - "$REDIS_BASE" >/dev/null
	as_root rm -rf "$root"
	log "built $REDIS_BASE in $((SECONDS - t0)) s ($(image_size "$REDIS_BASE"))"
}

image_size() {
	docker image inspect -f '{{.Size}}' "$1" | awk '{printf "%.0f MB", $1 / 1e6}'
}

build_app_image() {
	local t0=$SECONDS
	log "docker build $APP_IMAGE (BASE_IMAGE=$PY_BASE, ONNXRUNTIME=$ONNXRUNTIME)"
	local args=(--build-arg "BASE_IMAGE=$PY_BASE" --build-arg "ONNXRUNTIME=$ONNXRUNTIME")
	# The build stage gets a tag too (the second build reuses its layers): it stays the cache for the next
	# run, while the images earlier runs left untagged can be pruned without losing that cache.
	{ docker build "${args[@]}" --target build -t "$APP_IMAGE-build" . &&
		docker build "${args[@]}" -t "$APP_IMAGE" .; } >"$WORK/build.log" 2>&1 ||
		{ tail -40 "$WORK/build.log" >&2; die "docker build failed"; }
	log "built $APP_IMAGE in $((SECONDS - t0)) s ($(image_size "$APP_IMAGE"))"
	docker image prune -f --filter "label=io.fastweights.stage=build" >/dev/null || true
	docker image prune -f --filter "label=org.opencontainers.image.title=fastweights-serve" >/dev/null || true
}

main() {
	local t0=$SECONDS
	[[ -d model_repository ]] || die "model_repository/ is missing: the image bundles it (make model)"
	ensure_tools
	ensure_daemon
	command -v docker-compose >/dev/null || die "docker-compose is not installed"
	ensure_python_base
	ensure_lb_base
	ensure_redis_base
	build_app_image
	log "running the end-to-end tests (tests/deploy, marker docker)"
	FWS_DOCKER_IMAGE="$APP_IMAGE" FWS_DOCKER_LB_IMAGE="$LB_BASE" FWS_DOCKER_REDIS_IMAGE="$REDIS_BASE" \
		"$PYTHON" -m pytest tests/deploy -m docker -p no:cacheprovider --durations=0 -v ||
		die "end-to-end docker tests failed (see above)"
	log "done in $((SECONDS - t0)) s; image sizes: $APP_IMAGE $(image_size "$APP_IMAGE"), $PY_BASE $(image_size "$PY_BASE"), $LB_BASE $(image_size "$LB_BASE")"
}

# The GPU image (ONNXRUNTIME=gpu, ~2.8 GB: NVIDIA's CUDA/cuDNN wheels) on a machine without a GPU: it builds,
# the CUDA execution provider is compiled in, and every library it links resolves inside the image except the
# driver's libcuda.so.1, which the NVIDIA container toolkit mounts at run time. Not part of `all` (download size).
gpu_check() {
	local image="fastweights-serve:docker-test-gpu" t0=$SECONDS out
	log "docker build $image (BASE_IMAGE=$PY_BASE, ONNXRUNTIME=gpu)"
	docker build --build-arg "BASE_IMAGE=$PY_BASE" --build-arg ONNXRUNTIME=gpu -t "$image" . >"$WORK/build-gpu.log" 2>&1 ||
		{ tail -40 "$WORK/build-gpu.log" >&2; die "docker build (gpu) failed"; }
	log "built $image in $((SECONDS - t0)) s ($(image_size "$image"))"
	out=$(docker run --rm --entrypoint sh "$image" -c '
		python -c "import onnxruntime as o; assert \"CUDAExecutionProvider\" in o.get_available_providers(); print(o.__version__)" &&
		ldd "$(find /opt/fws -name libonnxruntime_providers_cuda.so)" | grep "not found" || true') ||
		die "onnxruntime-gpu in $image has no CUDA execution provider"
	log "onnxruntime-gpu $(echo "$out" | head -1); unresolved libraries: $(echo "$out" | tail -n +2 | awk '{print $1}' | xargs)"
	[[ "$(echo "$out" | tail -n +2 | awk '{print $1}' | xargs)" == "libcuda.so.1" ]] ||
		die "the CUDA provider links libraries missing from $image (only libcuda.so.1 may come from the host)"
}

case "${1:-all}" in
all) main ;;
bases) # only prepare the daemon and the cached base images (e.g. ahead of time)
	ensure_tools
	ensure_daemon
	ensure_python_base
	ensure_lb_base
	;;
gpu)
	ensure_tools
	ensure_daemon
	ensure_python_base
	gpu_check
	;;
mirror) # print the Debian mirror the base images would be built from (nothing else is done)
	debian_mirror || die "no Debian mirror: apt's sources ($APT_SOURCES_LIST, $APT_SOURCES_DIR/*.sources) name none; set DEBIAN_MIRROR=<url>"
	;;
*) die "usage: $0 [all|bases|gpu|mirror]" ;;
esac
