#!/usr/bin/env bash
# Benchmarks (issue 5): deploy vs the floor Docker itself sets, docker calls per deploy, `ps`
# scaling, start-up, readiness overhead; updates in place and by a new container (issue 11,
# scripts/bench/updates.sh, also runnable alone). Prints markdown on stdout and saves it to
# target/bench/latest.md; progress goes to stderr.
#
#   scripts/bench.sh            full run (brings up the dev environment itself; ~2-3 minutes)
#   BENCH_RUNS=3 scripts/bench.sh   fewer runs per deploy measurement (default 5)
#   scripts/bench.sh swarm      only the docker-swarm section (needs the test bed's swarm)
#   scripts/bench.sh container  only section 9: a deploy from inside a container vs the host
#   scripts/bench.sh memory     only the tool's peak RSS with a 200 MB script folder: first
#                               deploy, update in place, update by container (bench/memory.sh)
#   scripts/bench.sh proxy      only the front proxy: overhead per request, an image change of a
#                               proxied deployment vs the new container's start (bench/proxy.sh)
#   scripts/bench.sh cluster    docker-swarm on 1, 2, 3 nodes of scripts/dev-env.sh cluster:
#                               deploy vs bare, update, node death (scripts/bench/cluster.sh)
#
# Every container it creates is named bench-<pid>-... and removed on exit, failure included.
# Timing: bash's $EPOCHREALTIME (microseconds, no fork) around each command; medians, min, max
# computed by scripts/bench/bench.py. Docker calls are counted (and timed) by
# scripts/bench/docker-wrap, given to the product as --docker.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
HELP="$ROOT/scripts/bench"
if [[ ${1:-} == cluster ]]; then exec "$HELP/cluster.sh"; fi
PY="python3 $HELP/bench.py"
WRAP="$HELP/docker-wrap"
RUNS=${BENCH_RUNS:-5}
RUN="bench-$$"
OUT_DIR="$ROOT/target/bench"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fractalic-bench.XXXXXX")
CREATED="$WORK/created"
: >"$CREATED"
BENCH_START=$SECONDS
LOAD_START=$(cut -d" " -f1-3 /proc/loadavg)

