#!/usr/bin/env bash
# The test bed: a Docker engine, a local registry on 127.0.0.1:5000 and the stand-in Fractalic
# image pushed to it.
#
#   scripts/dev-env.sh up      start what is missing (installs packages as root via apt-get),
#                              build/push the stand-in image and the test Caddy image
#                              (tests/proxy-image); prints PROXY_IMAGE=... and, as the last
#                              stdout line, STAND_IN_IMAGE=...
#                              and make the engine a single-node swarm manager (for the
#                              docker-swarm plugin) unless it is in a swarm already
#   scripts/dev-env.sh down    stop only what `up` started (by PID), nothing else; leave the
#                              swarm only if `up` initialised it
#   scripts/dev-env.sh status  what is running and who started it (exit 0 when daemon and
#                              registry answer)
#   scripts/dev-env.sh cluster ... a multi-node swarm of separate engines on this machine (see
#                              scripts/dev-env-cluster.sh: cluster up [N] | down | status ...)
#   scripts/dev-env.sh browser the headless browser the page test drives: Debian's chromium and
#                              chromium-driver, installed as root with apt-get only when missing
#                              (never downloaded from elsewhere); prints CHROMIUM=... CHROMEDRIVER=...
#
# State (pid files, logs, registry config and storage) lives in target/dev-env/.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE="$ROOT/target/dev-env"
CONTEXT="$ROOT/target/stand-in-image"
REGISTRY_HOST=127.0.0.1
REGISTRY_PORT=5000
REGISTRY="$REGISTRY_HOST:$REGISTRY_PORT"
REPO=fractalic-stand-in
IMAGE="$REGISTRY/$REPO:latest-production"
HASH_LABEL=org.fractalic.stand-in.hash
PACKAGES_HINT="docker.io docker-registry busybox-static"
export DOCKER_BUILDKIT=0

log() { printf 'dev-env: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

# poll SECONDS CMD...: run CMD every 0.2 s until it succeeds or SECONDS pass.
poll() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

have() { command -v "$1" >/dev/null 2>&1; }

daemon_answers() { have docker && timeout 15 docker version --format '{{.Server.Version}}' >/dev/null 2>&1; }

# http_get PATH: GET from the registry with bash's /dev/tcp; prints the raw reply.
http_get() {
	timeout 3 bash -c 'exec 3<>"/dev/tcp/$0/$1" || exit 1
printf "GET %s HTTP/1.0\r\nHost: %s:%s\r\n\r\n" "$2" "$0" "$1" >&3
cat <&3' "$REGISTRY_HOST" "$REGISTRY_PORT" "$1" 2>/dev/null
}

registry_answers() {
	local reply
	reply=$(http_get /v2/) || return 1
	[[ $reply == "HTTP/1."?" 200"* ]]
}

# alive NAME: the pid in $STATE/NAME.pid runs a process whose command line mentions NAME.
alive() {
	local file="$STATE/$1.pid" pid
	[[ -f $file ]] || return 1
	pid=$(<"$file")
	[[ $pid =~ ^[0-9]+$ ]] || return 1
	kill -0 "$pid" 2>/dev/null || return 1
	[[ $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) == *"$1"* ]]
}

# is_static FILE: (no `ldd | grep -q`: with pipefail an early grep exit can fail the pipe)
is_static() {
	local out
	out=$(LC_ALL=C ldd "$1" 2>&1 || true)
	[[ $out == *"not a dynamic executable"* || $out == *"statically linked"* ]]
}

find_busybox() {
	local bb
	for bb in "${BUSYBOX:-}" /bin/busybox /usr/bin/busybox /usr/local/bin/busybox; do
		[[ -n $bb && -x $bb ]] || continue
		if is_static "$bb"; then
			echo "$bb"
			return 0
		fi
	done
	return 1
}

