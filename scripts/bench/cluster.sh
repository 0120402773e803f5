#!/usr/bin/env bash
# docker-swarm on a real multi-node swarm (scripts/dev-env.sh cluster): run as
# `scripts/bench.sh cluster` (or alone). For 1, 2 and 3 nodes: the first deploy of --replicas N
# (fresh content: commit + push, every node pulls) against the same docker commands run bare,
# and a rolling update (new content) vs node count; on 3 nodes: the time from a node's death
# (engine and containers killed) to `status` saying degraded, and to healthy again.
# Prints markdown on stdout (saved to target/bench/cluster.md); progress on stderr.
# It resizes the cluster (down + up per size) and leaves it as it found it: up with 3 nodes if
# it was, else down. Services, secrets and tags are named bench-<pid>-... and removed.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY="python3 $ROOT/scripts/bench/bench.py"
RUNS=${BENCH_RUNS:-3}
RUN="bench-$$"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/fractalic-bench-cluster.XXXXXX")
CLUSTER="$ROOT/scripts/dev-env.sh cluster"
REPO=127.0.0.1:5000/fractalic-app
DEMO="$ROOT/scripts/demo/hello-fractalic"

log() { printf 'bench cluster: %s\n' "$*" >&2; }
die() {
	log "error: $*"
	exit 1
}
now() { echo "${EPOCHREALTIME/./}000"; }
ms() { $PY fmt-ms "$1"; }
med_ms() { $PY stats "$1" | awk '{printf "%.0f", $1/1e6}'; }