log() { printf 'bench: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}

cleanup() {
	local rc=$? names
	# Services first: their task containers are named after this run too.
	swarm_cleanup
	# Only what this run created: the names it recorded, plus anything named after this run.
	names=$({
		cat "$CREATED" 2>/dev/null
		docker ps -a --filter "name=$RUN-" --format '{{.Names}}' 2>/dev/null
	} | sort -u | grep "^$RUN-" || true)
	if [[ -n $names ]]; then
		log "removing $(wc -l <<<"$names") container(s) named $RUN-*"
		# shellcheck disable=SC2086
		docker rm -f $names >/dev/null 2>&1 || log "warning: some containers could not be removed"
	fi
	[[ -n ${WATCH_PID:-} ]] && kill "$WATCH_PID" 2>/dev/null
	[[ -n ${SERVE_PID:-} ]] && kill "$SERVE_PID" 2>/dev/null
	rm -rf "$WORK"
	exit "$rc"
}
# Services, secrets and baked image tags of this run (docker-swarm section).
swarm_cleanup() {
	local svcs kind deadline
	svcs=$(docker service ls --filter "name=$RUN-" --format '{{.Name}}' 2>/dev/null || true)
	[[ -z $svcs && ! -s $WORK/swarm.objects ]] && return 0
	# shellcheck disable=SC2086
	[[ -n $svcs ]] && docker service rm $svcs >/dev/null 2>&1
	deadline=$((SECONDS + 60))
	while [[ -n $(docker ps -aq --filter "label=com.docker.swarm.service.name" --filter "name=$RUN-" 2>/dev/null) ]] && ((SECONDS < deadline)); do sleep 0.2; done
	for kind in secret config; do
		docker "$kind" ls --filter "name=$RUN-" --format '{{.Name}}' 2>/dev/null | xargs -r docker "$kind" rm >/dev/null 2>&1 || true
	done
	[[ -s $WORK/swarm.objects ]] && { xargs -r docker image rm -f <"$WORK/swarm.objects" >/dev/null 2>&1 || true; }
	return 0
}

trap cleanup EXIT
trap 'exit 130' INT TERM

now() { echo "${EPOCHREALTIME/./}000"; } # ns (microsecond resolution)
ms() { $PY fmt-ms "$1"; }                # "median (min-max)" in ms of a file of ns values
med_ms() { $PY stats "$1" | awk '{printf "%.0f", $1/1e6}'; }
track() { echo "$1" >>"$CREATED"; }

# ---------------------------------------------------------------------------------------------
log "bringing up the dev environment (scripts/dev-env.sh up)"
DEFAULT_IMAGE=127.0.0.1:5000/fractalic-stand-in:latest-production
IMAGE_NOTE=""
if DEV_OUT=$("$ROOT/scripts/dev-env.sh" up) && IMAGE=$(tail -n 1 <<<"$DEV_OUT") && [[ $IMAGE == STAND_IN_IMAGE=* ]]; then
	IMAGE=${IMAGE#STAND_IN_IMAGE=}
	# The test bed's Caddy image (scripts/bench/proxy.sh), unless one is chosen already.
	PROXY_PINNED=$(sed -n 's/^PROXY_IMAGE=//p' <<<"$DEV_OUT" | tail -n 1)
	[[ -z ${FRACTALIC_PUBLISHER_PROXY_IMAGE:-} && -n $PROXY_PINNED ]] && export FRACTALIC_PUBLISHER_PROXY_IMAGE=$PROXY_PINNED
elif docker image inspect "$DEFAULT_IMAGE" >/dev/null 2>&1; then
	# E.g. a half-edited stand-in source in a shared tree: the cached image still measures.
	IMAGE=$DEFAULT_IMAGE
	IMAGE_NOTE=" (dev-env.sh up failed; used the image already cached)"
	log "warning: scripts/dev-env.sh up failed; using the cached $IMAGE"
else
	die "scripts/dev-env.sh up failed and $DEFAULT_IMAGE is not cached"
fi
log "building the release binary"
(cd "$ROOT" && cargo build --release --quiet) >&2 || die "cargo build --release failed"
BIN="$ROOT/target/release/fractalic-publisher"
docker image inspect "$IMAGE" >/dev/null || die "image $IMAGE is not cached after dev-env.sh up"

if [[ ! -x /usr/bin/time ]]; then
	if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
		log "installing Debian's time package for peak memory"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time >&2 || true
	fi
fi

DEMO="$ROOT/scripts/demo/hello-fractalic"
if [[ ! -f $DEMO/hello.md ]]; then
	DEMO="$WORK/demo"
	$PY gen-folder "$DEMO" 2
fi

# deploy LOGFILE NAME FOLDER PULL [EXTRA...]: one product deploy; appends its ns time to
# $WORK/t.LOGFILE-less caller file via the DEPLOY_NS variable; LOGFILE "-" = real docker.
deploy() {
	local log=$1 name=$2 folder=$3 pull=$4 t0 t1 rc=0
	shift 4
	local docker_flag=()
	if [[ $log != - ]]; then
		docker_flag=(--docker "$WRAP")
		: >"$log"
	fi
	track "$name"
	t0=$(now)
	BENCH_DOCKER_LOG=${log/#-//dev/null} "$BIN" "${docker_flag[@]}" deploy docker-registry \
		--script-name hello --script-folder "$folder" --name "$name" --image "$IMAGE" \
		--pull "$pull" --json --quiet "$@" >"$WORK/deploy.out" 2>"$WORK/deploy.err" || rc=$?
	t1=$(now)
	if ((rc != 0)); then
		cat "$WORK/deploy.out" "$WORK/deploy.err" >&2
		die "deploy of $name failed (exit $rc)"
	fi
	[[ $log != - ]] && echo "#run $t0 $t1" >>"$log"
	DEPLOY_NS=$((t1 - t0))
}

rm_container() { docker rm -f "$1" >/dev/null 2>&1 || true; }

# start_serve: the REST server on a free loopback port (once), its URL in SERVE_URL.
start_serve() {
	[[ -n ${SERVE_PID:-} ]] && return 0
	"$BIN" serve --listen 127.0.0.1:0 --root "$(dirname "$DEMO")" >"$WORK/serve.out" 2>"$WORK/serve.err" &
	SERVE_PID=$!
	local deadline=$((SECONDS + 10))
	until grep -q '^listening on ' "$WORK/serve.out" 2>/dev/null; do
		((SECONDS < deadline)) || die "serve did not start: $(cat "$WORK/serve.err")"
		sleep 0.05
	done
	SERVE_URL=$(sed -n 's/^listening on //p' "$WORK/serve.out")
}
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }

# ---------------------------------------------------------------------------------------------
# 7. docker-swarm: a first deploy of the sample folder vs the floor of the same docker commands
# run bare (create, cp, commit, push, secret create, service create, first healthy task), with
# fresh content each run on both sides (so both commit and push); then a redeploy of unchanged
# content (no commit, no push, no update).
SWARM_REPO=127.0.0.1:5000/fractalic-app
swarm_section() {
	if [[ $(docker info --format '{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}}') != "active true" ]]; then
		SWARM_ROWS="| (skipped: the engine is not a swarm manager) | | | |"
		return 0
	fi
	log "7/7 docker-swarm deploy vs floor ($RUNS runs each, interleaved, after a warm-up)"
	: >"$WORK/swarm.deploy"
	: >"$WORK/swarm.floor"
	: >"$WORK/swarm.objects"
	local i dir name t0 t1 rc tag port svc
	for i in $(seq 0 "$RUNS"); do
		dir="$WORK/swarm-$i"
		rm -rf "$dir"
		cp -r "$DEMO" "$dir"
		echo "<!-- bench $RUN $i product -->" >>"$dir/hello.md"
		name="$RUN-sw-$i"
		t0=$(now)
		rc=0
		"$BIN" deploy docker-swarm --script-name hello --script-folder "$dir" --name "$name" \
			--image "$IMAGE" --pull missing --publish-mode host --json --quiet >"$WORK/swarm.out" 2>"$WORK/swarm.err" || rc=$?
		t1=$(now)
		((rc == 0)) || {
			cat "$WORK/swarm.out" "$WORK/swarm.err" >&2
			die "swarm deploy failed"
		}
		python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["details"]["plugin_result"]["image"])' "$WORK/swarm.out" >>"$WORK/swarm.objects"
		((i > 0)) && echo $((t1 - t0)) >>"$WORK/swarm.deploy"
		if [[ $i == "$RUNS" ]]; then SWARM_KEEP=$name; else "$BIN" rm --force "$name" >/dev/null 2>&1; fi

		# The floor: the same commands, bare.
		rm -rf "$dir.floor"
		cp -r "$DEMO" "$dir.floor"
		rm -f "$dir.floor/settings.toml"
		echo "<!-- bench $RUN $i floor -->" >>"$dir.floor/hello.md"
		$PY tar "$dir.floor" hello "$WORK/swarm-floor.tar" 1000 1000
		svc="$RUN-swf-$i"
		tag="$SWARM_REPO/hello:$RUN-floor-$i"
		echo "$tag" >>"$WORK/swarm.objects"
		t0=$(now)
		docker create --name "$svc-build" "$IMAGE" >/dev/null
		docker cp - "$svc-build:/" <"$WORK/swarm-floor.tar"
		docker commit "$svc-build" "$tag" >/dev/null
		docker rm -f "$svc-build" >/dev/null
		docker push -q "$tag" >/dev/null
		docker secret create "$svc.settings" - <"$DEMO/settings.toml" >/dev/null
		docker service create --detach --name "$svc" --replicas 1 --publish mode=host,target=8001 \
			--health-cmd "curl -fsS http://localhost:8001/health >/dev/null && curl -fsS http://localhost:5859/status >/dev/null" \
			--health-interval 1s --health-timeout 5s --health-retries 3 --health-start-period 60s \
			--update-order start-first --update-failure-action rollback --rollback-order start-first \
			--secret "source=$svc.settings,target=/fractalic/settings.toml,uid=1000,gid=1000,mode=0400" \
			--secret "source=$svc.settings,target=/settings.toml,uid=1000,gid=1000,mode=0400" \
			"$tag" >/dev/null
		# A host-mode task may publish one host port per address family; any that answers counts.
		up=no
		until [[ $up == yes ]]; do
			for port in $(docker service ps --filter desired-state=running --format '{{.CurrentState}}|{{.Ports}}' "$svc" |
				sed -n 's/^Running[^|]*|//p' | grep -o '\*:[0-9]*' | cut -c3-); do
				curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$port/health" 2>/dev/null && up=yes && break
			done
			(($(now) - t0 < 120000000000)) || die "floor: $svc never became healthy"
		done
		t1=$(now)
		((i > 0)) && echo $((t1 - t0)) >>"$WORK/swarm.floor"
		docker service rm "$svc" >/dev/null
	done

	log "7/7 docker-swarm redeploy of unchanged content (counting wrapper)"
	: >"$WORK/swarm.same"
	: >"$WORK/swarm-same.log"
	t0=$(now)
	BENCH_DOCKER_LOG="$WORK/swarm-same.log" "$BIN" --docker "$WRAP" deploy docker-swarm --script-name hello \
		--script-folder "$WORK/swarm-$RUNS" --name "$SWARM_KEEP" --image "$IMAGE" --pull missing \
		--publish-mode host --json --quiet >"$WORK/swarm.out" 2>"$WORK/swarm.err" || die "unchanged redeploy failed: $(cat "$WORK/swarm.err")"
	t1=$(now)
	echo $((t1 - t0)) >>"$WORK/swarm.same"
	SWARM_SAME_CALLS=$(wc -l <"$WORK/swarm-same.log")
	SWARM_SAME_COMMITS=$(awk '$4 == "commit" || $4 == "push" || ($4 == "service" && $5 == "update")' "$WORK/swarm-same.log" | wc -l)
	local d f ratio
	d=$(med_ms "$WORK/swarm.deploy")
	f=$(med_ms "$WORK/swarm.floor")
	ratio=$(awk -v d="$d" -v f="$f" 'BEGIN{printf "%.2f", d/f}')
	SWARM_ROWS="| first deploy (1 replica, host mode, fresh content: commit + push) vs the same docker commands bare | $(ms "$WORK/swarm.deploy") vs $(ms "$WORK/swarm.floor") = **${ratio}x** | <= 1.3x | $(awk -v r="$ratio" 'BEGIN{print (r <= 1.3) ? "met" : "**missed**"}') |
| redeploy, unchanged content | $(ms "$WORK/swarm.same"), $SWARM_SAME_CALLS docker calls, $SWARM_SAME_COMMITS commit/push/service update | no commit, no push | $([[ $SWARM_SAME_COMMITS == 0 ]] && echo met || echo "**missed**") |"
}

swarm_report() {
	cat <<EOF

### 7. docker-swarm ($RUNS runs each, interleaved; single-node swarm, stand-in image, registry 127.0.0.1:5000)

| measure | time | goal | verdict |
|---|---|---|---|
$SWARM_ROWS
EOF
}

# 9. From inside a container vs from the host (scripts/bench/container.sh; the static binary).
container_section() {
	local static
	log "9 deploy from inside a container vs from the host (static build: scripts/build-static.sh)"
	static=$("$ROOT/scripts/build-static.sh" | tail -n 1) || die "scripts/build-static.sh failed"
	"$HELP/container.sh" "$static" "$IMAGE" "$RUNS"
}

if [[ ${1:-} == container ]]; then
	mkdir -p "$OUT_DIR"
	container_section | tee "$OUT_DIR/container.md"
	exit 0
fi

if [[ ${1:-} == memory ]]; then
	mkdir -p "$OUT_DIR"
	"$HELP/memory.sh" "$BIN" "$IMAGE" | tee "$OUT_DIR/memory.md"
	exit 0
fi

if [[ ${1:-} == proxy ]]; then
	mkdir -p "$OUT_DIR"
	"$HELP/proxy.sh" "$BIN" "$IMAGE" "$RUNS" | tee "$OUT_DIR/proxy.md"
	exit 0
fi

if [[ ${1:-} == swarm ]]; then
	swarm_section
	mkdir -p "$OUT_DIR"
	swarm_report | tee "$OUT_DIR/swarm.md"
	exit 0
fi

# ---------------------------------------------------------------------------------------------
# 1. Deploy vs floor (interleaved, same payload, same image, no pull on either side).
log "1/6 deploy vs floor ($RUNS runs each, interleaved)"
OWNER="1000 1000"
$PY tar "$DEMO" hello "$WORK/floor.tar" $OWNER
floor_once() {
	local name=$1 port t0 t1 t2 t3 t4 t5 polls=0
	port=$($PY freeport 18001)
	track "$name"
	t0=$(now)
	docker create --name "$name" -p "127.0.0.1:$port:8001" --restart unless-stopped \
		--label fractalic-publisher.managed=true --label fractalic-publisher.plugin=docker-registry \
		--label "fractalic-publisher.port=$port" "$IMAGE" >/dev/null
	t1=$(now)
	docker cp - "$name:/" <"$WORK/floor.tar"
	t2=$(now)
	docker start "$name" >/dev/null
	t3=$(now)
	until curl -fsS -o /dev/null --max-time 1 "http://127.0.0.1:$port/health" 2>/dev/null; do
		polls=$((polls + 1))
		((polls < 20000)) || die "floor: /health on $port never answered"
	done
	t4=$(now)
	docker inspect "$name" >/dev/null
	t5=$(now)
	echo $((t5 - t0)) >>"$WORK/floor.ns"
	echo $((t1 - t0)) >>"$WORK/floor.create"
	echo $((t2 - t1)) >>"$WORK/floor.cp"
	echo $((t3 - t2)) >>"$WORK/floor.start"
	echo $((t4 - t3)) >>"$WORK/floor.health"
	echo $((t5 - t4)) >>"$WORK/floor.inspect"
	rm_container "$name"
}
# Warm-up (not counted): page cache, docker's image layers, the binary.
deploy - "$RUN-warm" "$DEMO" missing
rm_container "$RUN-warm"
floor_once "$RUN-floorwarm"
: >"$WORK/floor.ns"
for f in create cp start health inspect; do : >"$WORK/floor.$f"; done
: >"$WORK/deploy.ns"
for i in $(seq "$RUNS"); do
	deploy - "$RUN-vs-$i" "$DEMO" missing
	echo "$DEPLOY_NS" >>"$WORK/deploy.ns"
	rm_container "$RUN-vs-$i"
	floor_once "$RUN-floor-$i"
done
DEPLOY_FILES=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["details"]; print(d["files"], d["bytes"])' "$WORK/deploy.out" 2>/dev/null || echo "? ?")

log "1/6 deploy with --pull always (3 runs, counting wrapper)"
: >"$WORK/pullalways.ns"
for i in 1 2 3; do
	deploy "$WORK/pull-$i.log" "$RUN-pull-$i" "$DEMO" always
	echo "$DEPLOY_NS" >>"$WORK/pullalways.ns"
	rm_container "$RUN-pull-$i"
done
grep -h ' pull ' "$WORK"/pull-*.log | awk '{print $2-$1}' >"$WORK/pull.ns"

# ---------------------------------------------------------------------------------------------
# 2. Docker calls per deploy, by script folder size.
log "2/6 docker calls per deploy: 2, 1000, 10000 files, one 50 MB file"
CALLS_ROWS=""
for kind in 2 1000 10000 50mb; do
	dir="$WORK/folder-$kind"
	$PY gen-folder "$dir" "$kind"
	n=$RUNS
	[[ $kind != 2 ]] && n=3
	: >"$WORK/calls-$kind.ns"
	: >"$WORK/calls-$kind.count"
	: >"$WORK/calls-$kind.cp"
	: >"$WORK/calls-$kind.floorcp"
	: >"$WORK/calls-$kind.untar"
	# The same payload as a tar built outside the timing, for the floor `docker cp` and for a
	# plain `tar -x` into a host directory (what this machine's filesystem allows at best).
	$PY tar "$dir" hello "$WORK/folder-$kind.tar" $OWNER
	for i in $(seq "$n"); do
		deploy "$WORK/calls-$kind-$i.log" "$RUN-c$kind-$i" "$dir" missing
		echo "$DEPLOY_NS" >>"$WORK/calls-$kind.ns"
		grep -vc '^#' "$WORK/calls-$kind-$i.log" >>"$WORK/calls-$kind.count" || true
		grep -h ' cp - ' "$WORK/calls-$kind-$i.log" | awk '{print $2-$1}' >>"$WORK/calls-$kind.cp"
		rm_container "$RUN-c$kind-$i"
		# Floor cp on two runs and host untar on one: enough to compare, and it keeps the
		# 10,000-file case (seconds per copy on this disk) inside the 5-minute budget.
		((i <= 2)) || continue
		track "$RUN-fcp$kind-$i"
		docker create --name "$RUN-fcp$kind-$i" "$IMAGE" >/dev/null
		t0=$(now)
		docker cp - "$RUN-fcp$kind-$i:/" <"$WORK/folder-$kind.tar"
		t1=$(now)
		echo $((t1 - t0)) >>"$WORK/calls-$kind.floorcp"
		rm_container "$RUN-fcp$kind-$i"
		((i <= 1)) || continue
		mkdir "$WORK/untar"
		t0=$(now)
		tar -C "$WORK/untar" -xf "$WORK/folder-$kind.tar"
		t1=$(now)
		echo $((t1 - t0)) >>"$WORK/calls-$kind.untar"
		rm -rf "$WORK/untar"
	done
	rm -f "$WORK/folder-$kind.tar"
	fb=$(python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))["details"]; print(d["files"], d["bytes"])' "$WORK/deploy.out" 2>/dev/null || echo "? ?")
	calls=$(sort -n "$WORK/calls-$kind.count" | uniq | paste -sd/)
	verbs=$(grep -hv '^#' "$WORK/calls-$kind-1.log" | awk '{print $4}' | paste -sd' ')
	label=$kind
	case $kind in 2) label="2 files" ;; 1000) label="1,000 files" ;; 10000) label="10,000 files" ;; 50mb) label="one 50 MB file" ;; esac
	CALLS_ROWS+="| $label | ${fb% *} | ${fb#* } | $calls | $(ms "$WORK/calls-$kind.ns") | $(ms "$WORK/calls-$kind.cp") | $(ms "$WORK/calls-$kind.floorcp") | $(ms "$WORK/calls-$kind.untar") | $verbs |"$'\n'
	rm -rf "$dir"
