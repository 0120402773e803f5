#!/usr/bin/env bash
# Front proxy benchmarks (issue 19), run by `scripts/bench.sh proxy` and runnable alone:
#   FRACTALIC_PUBLISHER_PROXY_IMAGE=IMAGE scripts/bench/proxy.sh BIN IMAGE [RUNS]
# 1. The proxy's overhead on loopback: GET /health and POST /execute of the demo script, one
#    keep-alive client, sequential, direct to the container's address on the proxy network vs
#    through the proxy's port (interleaved rounds); p50 and p99 of each and the difference;
#    requests per second with 4 keep-alive clients, direct vs through the proxy.
# 2. An image change of a proxied deployment (RUNS times, alternating two image ids) under a
#    poller (GET /health + POST /execute every 20 ms): end-to-end deploy time vs the floor, the
#    new container's own start (docker create + cp + start + first /health 200 at its address,
#    bare, interleaved); failed requests.
# Prints a markdown section on stdout; removes what it made (and the proxy, when nothing else
# uses it).
set -euo pipefail
BIN=$1
IMAGE=$2
RUNS=${3:-5}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PY="python3 $HERE/bench.py"
DEMO="$HERE/../demo/hello-fractalic"
NAME="bench-px-$$"
NET=fractalic-publisher
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fractalic-bench-px.XXXXXX")
TAG="bench-px-upgrade:$$"
N=${BENCH_PROXY_REQUESTS:-2000}
cleanup() {
	local rc=$?
	[[ -n ${POLL_PID:-} ]] && kill "$POLL_PID" 2>/dev/null
	"$BIN" rm --force "$NAME" >/dev/null 2>&1 || true
	docker ps -aq --filter "name=^$NAME" | xargs -r docker rm -f >/dev/null 2>&1 || true
	docker rmi -f "$TAG" >/dev/null 2>&1 || true
	"$BIN" proxy down >/dev/null 2>&1 || true
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
now() { echo "${EPOCHREALTIME/./}000"; }
log() { printf 'bench: %s\n' "$*" >&2; }
[[ -n ${FRACTALIC_PUBLISHER_PROXY_IMAGE:-} ]] || log "FRACTALIC_PUBLISHER_PROXY_IMAGE is not set: the proxy is made from caddy:2"

cp -r "$DEMO" "$WORK/hello"
deploy() { "$BIN" deploy docker-registry --script-name hello --script-folder "$WORK/hello" --name "$NAME" \
	--pull missing --json --quiet "$@"; }
log "proxy: deploying $NAME behind the proxy"
deploy --image "$IMAGE" --proxy >"$WORK/first.json"
URL=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["url"])' "$WORK/first.json")
URL=${URL/localhost/127.0.0.1}
ip_of() { docker inspect --format "{{(index .NetworkSettings.Networks \"$NET\").IPAddress}}" "$1"; }
DIRECT="http://$(ip_of "$NAME"):8001"
log "proxy: $URL -> $DIRECT"

# ---- 1. overhead ----
for what in health execute; do
	: >"$WORK/$what.direct"
	: >"$WORK/$what.proxy"
done
for round in 1 2; do
	for side in direct proxy; do
		base=$DIRECT
		[[ $side == proxy ]] && base=$URL
		log "proxy: latency round $round, $side ($N x GET /health, $((N / 4)) x POST /execute)"
		$PY latency "$base" GET /health $((N / 2)) >>"$WORK/health.$side"
		$PY latency "$base" POST /execute $((N / 8)) >>"$WORK/execute.$side"
	done
done
pcts() { $PY pct "$WORK/$1" 50 99; }
row() {
	local what=$1 label=$2 d p
	read -r d50 d99 <<<"$(pcts "$what.direct")"
	read -r p50 p99 <<<"$(pcts "$what.proxy")"
	d=$(awk -v a="$p50" -v b="$d50" 'BEGIN{printf "%.3f", a-b}')
	p=$(awk -v a="$p99" -v b="$d99" 'BEGIN{printf "%.3f", a-b}')
	local verdict
	verdict=$(awk -v v="$d" 'BEGIN{print (v < 1) ? "met" : "**missed**"}')
	echo "| $label | $d50 / $d99 | $p50 / $p99 | **$d** / $p | < 1 ms p50 | $verdict |"
}
log "proxy: requests per second (4 clients, 3 s each side)"
read -r RPS_HD FAIL_HD <<<"$($PY rps "$DIRECT" GET /health 4 3)"
read -r RPS_HP FAIL_HP <<<"$($PY rps "$URL" GET /health 4 3)"
read -r RPS_ED FAIL_ED <<<"$($PY rps "$DIRECT" POST /execute 4 3)"
read -r RPS_EP FAIL_EP <<<"$($PY rps "$URL" POST /execute 4 3)"