# Installs the Debian packages that are missing for what has to be started.
ensure_packages() {
	local need_daemon=$1 need_registry=$2 missing=()
	if [[ $need_daemon == yes ]] && ! { have dockerd && have docker; }; then missing+=(docker.io); fi
	if [[ $need_registry == yes ]] && ! have docker-registry; then missing+=(docker-registry); fi
	find_busybox >/dev/null || missing+=(busybox-static)
	((${#missing[@]} == 0)) && return 0
	if [[ $(id -u) != 0 ]] || ! have apt-get; then
		die "missing: ${missing[*]}. This script installs them only as root with apt-get.
  Install them yourself (Debian/Ubuntu: sudo apt-get install $PACKAGES_HINT),
  make sure a Docker daemon runs (sudo systemctl start docker) and that you may use it
  (docker group), then run this again."
	fi
	log "installing ${missing[*]} with apt-get"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq >&2 || die "apt-get update failed"
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
}

start_dockerd() {
	if [[ -n ${DOCKER_HOST:-} && $DOCKER_HOST != unix:///var/run/docker.sock ]]; then
		die "DOCKER_HOST=$DOCKER_HOST does not answer; not starting a local daemon in its place"
	fi
	[[ $(id -u) == 0 ]] || die "no Docker daemon answers and only root can start one: sudo dockerd (or sudo systemctl start docker)"
	have dockerd || die "dockerd is not installed (apt-get install docker.io)"
	log "starting dockerd (log: $STATE/dockerd.log)"
	# setsid: a Ctrl-C in the terminal that ran `up` must not reach the daemon later;
	# 9>&-: the daemon must not inherit (and hold) our lock.
	setsid dockerd --pidfile "$STATE/dockerd-own.pid" >>"$STATE/dockerd.log" 2>&1 </dev/null 9>&- &
	echo $! >"$STATE/dockerd.pid"
	if ! poll 60 daemon_answers; then
		tail -n 20 "$STATE/dockerd.log" >&2 || true
		alive dockerd || die "dockerd exited (see $STATE/dockerd.log)"
		die "dockerd did not answer within 60 s (see $STATE/dockerd.log)"
	fi
	log "dockerd is up (pid $(<"$STATE/dockerd.pid"))"
}

start_registry() {
	have docker-registry || die "docker-registry is not installed (apt-get install docker-registry)"
	mkdir -p "$STATE/registry"
	cat >"$STATE/registry.yml" <<YAML
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $STATE/registry
  delete:
    enabled: true
http:
  addr: $REGISTRY
YAML
	log "starting docker-registry on $REGISTRY (log: $STATE/docker-registry.log)"
	setsid docker-registry serve "$STATE/registry.yml" >>"$STATE/docker-registry.log" 2>&1 </dev/null 9>&- &
	echo $! >"$STATE/docker-registry.pid"
	if ! poll 30 registry_answers; then
		tail -n 20 "$STATE/docker-registry.log" >&2 || true
		alive docker-registry || die "docker-registry exited (is $REGISTRY taken by something else?)"
		die "docker-registry did not answer within 30 s"
	fi
}

build_stand_in() {
	have cargo || die "cargo is not installed (https://rustup.rs)"
	local triple
	triple=$(rustc -vV | sed -n 's/^host: //p')
	log "building the static stand-in server ($triple)"
	(cd "$ROOT" && RUSTFLAGS="-C target-feature=+crt-static" CARGO_TARGET_DIR="$ROOT/target/stand-in" \
		cargo build --quiet --release -p fractalic-stand-in --target "$triple") >&2 ||
		die "cargo build of the stand-in failed"
	BIN="$ROOT/target/stand-in/$triple/release/fractalic-stand-in"
	is_static "$BIN" || die "$BIN is not statically linked"
}

ensure_image() {
	local busybox hash current
	busybox=$(find_busybox) || die "no statically linked busybox found (apt-get install busybox-static, or set BUSYBOX=)"
	rm -rf "$CONTEXT"
	mkdir -p "$CONTEXT"
	cp "$ROOT/tests/stand-in/Dockerfile" "$CONTEXT/Dockerfile"
	cp "$BIN" "$CONTEXT/fractalic-stand-in"
	cp "$busybox" "$CONTEXT/busybox"
	hash=$(cd "$CONTEXT" && sha256sum Dockerfile busybox fractalic-stand-in | sha256sum | cut -c1-64)
	current=$(docker image inspect --format "{{ index .Config.Labels \"$HASH_LABEL\" }}" "$IMAGE" 2>/dev/null || true)
	if [[ $current == "$hash" ]]; then
		log "image $IMAGE is up to date"
	else
		log "building $IMAGE (log: $STATE/build.log)"
		if ! timeout 600 docker build --label "$HASH_LABEL=$hash" -t "$IMAGE" "$CONTEXT" >"$STATE/build.log" 2>&1; then
			tail -n 20 "$STATE/build.log" >&2
			die "docker build failed"
		fi
	fi
	# Also under a tag named after the content, which is what the tests use: another checkout
	# (a second work tree, a CI run beside a session) that pushes its own stand-in to the
	# shared :latest-production tag cannot change the image this checkout tests against.
	PINNED="$REGISTRY/$REPO:src-${hash:0:16}"
	docker tag "$IMAGE" "$PINNED" || die "docker tag $IMAGE $PINNED failed"
	local tag
	for tag in "$IMAGE" "$PINNED"; do
		log "pushing $tag"
		timeout 300 docker push "$tag" >"$STATE/push.log" 2>&1 || {
			tail -n 20 "$STATE/push.log" >&2
			die "docker push failed"
		}
	done
	# The tests pull it: make sure that works now rather than in every test.
	timeout 300 docker pull "$PINNED" >"$STATE/pull.log" 2>&1 || {
		tail -n 20 "$STATE/pull.log" >&2
		die "docker pull $PINNED failed"
	}
	log "image $PINNED is in the registry and pullable"
}

# The test bed's Caddy image (tests/proxy-image): Debian's caddy package, downloaded (not
# installed) with apt-get, its binary and the libraries it links copied into a FROM scratch image
# with busybox. Tagged by content, like the stand-in. Sets PROXY_PINNED.
ensure_proxy_image() {
	local ctx="$ROOT/target/proxy-image" dl="$ROOT/target/dev-env/caddy-deb" deb busybox hash lib current
	busybox=$(find_busybox) || die "no statically linked busybox found (apt-get install busybox-static)"
	mkdir -p "$dl"
	deb=$(ls "$dl"/caddy_*.deb 2>/dev/null | head -n 1 || true)
	if [[ -z $deb ]]; then
		have apt-get || die "the proxy test image needs Debian's caddy package (apt-get download caddy)"
		log "downloading Debian's caddy package (not installing it)"
		(cd "$dl" && timeout 300 apt-get download caddy >&2 2>/dev/null) ||
			{ apt-get update -qq >&2 && (cd "$dl" && timeout 300 apt-get download caddy >&2); } ||
			die "apt-get download caddy failed"
		deb=$(ls "$dl"/caddy_*.deb | head -n 1)
	fi
	rm -rf "$ctx"
	mkdir -p "$ctx/rootfs/usr/bin" "$ctx/rootfs/bin" "$ctx/rootfs/etc/caddy" "$ctx/rootfs/data" "$ctx/rootfs/config" "$ctx/rootfs/tmp"
	dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$ctx" ./usr/bin/caddy
	mv "$ctx/usr/bin/caddy" "$ctx/rootfs/usr/bin/caddy"
	rm -rf "$ctx/usr"
	for lib in $(ldd "$ctx/rootfs/usr/bin/caddy" | grep -o '/[^ ]*'); do
		mkdir -p "$ctx/rootfs$(dirname "$lib")"
		cp -L "$lib" "$ctx/rootfs$lib"
	done
	cp "$busybox" "$ctx/rootfs/bin/busybox"
	printf 'root:x:0:0:root:/root:/bin/sh\n' >"$ctx/rootfs/etc/passwd"
	chmod 1777 "$ctx/rootfs/tmp"
	cp "$ROOT/tests/proxy-image/Dockerfile" "$ctx/Dockerfile"
	hash=$(cd "$ctx" && find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)
	PROXY_PINNED="$REGISTRY/fractalic-caddy:src-$hash"
	current=$(docker image inspect --format '{{.Id}}' "$PROXY_PINNED" 2>/dev/null || true)
	if [[ -z $current ]]; then
		log "building $PROXY_PINNED (log: $STATE/proxy-build.log)"
		timeout 600 docker build -t "$PROXY_PINNED" "$ctx" >"$STATE/proxy-build.log" 2>&1 || {
			tail -n 20 "$STATE/proxy-build.log" >&2
			die "docker build of the proxy image failed"
		}
		timeout 300 docker push "$PROXY_PINNED" >"$STATE/proxy-push.log" 2>&1 || {
			tail -n 20 "$STATE/proxy-push.log" >&2
			die "docker push $PROXY_PINNED failed"
		}
	else
		log "image $PROXY_PINNED is up to date"
	fi
}

swarm_state() { timeout 15 docker info --format '{{.Swarm.LocalNodeState}}' 2>/dev/null; }

# A single-node swarm for the docker-swarm plugin; remembered, so `down` leaves only its own.
ensure_swarm() {
	local state
	state=$(swarm_state) || die "docker info failed"
	if [[ $state == active ]]; then
		log "the engine is in a swarm already; reusing it"
		return 0
	fi
	log "initialising a single-node swarm (docker swarm init --advertise-addr 127.0.0.1)"
	timeout 60 docker swarm init --advertise-addr 127.0.0.1 >"$STATE/swarm.log" 2>&1 || {
		cat "$STATE/swarm.log" >&2
		die "docker swarm init failed"
	}
	touch "$STATE/swarm-initialised"
}

leave_swarm() {
	[[ -f $STATE/swarm-initialised ]] || return 0
	if daemon_answers && [[ $(swarm_state) == active ]]; then
		log "leaving the swarm that dev-env.sh up initialised"
		timeout 60 docker swarm leave --force >&2 || log "docker swarm leave failed"
	fi
	rm -f "$STATE/swarm-initialised"
}

cmd_up() {
	local need_daemon=no need_registry=no
	daemon_answers || need_daemon=yes
	registry_answers || need_registry=yes
	ensure_packages "$need_daemon" "$need_registry"
	if [[ $need_daemon == yes ]]; then
		daemon_answers || start_dockerd # a package install may have started it already
	else
		log "Docker daemon answers; reusing it"
	fi
	if [[ $need_registry == yes ]]; then
		registry_answers || start_registry
	else
		log "registry on $REGISTRY answers; reusing it"
	fi
	ensure_swarm
	build_stand_in
	ensure_image
	ensure_proxy_image
	echo "PROXY_IMAGE=$PROXY_PINNED"
	echo "STAND_IN_IMAGE=$PINNED"
}

# stop NAME: stop the process from $STATE/NAME.pid if it is still the one we started.
stop() {
	local name=$1 pid deadline
	if ! alive "$name"; then
		[[ -f $STATE/$name.pid ]] && log "$name: not running any more"
		rm -f "$STATE/$name.pid"
		return 0
	fi
	pid=$(<"$STATE/$name.pid")
	log "stopping $name (pid $pid)"
	kill -TERM "$pid" 2>/dev/null || true
	deadline=$((SECONDS + 30))
	while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.2; done
	if kill -0 "$pid" 2>/dev/null; then
		log "$name did not stop within 30 s; killing it"
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$STATE/$name.pid"
}

cmd_down() {
	leave_swarm
	if [[ ! -f $STATE/docker-registry.pid && ! -f $STATE/dockerd.pid ]]; then
		log "nothing was started by dev-env.sh up; nothing to stop"
		return 0
	fi
	stop docker-registry
	stop dockerd
}

cmd_status() {
	local ok=0 daemon=no who tags
	if alive dockerd; then who="started by dev-env.sh (pid $(<"$STATE/dockerd.pid"))"; else who="not started by dev-env.sh"; fi
	if daemon_answers; then
		echo "docker daemon: running, version $(docker version --format '{{.Server.Version}}' 2>/dev/null), $who"
		daemon=yes
	else
		echo "docker daemon: not answering ($who)"
		ok=1
	fi
	if alive docker-registry; then who="started by dev-env.sh (pid $(<"$STATE/docker-registry.pid"))"; else who="not started by dev-env.sh"; fi
	if registry_answers; then
		tags=$(http_get "/v2/$REPO/tags/list" | tail -n 1)
		echo "registry $REGISTRY: running, $who; $REPO: ${tags:-?}"
	else
		echo "registry $REGISTRY: not answering ($who)"
		ok=1
	fi
	if [[ $daemon == yes ]]; then
		if docker image inspect "$IMAGE" >/dev/null 2>&1; then
			echo "image $IMAGE: present locally"
		else
			echo "image $IMAGE: not present locally"
		fi
	fi
	return $ok
}

browser_path() { command -v chromium 2>/dev/null || command -v chromium-browser 2>/dev/null; }

cmd_browser() {
	if ! browser_path >/dev/null || ! have chromedriver; then
		if [[ $(id -u) != 0 ]] || ! have apt-get; then
			die "missing: chromium chromium-driver. This script installs them only as root with apt-get.
  Install them yourself (Debian: sudo apt-get install chromium chromium-driver), then run this again."
		fi
		log "installing chromium chromium-driver with apt-get"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq >&2 || die "apt-get update failed"
		apt-get install -y -qq --no-install-recommends chromium chromium-driver >&2 ||
			die "apt-get install chromium chromium-driver failed"
	fi
	local chromium
	chromium=$(browser_path) || die "chromium is not on PATH after the install"
	have chromedriver || die "chromedriver is not on PATH after the install"
	log "browser: $(timeout 30 "$chromium" --version 2>/dev/null || echo "$chromium"), $(timeout 30 chromedriver --version 2>/dev/null | cut -d' ' -f1-2)"
	echo "CHROMIUM=$chromium"
	echo "CHROMEDRIVER=$(command -v chromedriver)"
}

main() {
	local cmd=${1:-}
	case $cmd in
	up | down | status | browser) ;;
	cluster)
		shift
		exec "$ROOT/scripts/dev-env-cluster.sh" "$@"
		;;
	*)
		echo "usage: $0 up|down|status|browser|cluster ..." >&2
		exit 2
		;;
	esac
	mkdir -p "$STATE"
	# One dev-env.sh at a time: two concurrent `up`s must not start two registries.
	exec 9>"$STATE/dev-env.lock"
	flock -w 900 9 || die "another dev-env.sh holds $STATE/dev-env.lock"
	"cmd_$cmd"
}

main "$@"
