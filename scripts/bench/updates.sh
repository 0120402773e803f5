#!/usr/bin/env bash
# Update benchmarks (issue 11), run by scripts/bench.sh and runnable alone:
#   scripts/bench/updates.sh BIN IMAGE [RUNS]
# A script-only update of the demo folder (in place, no restart) and a restart-needing one
# (--env changes: a new container), each under a poller that hits /health and /execute every
# 20 ms. Prints a markdown section on stdout; removes every container it made.
set -euo pipefail
BIN=$1
IMAGE=$2
RUNS=${3:-5}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY="python3 $HERE/bench.py"
DEMO="$HERE/../demo/hello-fractalic"
NAME="bench-upd-$$"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fractalic-bench-upd.XXXXXX")
cleanup() {
	local rc=$?
	[[ -n ${POLL_PID:-} ]] && kill "$POLL_PID" 2>/dev/null
	docker ps -aq --filter "name=^$NAME" | xargs -r docker rm -f >/dev/null 2>&1 || true
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
now() { echo "${EPOCHREALTIME/./}000"; }
log() { printf 'bench: %s\n' "$*" >&2; }

cp -r "$DEMO" "$WORK/hello"
deploy() { "$BIN" deploy docker-registry --script-name hello --script-folder "$WORK/hello" --name "$NAME" \
	--image "$IMAGE" --pull missing --json --quiet "$@"; }
deploy >"$WORK/first.json"
URL=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$WORK/first.json")

poll_start() {
	rm -f "$WORK/stop"
	$PY poll "$URL" /payload/hello/hello.md "$WORK/$1.poll" "$WORK/stop" &
	POLL_PID=$!
	sleep 0.3
}
poll_stop() {
	sleep 0.3
	: >"$WORK/stop"
	wait "$POLL_PID" || true
	POLL_PID=
}

log "updates: $RUNS script-only updates (in place) under a 20 ms poller, interleaved with the floor"
: >"$WORK/inplace.ns"
: >"$WORK/floor.ns"
poll_start inplace
for i in $(seq "$RUNS"); do
	# The floor: the two docker calls an in-place update makes one after the other, bare (its
	# `docker inspect` runs beside the first).
	t0=$(now)
	docker exec "$NAME" true
	docker exec -u 0 "$NAME" true
	t1=$(now)
	echo $((t1 - t0)) >>"$WORK/floor.ns"
	printf '\nbench-marker-%s\n' "$i" >>"$WORK/hello/hello.md"
	t0=$(now)
	deploy >"$WORK/u.json"
	t1=$(now)
	grep -q '"kind":"in-place"' "$WORK/u.json" || { cat "$WORK/u.json" >&2; exit 1; }
	echo $((t1 - t0)) >>"$WORK/inplace.ns"
done
poll_stop
log "updates: a no-change deploy"
: >"$WORK/none.ns"
for i in $(seq "$RUNS"); do
	t0=$(now)
	deploy >"$WORK/u.json"
	t1=$(now)
	grep -q '"kind":"none"' "$WORK/u.json" || { cat "$WORK/u.json" >&2; exit 1; }
	echo $((t1 - t0)) >>"$WORK/none.ns"
done
log "updates: 3 restart-needing updates (--env) under a 20 ms poller"
: >"$WORK/container.ns"
: >"$WORK/downtime.ms"
poll_start container
for i in 1 2 3; do
	t0=$(now)
	deploy --env "BENCH_RUN=$i" >"$WORK/u.json"
	t1=$(now)
	grep -q '"kind":"container"' "$WORK/u.json" || { cat "$WORK/u.json" >&2; exit 1; }
	echo $((t1 - t0)) >>"$WORK/container.ns"
	python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["details"]["update"]["downtime_ms"])' "$WORK/u.json" >>"$WORK/downtime.ms"
done
poll_stop

rounds() { wc -l <"$WORK/$1.poll"; }
failed() { awk '$2 != "ok"' "$WORK/$1.poll" | wc -l; }
# The longest stretch without a good answer, in ms.
gap() { awk 'BEGIN{m=0} $2=="ok"{ if (last) { d=($1-last)/1e6; if (d>m) m=d }; last=$1 } END{printf "%.0f", m}' "$WORK/$1.poll"; }
# Markers must never go back: a request sees the old or the new release, never an older one.
backwards() { awk '$2=="ok"{ n=$3; sub(/.*-/, "", n); if (n ~ /^[0-9]+$/) { if (n+0 < last+0) b++; last=n } } END{print b+0}' "$WORK/inplace.poll"; }
IN=$($PY stats "$WORK/inplace.ns" | awk '{printf "%.0f", $1/1e6}')
cat <<EOT

### 8. Updates (demo folder; --pull missing; poller: GET /health + POST /execute every 20 ms)

| measure | result | goal | verdict |
|---|---|---|---|
| script-only update, in place (deploy process start to exit, $RUNS runs) | $($PY fmt-ms "$WORK/inplace.ns") | < 300 ms | $(awk -v v="$IN" 'BEGIN{print (v < 300) ? "met" : "**missed**"}') |
| floor: 2 x \`docker exec NAME true\` (the calls an in-place update makes in sequence; same poller, interleaved) | $($PY fmt-ms "$WORK/floor.ns") | | |
| requests failed during those updates | $(failed inplace) of $(rounds inplace) | 0 | $( (($(failed inplace) == 0)) && echo met || echo "**missed**") |
| requests that saw an older release after a newer one | $(backwards) | 0 | $( (($(backwards) == 0)) && echo met || echo "**missed**") |
| no-change deploy (nothing touched) | $($PY fmt-ms "$WORK/none.ns") | | |
| restart-needing update (--env), new container (3 runs) | $($PY fmt-ms "$WORK/container.ns") | | |
| requests failed during those | $(failed container) of $(rounds container); longest gap without an answer $(gap container) ms; the tool's own downtime figure (old stopped to new healthy): $(sort -n "$WORK/downtime.ms" | tr '\n' ' ')ms | old serves until the new one is proven | see docs/updates.md |
EOT