done
BREAKDOWN=$($PY breakdown "$WORK"/calls-2-*.log)
BREAKDOWN_10K=$($PY breakdown "$WORK"/calls-10000-*.log)
BREAKDOWN_PULL=$($PY breakdown "$WORK"/pull-*.log)
CALLS_2=$(sort -n "$WORK/calls-2.count" | uniq | paste -sd/)
CALLS_10K=$(sort -n "$WORK/calls-10000.count" | uniq | paste -sd/)
MED_10K=$(med_ms "$WORK/calls-10000.ns")
FLOORCP_10K=$(med_ms "$WORK/calls-10000.floorcp")
UNTAR_10K=$(med_ms "$WORK/calls-10000.untar")

# ---------------------------------------------------------------------------------------------
# 5 (run before ps, which leaves containers around). Readiness overhead.
log "3/6 readiness overhead: STAND_IN_START_DELAY_MS=2000 ($RUNS runs)"
: >"$WORK/ready.return"
: >"$WORK/ready.notice"
for i in $(seq "$RUNS"); do
	port=$($PY freeport 18101)
	rm -f "$WORK/up.ns"
	$PY watch "http://127.0.0.1:$port/health" "$WORK/up.ns" 30 &
	WATCH_PID=$!
	deploy "$WORK/ready-$i.log" "$RUN-ready-$i" "$DEMO" missing --port "$port" --env STAND_IN_START_DELAY_MS=2000
	end=$(awk '/^#run/{print $3}' "$WORK/ready-$i.log")
	wait "$WATCH_PID" || die "readiness watcher never saw /health answer on $port"
	WATCH_PID=
	up=$(<"$WORK/up.ns")
	# The product noticed /health when it moved on to the MCP check (its `docker exec`).
	noticed=$(awk -v up="$up" '!/^#/ && $4 == "exec" && $1 > up {print $1; exit}' "$WORK/ready-$i.log")
	[[ -n $noticed ]] || noticed=$end
	echo $((end - up)) >>"$WORK/ready.return"
	echo $((noticed - up)) >>"$WORK/ready.notice"
	rm_container "$RUN-ready-$i"