was_up=no
$CLUSTER status >/dev/null 2>&1 && was_up=yes
cleanup() {
	local rc=$?
	if [[ -n ${DOCKER_HOST:-} ]]; then
		docker service ls --filter "name=$RUN-" --format '{{.Name}}' 2>/dev/null | xargs -r docker service rm >/dev/null 2>&1 || true
		docker secret ls --filter "name=$RUN-" --format '{{.Name}}' 2>/dev/null | xargs -r docker secret rm >/dev/null 2>&1 || true
	fi
	for n in 1 2 3; do $CLUSTER start-node "$n" >/dev/null 2>&1 || true; done
	if [[ $was_up == yes ]]; then $CLUSTER up 3 >/dev/null 2>&1 || log "warning: could not bring the 3-node cluster back"; else $CLUSTER down >/dev/null 2>&1 || true; fi
	rm -rf "$WORK"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

IMAGE=$("$ROOT/scripts/dev-env.sh" up | sed -n 's/^STAND_IN_IMAGE=//p' | tail -n 1)
[[ -n $IMAGE ]] || die "scripts/dev-env.sh up printed no STAND_IN_IMAGE"
export FRACTALIC_STAND_IN_IMAGE=$IMAGE
# BENCH_BIN: a binary built already (e.g. target/debug/...) instead of a release build.
if [[ -n ${BENCH_BIN:-} ]]; then
	BIN=$BENCH_BIN
else
	(cd "$ROOT" && cargo build --release --quiet) >&2 || die "cargo build --release failed"
	BIN="$ROOT/target/release/fractalic-publisher"
fi

# answering N SVC: how many of SVC's running tasks answer /health at their node's address.
answering() {
	local ok=0 node port
	while IFS='|' read -r node port; do
		[[ -n $port ]] || continue
		curl -fsS -o /dev/null --max-time 1 "http://10.231.0.$((10 + ${node#fpc-n})):$port/health" 2>/dev/null && ok=$((ok + 1))
	done < <(docker service ps --filter desired-state=running --format '{{.Node}}|{{.CurrentState}}|{{.Ports}}' "$1" |
		sed -n 's/^\([^|]*\)|Running[^|]*|\*:\([0-9]*\)->.*/\1|\2/p')
	echo "$ok"
}

fresh() { # fresh DIR TAG: a copy of the sample folder with content of its own
	rm -rf "$1"
	cp -r "$DEMO" "$1"
	echo "<!-- bench $RUN $2 -->" >>"$1/hello.md"
}

ROWS=""
for N in 1 2 3; do
	log "cluster of $N node(s)"
	$CLUSTER up "$N" >/dev/null
	export DOCKER_HOST=unix://$ROOT/target/dev-env/cluster/n1.sock
	[[ -S ${DOCKER_HOST#unix://} ]] || DOCKER_HOST=$($CLUSTER host 1)
	: >"$WORK/deploy.$N"
	: >"$WORK/floor.$N"
	: >"$WORK/update.$N"
	for i in $(seq 0 "$RUNS"); do
		name="$RUN-c$N-$i"
		fresh "$WORK/p" "p$N-$i"
		t0=$(now)
		"$BIN" deploy docker-swarm --script-name hello --script-folder "$WORK/p" --name "$name" --image "$IMAGE" \
			--pull missing --publish-mode host --replicas "$N" --json --quiet >"$WORK/out" 2>"$WORK/err" ||
			die "deploy on $N nodes failed: $(cat "$WORK/err" "$WORK/out")"
		t1=$(now)
		((i > 0)) && echo $((t1 - t0)) >>"$WORK/deploy.$N"
		if ((i > 0)); then
			echo "<!-- update -->" >>"$WORK/p/hello.md"
			t0=$(now)
			"$BIN" deploy docker-swarm --script-name hello --script-folder "$WORK/p" --name "$name" --image "$IMAGE" \
				--pull missing --publish-mode host --replicas "$N" --json --quiet >"$WORK/out" 2>"$WORK/err" ||
				die "update on $N nodes failed: $(cat "$WORK/err")"
			t1=$(now)
			echo $((t1 - t0)) >>"$WORK/update.$N"
		fi
		if ((N == 3 && i == RUNS)); then KEEP=$name; else "$BIN" rm --force "$name" >/dev/null 2>&1; fi

		# The floor: the same commands, bare.
		fresh "$WORK/f" "f$N-$i"
		rm -f "$WORK/f/settings.toml"
		$PY tar "$WORK/f" hello "$WORK/f.tar" 1000 1000
		svc="$RUN-f$N-$i"
		tag="$REPO/hello:$RUN-floor-$N-$i"
		t0=$(now)
		docker create --name "$svc-build" "$IMAGE" >/dev/null
		docker cp - "$svc-build:/" <"$WORK/f.tar"
		docker commit "$svc-build" "$tag" >/dev/null
		docker rm -f "$svc-build" >/dev/null
		docker push -q "$tag" >/dev/null
		docker secret create "$svc.settings" - <"$DEMO/settings.toml" >/dev/null
		docker service create --detach --name "$svc" --replicas "$N" --publish mode=host,target=8001 \
			--health-cmd "curl -fsS http://localhost:8001/health >/dev/null && curl -fsS http://localhost:5859/status >/dev/null" \
			--health-interval 1s --health-timeout 5s --health-retries 3 --health-start-period 60s \
			--update-order start-first --update-failure-action rollback --rollback-order start-first \
			--secret "source=$svc.settings,target=/fractalic/settings.toml,uid=1000,gid=1000,mode=0400" \
			--secret "source=$svc.settings,target=/settings.toml,uid=1000,gid=1000,mode=0400" \
			"$tag" >/dev/null
		until (($(answering "$svc") >= N)); do
			(($(now) - t0 < 120000000000)) || die "floor: $svc never had $N healthy tasks"
			sleep 0.05
		done
		t1=$(now)
		((i > 0)) && echo $((t1 - t0)) >>"$WORK/floor.$N"
		docker service rm "$svc" >/dev/null
		docker secret rm "$svc.settings" >/dev/null 2>&1 || true
		docker image rm "$tag" >/dev/null 2>&1 || true
	done
	d=$(med_ms "$WORK/deploy.$N")
	f=$(med_ms "$WORK/floor.$N")
	ratio=$(awk -v d="$d" -v f="$f" 'BEGIN{printf "%.2f", d/f}')
	ROWS+="| $N | $(ms "$WORK/deploy.$N") | $(ms "$WORK/floor.$N") | **${ratio}x** $(awk -v r="$ratio" 'BEGIN{print (r <= 1.3) ? "met" : "**missed**"}') | $(ms "$WORK/update.$N") |
"
done

# A node's death on 3 nodes: the node that runs a task of KEEP and is not the manager.
victim=$(docker service ps --filter desired-state=running --format '{{.Node}}' "$KEEP" | grep -v '^fpc-n1$' | head -n 1)
k=${victim#fpc-n}
log "killing node $k ($victim)"
t0=$(now)
$CLUSTER stop-node "$k" >/dev/null 2>&1
until "$BIN" status "$KEEP" --json 2>/dev/null | grep -q '"state": "degraded'; do
	(($(now) - t0 < 60000000000)) || die "status never said degraded"
	sleep 0.1
done
t1=$(now)
until "$BIN" status "$KEEP" --json 2>/dev/null | grep -q '"healthy": true'; do
	(($(now) - t0 < 120000000000)) || die "status never healthy again"
	sleep 0.2
done
t2=$(now)
until docker node ls --format '{{.Hostname}} {{.Status}}' | grep -q "^$victim Down"; do sleep 0.2; done
t3=$(now)
$CLUSTER start-node "$k" >/dev/null 2>&1
until docker node ls --format '{{.Hostname}} {{.Status}}' | grep -q "^$victim Ready"; do
	(($(now) - t0 < 180000000000)) || die "$victim never rejoined"
	sleep 0.2
done
t4=$(now)
"$BIN" rm --force "$KEEP" >/dev/null 2>&1 || true

{
	cat <<EOF

### docker-swarm on a multi-node swarm ($RUNS runs each; engines in network namespaces on one machine, 2 shared cores; stand-in image, registry 127.0.0.1:5000 via forwarders)

| nodes (= replicas) | first deploy (commit + push, every node pulls) | the same docker commands bare | ratio (goal <= 1.3x) | rolling update, new content |
|---|---|---|---|---|
$ROWS
| node death (3 nodes, engine and containers killed) | time |
|---|---|
| to \`status\` saying degraded (its task stops answering) | $(((t1 - t0) / 1000000)) ms |
| to \`status\` healthy again (Swarm marks the node down, reschedules, the new task passes its health check) | $(((t2 - t0) / 1000000)) ms |
| to Swarm listing the node Down | $(((t3 - t0) / 1000000)) ms |
| restarted engine to the node Ready again | $(((t4 - t3) / 1000000)) ms |
EOF
} | tee "$ROOT/target/bench/cluster.md"
