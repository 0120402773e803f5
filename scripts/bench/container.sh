#!/usr/bin/env bash
# Benchmark section 9: the same deploy of the demo folder from inside a container vs from the
# host, interleaved in one run. The container is a CI job container as in the tests: FROM
# scratch, busybox, the docker CLI and the static binary, the host's socket mounted, on the
# default bridge network; the host side runs the same static binary.
#
#   scripts/bench/container.sh STATIC_BIN IMAGE [RUNS]     prints a markdown section
#
# Every container and image it makes is named bench-ct-<pid>-... and removed on exit.
set -euo pipefail

BIN=${1:?usage: container.sh STATIC_BIN IMAGE [RUNS]}
IMAGE=${2:?usage: container.sh STATIC_BIN IMAGE [RUNS]}
RUNS=${3:-5}
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY="python3 $ROOT/scripts/bench/bench.py"
RUN="bench-ct-$$"
JOB_IMAGE="$RUN-job:bench"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fractalic-bench-ct.XXXXXX")
DEMO="$ROOT/scripts/demo/hello-fractalic"

log() { printf 'bench/container: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
cleanup() {
	local rc=$? names
	names=$(docker ps -a --filter "name=$RUN-" --format '{{.Names}}' 2>/dev/null | grep "^$RUN-" || true)
	# shellcheck disable=SC2086
	[[ -n $names ]] && docker rm -f $names >/dev/null 2>&1
	docker image rm -f "$JOB_IMAGE" >/dev/null 2>&1 || true
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now() { echo "${EPOCHREALTIME/./}000"; }
ms() { $PY fmt-ms "$1"; }
med_ms() { $PY stats "$1" | awk '{printf "%.0f", $1/1e6}'; }

cli=$(command -v docker)
cli=$(readlink -f "$cli")
ldd_out=$(LC_ALL=C ldd "$cli" 2>&1 || true)
[[ $ldd_out == *"not a dynamic executable"* || $ldd_out == *"statically linked"* ]] ||
	for c in /usr/local/bin/docker /usr/bin/docker; do
		o=$(LC_ALL=C ldd "$c" 2>&1 || true)
		[[ $o == *"not a dynamic executable"* || $o == *"statically linked"* ]] && cli=$c && break
	done
busybox=/bin/busybox
[[ -x $busybox ]] || busybox=/usr/bin/busybox

ctx="$WORK/ctx"
mkdir -p "$ctx"
cp "$busybox" "$ctx/busybox"
cp "$cli" "$ctx/docker"
cp "$BIN" "$ctx/fractalic-publisher"
cat >"$ctx/Dockerfile" <<'DOCKERFILE'
FROM scratch
COPY busybox /bin/busybox
COPY docker /usr/local/bin/docker
COPY fractalic-publisher /usr/local/bin/fractalic-publisher
RUN ["/bin/busybox", "--install", "-s", "/bin"]
ENV PATH=/usr/local/bin:/bin
CMD ["sleep", "3600"]
DOCKERFILE
log "building the job image $JOB_IMAGE"
DOCKER_BUILDKIT=0 docker build -q -t "$JOB_IMAGE" "$ctx" >/dev/null 2>"$WORK/build.err" || {
	cat "$WORK/build.err" >&2
	die "docker build of the job image failed"
}
JOB="$RUN-job"
docker run -d --name "$JOB" -v /var/run/docker.sock:/var/run/docker.sock -v "$DEMO:/src/hello-fractalic:ro" "$JOB_IMAGE" >/dev/null

# deploy WHERE NAME: one deploy from the host or the job container; its ns in DEPLOY_NS.
deploy() {
	local where=$1 name=$2 t0 t1 rc=0
	local args=(deploy docker-registry --script-name hello --name "$name" --image "$IMAGE" --pull missing --json --quiet)
	t0=$(now)
	if [[ $where == host ]]; then
		"$BIN" "${args[@]}" --script-folder "$DEMO" >"$WORK/out" 2>"$WORK/err" || rc=$?
	else
		docker exec "$JOB" fractalic-publisher "${args[@]}" --script-folder /src/hello-fractalic >"$WORK/out" 2>"$WORK/err" || rc=$?
	fi
	t1=$(now)
	((rc == 0)) || {
		cat "$WORK/out" "$WORK/err" >&2
		die "deploy of $name from the $where failed (exit $rc)"
	}
	DEPLOY_NS=$((t1 - t0))
	docker rm -f "$name" >/dev/null
}

log "warm-up"
deploy host "$RUN-warm-h"
deploy container "$RUN-warm-c"
: >"$WORK/host.ns"
: >"$WORK/container.ns"
: >"$WORK/exec.ns"
log "$RUNS deploys each, interleaved"
for i in $(seq "$RUNS"); do
	deploy host "$RUN-h-$i"
	echo "$DEPLOY_NS" >>"$WORK/host.ns"
	deploy container "$RUN-c-$i"
	echo "$DEPLOY_NS" >>"$WORK/container.ns"
	t0=$(now)
	docker exec "$JOB" true
	echo $(($(now) - t0)) >>"$WORK/exec.ns"
done
H=$(med_ms "$WORK/host.ns")
C=$(med_ms "$WORK/container.ns")
E=$(med_ms "$WORK/exec.ns")
RATIO=$(awk -v c="$C" -v h="$H" 'BEGIN{printf "%.2f", c/h}')
RATIO_NET=$(awk -v c="$C" -v h="$H" -v e="$E" 'BEGIN{printf "%.2f", (c-e)/h}')
VERDICT=$(awk -v r="$RATIO" 'BEGIN{print (r <= 1.2) ? "met" : "**missed**"}')

cat <<EOF

### 9. Deploy from inside a container vs from the host (demo folder, --pull missing; $RUNS runs each, interleaved)

The same static binary ($(stat -c %s "$BIN") bytes) on both sides; the container is a CI job
container (\`FROM scratch\`, busybox, docker CLI, socket mounted, default bridge network), and
its deploys probe the sibling at its bridge address.

| from | deploy |
|---|---|
| the host | $(ms "$WORK/host.ns") |
| the job container (\`docker exec JOB fractalic-publisher deploy ...\`) | $(ms "$WORK/container.ns") |
| of which \`docker exec JOB true\` alone | $(ms "$WORK/exec.ns") |
| ratio of medians (without the exec) | **${RATIO}x** (${RATIO_NET}x); goal <= 1.2x: $VERDICT |
EOF