done

# ---------------------------------------------------------------------------------------------
# 3. ps scaling.
log "4/6 ps scaling"
PS_ROWS=""
PS_NOTE=""
PS_OK=no
if BENCH_DOCKER_LOG=/dev/null "$BIN" --docker "$WRAP" ps --json >/dev/null 2>&1; then PS_OK=yes; fi
if [[ $PS_OK == yes ]]; then
	ps_measure() {
		local n=$1 how=$2 i t0 t1 listed
		: >"$WORK/ps.ns"
		: >"$WORK/ps.log"
		BENCH_DOCKER_LOG=/dev/null "$BIN" --docker "$WRAP" ps --json >/dev/null # warm
		for i in $(seq 10); do
			t0=$(now)
			BENCH_DOCKER_LOG="$WORK/ps.log" "$BIN" --docker "$WRAP" ps --json >"$WORK/ps.out"
			t1=$(now)
			echo $((t1 - t0)) >>"$WORK/ps.ns"
		done
		listed=$(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
if isinstance(d, dict):
    d = next((v for v in d.values() if isinstance(v, list)), [])
print(sum(1 for x in d if sys.argv[2] in json.dumps(x)))' "$WORK/ps.out" "$RUN-" 2>/dev/null || echo "?")
		PS_ROWS+="| $n | $how | $listed | $(($(wc -l <"$WORK/ps.log") / 10)) | $(ms "$WORK/ps.ns") |"$'\n'
		PS_LAST_MS=$(med_ms "$WORK/ps.ns")
		# docker-swarm lists its own services (`service ls` ...): counted apart.
		PS_LAST_CALLS=$(($(awk '$4 != "service"' "$WORK/ps.log" | wc -l) / 10))
		PS_SWARM_CALLS=$(($(awk '$4 == "service"' "$WORK/ps.log" | wc -l) / 10))
	}
	deploy - "$RUN-ps-1" "$DEMO" missing
	ps_measure 1 "1 real deploy"
	for i in $(seq 2 10); do deploy - "$RUN-ps-$i" "$DEMO" missing; done
	ps_measure 10 "10 real deploys"
	# 40 more as plain containers carrying the same labels as a real deployment (fast to make).
	labels=()
	while IFS= read -r kv; do
		# (deployment= names the container a kept one belongs to: each of these is its own.)
		case $kv in fractalic-publisher.port=* | fractalic-publisher.created=* | fractalic-publisher.deployment=*) continue ;; esac
		[[ -n $kv ]] && labels+=(--label "$kv")
	done < <(docker inspect --format '{{range $k, $v := .Config.Labels}}{{$k}}={{$v}}{{"\n"}}{{end}}' "$RUN-ps-1")
	plain=()
	for i in $(seq 11 50); do
		port=$($PY freeport $((18300 + i)))
		track "$RUN-ps-$i"
		docker create --name "$RUN-ps-$i" -p "127.0.0.1:$port:8001" "${labels[@]}" \
			--label "fractalic-publisher.port=$port" --label "fractalic-publisher.deployment=$RUN-ps-$i" \
			--label "fractalic-publisher.created=$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$IMAGE" >/dev/null
		plain+=("$RUN-ps-$i")
	done
	docker start "${plain[@]}" >/dev/null
	ps_measure 50 "10 real deploys + 40 plain labelled containers (started)"
	start_serve
	: >"$WORK/api.ps.ns"
	$PY get-ns "$SERVE_URL/api/deployments" >/dev/null # warm
	for i in $(seq 10); do $PY get-ns "$SERVE_URL/api/deployments" | awk '{print $1}' >>"$WORK/api.ps.ns"; done
	API_PS_MS=$(med_ms "$WORK/api.ps.ns")
	PS_NOTE="Other containers on this Docker host at the time: $(($(docker ps -aq | wc -l) - 50)) (not ours; \`ps\` may list those that carry our labels)."
	names=$(grep "^$RUN-ps-" "$CREATED" | sort -u)
	# shellcheck disable=SC2086
	docker rm -f $names >/dev/null 2>&1 || true