# ---- 2. image change under a poller vs the new container's own start ----
c=$(docker create --name "$NAME-img" "$IMAGE")
docker commit --change "LABEL bench-px-upgrade=$$" "$NAME-img" "$TAG" >/dev/null
docker rm -f "$c" >/dev/null
$PY tar "$WORK/hello" hello "$WORK/floor.tar" 1000 1000
floor_once() {
	local name="$NAME-floor" t0 t1 ip
	docker rm -f "$name" >/dev/null 2>&1 || true
	t0=$(now)
	docker create --name "$name" --network "$NET" "$1" >/dev/null
	docker cp - "$name:/" <"$WORK/floor.tar"
	docker start "$name" >/dev/null
	ip=$(ip_of "$name")
	rm -f "$WORK/seen"
	$PY watch "http://$ip:8001/health" "$WORK/seen" 60
	t1=$(now)
	[[ -s $WORK/seen ]] || { log "floor: $name never answered"; exit 1; }
	echo $((t1 - t0)) >>"$WORK/floor.ns"
	docker rm -f "$name" >/dev/null
}
: >"$WORK/image.ns"
: >"$WORK/floor.ns"
: >"$WORK/elapsed.ms"
rm -f "$WORK/stop"
$PY poll "$URL" /payload/hello/hello.md "$WORK/image.poll" "$WORK/stop" &
POLL_PID=$!
sleep 0.3
log "proxy: $RUNS image changes under a 20 ms poller, interleaved with the floor"
for i in $(seq "$RUNS"); do
	img=$TAG
	((i % 2 == 0)) && img=$IMAGE
	floor_once "$img"
	t0=$(now)
	echo "$(date +%s%N) deploy-start $i" >>"$WORK/marks"
	deploy --image "$img" >"$WORK/u.json" || { cat "$WORK/u.json" >&2; log "the image change $i failed"; exit 1; }
	echo "$(date +%s%N) deploy-end $i" >>"$WORK/marks"
	t1=$(now)
	grep -q '"kind":"container"' "$WORK/u.json" || { cat "$WORK/u.json" >&2; exit 1; }
	echo $((t1 - t0)) >>"$WORK/image.ns"
done
sleep 0.3
: >"$WORK/stop"
wait "$POLL_PID" || true
POLL_PID=
ROUNDS=$(wc -l <"$WORK/image.poll")
FAILED=$(awk '$2 != "ok"' "$WORK/image.poll" | wc -l)
KINDS=$(awk '$2 != "ok" {print $2}' "$WORK/image.poll" | sort | uniq -c | awk '{printf "%s%s x %s", sep, $1, $2; sep=", "}')
[[ -n $KINDS ]] && KINDS=" ($KINDS)"
mkdir -p "$HERE/../../target/bench" && cp "$WORK/image.poll" "$HERE/../../target/bench/proxy-image.poll"
cp "$WORK/marks" "$HERE/../../target/bench/proxy-image.marks"
IMG_MS=$($PY stats "$WORK/image.ns" | awk '{printf "%.0f", $1/1e6}')
FLOOR_MS=$($PY stats "$WORK/floor.ns" | awk '{printf "%.0f", $1/1e6}')
OVER=$((IMG_MS - FLOOR_MS))

cat <<EOT

### Front proxy (issue 19; Caddy ${FRACTALIC_PUBLISHER_PROXY_IMAGE:-caddy:2}; loopback; one keep-alive client)

| request | direct p50 / p99 (ms) | through the proxy p50 / p99 (ms) | added p50 / p99 (ms) | goal | verdict |
|---|---|---|---|---|---|
$(row health "GET /health ($N requests)")
$(row execute "POST /execute of the demo script ($((N / 4)) requests)")

| throughput (4 keep-alive clients, 3 s) | direct | through the proxy |
|---|---|---|
| GET /health, requests/s (failed) | $RPS_HD ($FAIL_HD) | $RPS_HP ($FAIL_HP) |
| POST /execute, requests/s (failed) | $RPS_ED ($FAIL_ED) | $RPS_EP ($FAIL_EP) |

| image change of a proxied deployment ($RUNS runs) | result | goal | verdict |
|---|---|---|---|
| deploy end to end (process start to exit) | $($PY fmt-ms "$WORK/image.ns") | | |
| floor: the new container's own start (create + cp + start + first /health 200, bare) | $($PY fmt-ms "$WORK/floor.ns") | | |
| deploy minus floor (medians) | $OVER ms | < 300 ms | $(awk -v v="$OVER" 'BEGIN{print (v < 300) ? "met" : "**missed**"}') |
| requests failed (GET /health + POST /execute every 20 ms) | $FAILED of $ROUNDS$KINDS | 0 | $( ((FAILED == 0)) && echo met || echo "**missed**") |
EOT
