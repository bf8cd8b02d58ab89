#!/bin/sh
# The load balancer's entrypoint: nginx in the foreground, reloaded when the addresses behind `fws` change.
#
# nginx.conf keeps connections to the replicas alive through an `upstream` block, and such a block resolves
# `fws` only when nginx loads its configuration. Replicas come and go (`--scale`, a restart with a new
# address, a stopped one), so this asks Docker's DNS every 2 s and reloads nginx (gracefully: requests in
# flight finish on the old workers) when the answer changed. SIGTERM stops nginx gracefully and exits 0.
set -u

addresses() {
	getent ahostsv4 fws | awk '{print $1}' | sort -u
}

nginx -g 'daemon off;' &
nginx_pid=$!
trap 'kill -QUIT "$nginx_pid" 2>/dev/null; wait "$nginx_pid"; exit 0' TERM INT QUIT

known=$(addresses)
while kill -0 "$nginx_pid" 2>/dev/null; do
	sleep 2 &
	wait $! # (a trap runs at once, not after the sleep)
	now=$(addresses)
	if [ -n "$now" ] && [ "$now" != "$known" ]; then
		known=$now
		echo "run.sh: replicas of fws are now: $(echo "$now" | tr '\n' ' '); reloading nginx" >&2
		nginx -s reload
	fi
done
wait "$nginx_pid"