else
	PS_ROWS="| 1, 10, 50 | - | - | n/a (ps not available) | n/a (ps not available) |"$'\n'
fi

# ---------------------------------------------------------------------------------------------
# 6. REST API: the same deploy through serve's stream endpoint vs the CLI, interleaved.
log "6/6 REST API: stream deploy vs CLI deploy, first event, idle RSS, 200 concurrent /health"
start_serve
IDLE_RSS_KB=$(rss_kb "$SERVE_PID")
: >"$WORK/rest.ns"
: >"$WORK/rest.first"
: >"$WORK/cli.ns"
REPO=${IMAGE%:*}
TAG=${IMAGE##*:}
for i in $(seq "$RUNS"); do
	deploy - "$RUN-cli-$i" "$DEMO" missing
	echo "$DEPLOY_NS" >>"$WORK/cli.ns"
	rm_container "$RUN-cli-$i"
	track "$RUN-rest-$i"
	body=$(printf '{"image_name":"%s","image_tag":"%s","script_name":"hello","script_folder":"%s","container_name":"%s","pull":"missing"}' \
		"$REPO" "$TAG" "$DEMO" "$RUN-rest-$i")
	read -r total first stage < <($PY rest-deploy "$SERVE_URL" "$body")
	[[ $stage == completed ]] || die "REST deploy $RUN-rest-$i ended in $stage"
	echo "$total" >>"$WORK/rest.ns"
	echo "$first" >>"$WORK/rest.first"
	rm_container "$RUN-rest-$i"
done
AFTER_RSS_KB=$(rss_kb "$SERVE_PID")
BURST_OK=$($PY health-burst "$SERVE_URL/health" 200)
REST_MS=$(med_ms "$WORK/rest.ns")
CLI_MS=$(med_ms "$WORK/cli.ns")
REST_DELTA=$((REST_MS - CLI_MS))
FIRST_MS=$(med_ms "$WORK/rest.first")
kill "$SERVE_PID" 2>/dev/null || true
wait "$SERVE_PID" 2>/dev/null || true
SERVE_PID=

# ---------------------------------------------------------------------------------------------
# 4. Start-up: list and info, wall time (20 runs) and peak RSS (5 runs under /usr/bin/time).
log "5/6 start-up: list, info docker-registry"
startup() {
	local tag=$1 i t0 t1
	shift
	: >"$WORK/$tag.ns"
	: >"$WORK/$tag.rss"
	: >"$WORK/$tag.calls"
	"$BIN" "$@" >/dev/null # warm the page cache
	for i in $(seq 20); do
		t0=$(now)
		"$BIN" "$@" >/dev/null
		t1=$(now)
		echo $((t1 - t0)) >>"$WORK/$tag.ns"
	done
	if [[ -x /usr/bin/time ]]; then
		for i in $(seq 5); do /usr/bin/time -f %M -a -o "$WORK/$tag.rss" "$BIN" "$@" >/dev/null; done
	fi
	BENCH_DOCKER_LOG="$WORK/$tag.calls" "$BIN" --docker "$WRAP" "$@" >/dev/null
}
startup list list
startup info info docker-registry
rss() { if [[ -s $WORK/$1.rss ]]; then sort -n "$WORK/$1.rss" | tail -n 1 | awk '{printf "%.1f MB", $1/1024}'; else echo "n/a"; fi; }

swarm_section

# ---------------------------------------------------------------------------------------------
verdict() { # verdict VALUE OP LIMIT -> met / missed
	if awk -v v="$1" -v l="$3" "BEGIN{exit !(v $2 l)}"; then echo met; else echo "**missed**"; fi
}
D=$(med_ms "$WORK/deploy.ns")
F=$(med_ms "$WORK/floor.ns")
RATIO=$(awk -v d="$D" -v f="$F" 'BEGIN{printf "%.2f", d/f}')
READY=$(med_ms "$WORK/ready.return")
NOTICE=$(med_ms "$WORK/ready.notice")
LIST_MS=$(med_ms "$WORK/list.ns")
LIST_RSS_KB=$(sort -n "$WORK/list.rss" 2>/dev/null | tail -n 1)
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
DOCKER_V=$(docker version --format '{{.Server.Version}}')
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo "?")
DIRTY=$(git -C "$ROOT" status --porcelain --untracked-files=no -- src plugins Cargo.toml 2>/dev/null | wc -l)

mkdir -p "$OUT_DIR"
{
	cat <<EOF
## Benchmark $(date -u +%Y-%m-%dT%H:%MZ)

Machine: $(nproc) CPUs ($CPU), Linux $(uname -r), Docker server $DOCKER_V; commit $COMMIT$( ((DIRTY > 0)) && echo " + $DIRTY uncommitted file(s) in src/plugins"); image $IMAGE (stand-in, cached)$IMAGE_NOTE. Medians of several runs, (min-max) in brackets, times in ms. Produced by \`scripts/bench.sh\` in $((SECONDS - BENCH_START)) s; load average at start $LOAD_START, at end $(cut -d" " -f1-3 /proc/loadavg) (other work on the host adds noise).

| target | measured | goal | verdict |
|---|---|---|---|
| deploy vs floor | ${D} ms vs ${F} ms = **${RATIO}x** | <= 1.3x | $(verdict "$RATIO" "<=" 1.3) |
| readiness: deploy returns after /health answers | **${READY} ms** (health noticed after ${NOTICE} ms) | <= 150 ms | $(verdict "$READY" "<=" 150) |
| docker calls, 2 vs 10,000 files | ${CALLS_2} vs ${CALLS_10K} (the readiness poll's \`inspect\` count varies with timing) | no more for more files | $( ((${CALLS_10K##*/} <= ${CALLS_2##*/})) && echo met || echo "**missed**") |
| 10,000-file deploy | ${MED_10K} ms (floor \`docker cp\` alone: ${FLOORCP_10K} ms, host \`tar -x\`: ${UNTAR_10K} ms) | < 3000 ms | $(verdict "$MED_10K" "<" 3000) |
| ps --json, 50 deployments | $([[ $PS_OK == yes ]] && echo "${PS_LAST_MS} ms, ${PS_LAST_CALLS} docker call(s) for the containers (+ ${PS_SWARM_CALLS} by docker-swarm for its services)" || echo "n/a (ps not available)") | 1 call per platform, < 150 ms | $([[ $PS_OK == yes ]] && { [[ $PS_LAST_CALLS == 1 ]] && verdict "$PS_LAST_MS" "<" 150 || echo "**missed**"; } || echo "n/a") |
| list | ${LIST_MS} ms, $(rss list) peak | < 30 ms, < 20 MB | $(verdict "$LIST_MS" "<" 30) / $([[ -n $LIST_RSS_KB ]] && verdict "$LIST_RSS_KB" "<" 20480 || echo n/a) |
| REST stream deploy vs CLI deploy | ${REST_MS} ms vs ${CLI_MS} ms (**${REST_DELTA} ms**) | <= +50 ms | $(verdict "$REST_DELTA" "<=" 50) |
| first SSE event after the request | **${FIRST_MS} ms** | <= 50 ms | $(verdict "$FIRST_MS" "<=" 50) |
| GET /api/deployments, 50 deployments | $([[ $PS_OK == yes ]] && echo "${API_PS_MS} ms" || echo n/a) | < 200 ms | $([[ $PS_OK == yes ]] && verdict "$API_PS_MS" "<" 200 || echo n/a) |
| idle server RSS | $(awk -v k="$IDLE_RSS_KB" 'BEGIN{printf "%.1f MB", k/1024}') at start, $(awk -v k="$AFTER_RSS_KB" 'BEGIN{printf "%.1f MB", k/1024}') after $RUNS deploys | < 15 MB | $(verdict "$AFTER_RSS_KB" "<" 15360) |
| 200 concurrent GET /health | ${BURST_OK} of 200 answered 200 | all | $([[ $BURST_OK == 200 ]] && echo met || echo "**missed**") |

### 1. Deploy vs floor (demo folder: ${DEPLOY_FILES% *} files, ${DEPLOY_FILES#* } bytes; $RUNS runs each, interleaved)

| sequence | time |
|---|---|
| \`fractalic-publisher deploy --pull missing\` (real docker, no wrapper) | $(ms "$WORK/deploy.ns") |
| floor: create, one \`cp -\` of a pre-built tar, start, curl /health in a tight loop, inspect | $(ms "$WORK/floor.ns") |
| ratio of medians | ${RATIO}x |
| \`fractalic-publisher deploy --pull always\` (counting wrapper, 3 runs) | $(ms "$WORK/pullalways.ns") |
| of which \`docker pull\` (image up to date in the local registry) | $(ms "$WORK/pull.ns") |

Floor steps: create $(ms "$WORK/floor.create"), cp $(ms "$WORK/floor.cp"), start $(ms "$WORK/floor.start"), /health answers $(ms "$WORK/floor.health") after start returns, inspect $(ms "$WORK/floor.inspect").

### Where a deploy's time goes (2-file folder, --pull missing, $RUNS runs; per-call wall time from the wrapper)

$BREAKDOWN

With \`--pull always\`:

$BREAKDOWN_PULL

### 2. Docker calls per deploy (--pull missing; 2 files: $RUNS runs, others: 3 runs)

| script folder | payload files | payload bytes | docker calls | deploy | of which \`cp -\` | floor: \`docker cp -\` of the same tar (2 runs) | host \`tar -x\` of the same tar (1 run) | calls, in order |
|---|---:|---:|---:|---|---|---|---|---|
${CALLS_ROWS}
10,000 files, where the time goes:

$BREAKDOWN_10K

### 3. \`ps --json\` scaling (10 runs each; counting wrapper)

| deployments | made with | listed | docker calls | time |
|---|---|---:|---:|---|
${PS_ROWS}
$PS_NOTE

### 4. Start-up (20 runs; peak RSS = max of 5 runs of \`/usr/bin/time -f %M\`)

| command | time | peak memory | docker calls |
|---|---|---|---:|
| \`fractalic-publisher list\` | $(ms "$WORK/list.ns") | $(rss list) | $(wc -l <"$WORK/list.calls") |
| \`fractalic-publisher info docker-registry\` | $(ms "$WORK/info.ns") | $(rss info) | $(wc -l <"$WORK/info.calls") |

### 5. Readiness overhead (STAND_IN_START_DELAY_MS=2000, --port fixed; $RUNS runs)

/health "answers" = first 200 seen by a parallel poller (python, one GET every ~5 ms, so up to ~5 ms late).

| measure | time after /health first answered |
|---|---|
| deploy returns (process exit) | $(ms "$WORK/ready.return") |
| product noticed (its \`docker exec ... /status\` starts) | $(ms "$WORK/ready.notice") |

### 6. REST API (\`serve\`; $RUNS runs each, interleaved with CLI deploys of the same folder)

| measure | time |
|---|---|
| CLI \`deploy --pull missing\` (process start to exit) | $(ms "$WORK/cli.ns") |
| REST \`POST /api/deploy/docker-registry/stream\` (request to final event) | $(ms "$WORK/rest.ns") |
| of which: request to first SSE event | $(ms "$WORK/rest.first") |
EOF
	swarm_report
	"$HELP/updates.sh" "$BIN" "$IMAGE" "$RUNS"
	"$HELP/memory.sh" "$BIN" "$IMAGE"
	container_section
} | tee "$OUT_DIR/latest.md"
log "done in $((SECONDS - BENCH_START)) s; saved to $OUT_DIR/latest.md"
